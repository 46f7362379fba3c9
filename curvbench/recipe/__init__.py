"""Recipes: YAML loading and its checks, overrides and run flags (`loading`), the search-space grammar (`space`),
the names of the recipes the tool derives from one (`derived`).

Above the methods and tasks (a recipe names them), below training, search and the command line."""
