"""The recipes that ship with curvbench: installed as the package data of `curvbench.recipes`."""
