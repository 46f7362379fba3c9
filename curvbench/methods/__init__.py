"""The registry of optimization methods a recipe can name: the built-ins, those that installed packages register
through the `curvbench.methods` entry point group (plugins.py), and any optimizer class named by its import path
(methods/external.py)."""

from __future__ import annotations

from curvbench.methods.base import MethodSpec


def _specs() -> list[MethodSpec]:
    from curvbench.methods import adamw, kfac, kfac_adaptive, lion, muon, sam, sgd, shampoo

    return [sgd.SPEC, sam.SPEC, lion.SPEC, kfac.SPEC, kfac_adaptive.SPEC, shampoo.SPEC, adamw.SPEC, muon.SPEC]


_REGISTRY: dict[str, MethodSpec] | None = None
_BROKEN: list = []


def registry() -> dict[str, MethodSpec]:
    """Every method known by name: built-ins first, then entry points."""
    global _REGISTRY, _BROKEN
    if _REGISTRY is None:
        from curvbench import plugins

        builtin = {s.name: s for s in _specs()}
        loaded, _BROKEN = plugins.load(plugins.METHODS, MethodSpec, set(builtin))
        _REGISTRY = builtin | {p.name: p.spec for p in loaded}
    return _REGISTRY


def broken_plugins() -> list:
    """The entry points that failed to load (plugins.Broken), each with its one-line reason."""
    registry()
    return list(_BROKEN)


def reset() -> None:
    """Forget the registry: the next call looks for entry points again (after installing a plugin)."""
    global _REGISTRY
    _REGISTRY = None


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
    broken = [b for b in _BROKEN if b.name == name]
    if broken:
        raise CurvbenchError(broken[0].line())
    raise CurvbenchError(f"unknown method {name!r}; known methods: {', '.join(reg)}, or a class's import path "
                         f"(torch.optim.RAdam, my_pkg.opt:MyOptimizer)")
