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
    from curvbench.errors import CurvbenchError

    reg = registry()
    if name not in reg:
        raise CurvbenchError(f"unknown method {name!r}; known methods: {', '.join(reg)}")
    return reg[name]
