"""A module that ends the process as it is imported (a script's sys.exit at module level)."""
import sys

sys.exit(4)
