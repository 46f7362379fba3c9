"""A module whose code fails as it is imported."""
raise RuntimeError("a module that fails at import")
