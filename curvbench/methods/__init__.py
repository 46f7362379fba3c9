"""The registry of optimization methods a recipe can name."""

from __future__ import annotations

from curvbench.methods.base import MethodSpec


def _specs() -> list[MethodSpec]:
    from curvbench.methods import adamw, kfac, lion, muon, sam, sgd, shampoo

    return [sgd.SPEC, sam.SPEC, lion.SPEC, kfac.SPEC, shampoo.SPEC, adamw.SPEC, muon.SPEC]


_REGISTRY: dict[str, MethodSpec] | None = None


def registry() -> dict[str, MethodSpec]:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = {s.name: s for s in _specs()}
    return _REGISTRY


def get(name: str) -> MethodSpec:
    """A registered method, or any importable torch optimizer class named by its path (methods/external.py)."""
    from curvbench.errors import CurvbenchError

    reg = registry()
    if name in reg:
        return reg[name]
    from curvbench.methods import external

    if external.looks_like_import_path(name):
        return external.spec_for(name)
    raise CurvbenchError(f"unknown method {name!r}; known methods: {', '.join(reg)}, or a class's import path "
                         f"(torch.optim.RAdam, my_pkg.opt:MyOptimizer)")
