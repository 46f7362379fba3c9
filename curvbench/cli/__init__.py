"""The command line: the Typer app (`app`), the methods and tasks listings (`listings`), worker processes
(`workers`). Commands parse their arguments and call one library function each."""
