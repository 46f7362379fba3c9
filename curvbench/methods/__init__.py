"""The registry of optimization methods a recipe can name: the built-ins, those that installed packages register
through the `curvbench.methods` entry point group (plugins.py), and any optimizer class named by its import path
(methods/external.py)."""

from __future__ import annotations

from curvbench import plugins
from curvbench.methods.base import MethodSpec


def _specs() -> list[MethodSpec]:
    from curvbench.methods import adamw, kfac, kfac_adaptive, lion, muon, sam, sgd, shampoo

    return [sgd.SPEC, sam.SPEC, lion.SPEC, kfac.SPEC, kfac_adaptive.SPEC, shampoo.SPEC, adamw.SPEC, muon.SPEC]


def _builtins() -> dict[str, MethodSpec]:
    return {s.name: s for s in _specs()}


_REGISTRY = plugins.Registry(plugins.METHODS, MethodSpec, _builtins)
registry = _REGISTRY.all  # every method known by name: built-ins first, then entry points
broken_plugins = _REGISTRY.broken
why_missing = _REGISTRY.why_missing
reset = _REGISTRY.reset


def get(name: str) -> MethodSpec:
    """A registered method, or any importable torch optimizer class named by its path (methods/external.py)."""
    from curvbench.errors import CurvbenchError

    reg = registry()
    if name in reg:
        return reg[name]
    from curvbench.imports import looks_like_import_path

    if looks_like_import_path(name):
        from curvbench.methods import external

        return external.spec_for(name)
    why = why_missing(name)
    if why:
        raise CurvbenchError(why)
    raise CurvbenchError(f"unknown method {name!r}; known methods: {', '.join(reg)}, or a class's import path "
                         f"(torch.optim.RAdam, my_pkg.opt:MyOptimizer)")
