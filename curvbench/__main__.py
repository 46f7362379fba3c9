"""python -m curvbench: the same as the curvbench command."""

from curvbench.cli.app import main

main()
