"""Recipes: YAML loading and its checks, overrides and run flags (`loading`), the search-space grammar (`space`).

Above the methods and tasks (a recipe names them), below training, search and the command line."""
