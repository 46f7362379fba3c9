"""Any importable torch optimizer as a method: `method: torch.optim.RAdam` or `method: "my_pkg.opt:MyOptimizer"`.

The class's constructor is its specification: every keyword parameter with a default is a hyperparameter with that
default, one without a default must be set in the recipe, and an unknown keyword is refused before training
(unless the constructor takes **kwargs). How the recipe's L2 coefficient lambda (`weight_decay`) is treated is the
entry's `regularisation`:

    coupled     the engine adds 2*lambda*theta to the gradient (as for SGD); the class's own weight_decay is 0
    decoupled   lambda is passed to the class as its own `weight_decay`, applied by its own rule
    none        lambda is ignored

The default is `decoupled` when the constructor takes `weight_decay` (the class's own rule), else `coupled`.
An optimizer whose step() takes no closure gets the gradients computed before its step; one with train()/eval()
modes (Schedule-Free) is switched to eval() for every evaluation and back (the engine does it, off the clock)."""

from __future__ import annotations

import importlib
import inspect
from functools import lru_cache
from typing import Any

from curvbench.errors import CurvbenchError
from curvbench.methods.base import COUPLED, DECOUPLED, BuildContext, HParam, MethodSpec
from curvbench.schema import Choice, Invalid, Number

NONE = "none"
REQUIRED = object()  # an HParam default: the recipe must set it


def looks_like_import_path(name: str) -> bool:
    return ":" in name or "." in name


class AnyValue:
    """A constructor argument: any YAML value; '1e-3' read as a number (YAML 1.1 reads it as text)."""

    def expected(self) -> str:
        return "a value"

    def check(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return value


def import_class(path: str):
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attr:
        raise CurvbenchError(f"method {path!r}: expected MODULE.CLASS or MODULE:CLASS")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise CurvbenchError(f"method {path!r}: cannot import {module_name} ({e}); is its package installed?") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CurvbenchError(f"method {path!r}: {module_name} has no {attr}")
        obj = getattr(obj, part)
    return obj


def package_version(cls) -> str:
    from importlib import metadata

    top = cls.__module__.split(".")[0]
    try:
        return metadata.version(top)
    except metadata.PackageNotFoundError:
        dists = metadata.packages_distributions().get(top, [])
        for d in dists:
            try:
                return metadata.version(d)
            except metadata.PackageNotFoundError:
                continue
    return "unknown"


@lru_cache(maxsize=None)
def spec_for(path: str) -> MethodSpec:
    """The MethodSpec of an importable optimizer class, read from its constructor's signature."""
    import torch

    cls = import_class(path)
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
        raise CurvbenchError(f"method {path!r}: {cls!r} is not a torch.optim.Optimizer subclass")
    sig = inspect.signature(cls.__init__)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    if not params:
        raise CurvbenchError(f"method {path!r}: its constructor takes no parameters to optimize")
    rest = params[1:]  # the first takes the model's parameters
    hparams: list[HParam] = []
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in rest)
    for p in rest:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = REQUIRED if p.default is p.empty else p.default
        hparams.append(HParam(p.name, default, AnyValue(), "constructor argument" + (" (required)" if default is REQUIRED else "")))
    names = {h.name for h in hparams}
    own_decay = "weight_decay" in names
    if not own_decay:
        hparams.append(HParam("weight_decay", 0.0, Number(ge=0), "L2 lambda (the class takes none of its own)"))
    default_reg = DECOUPLED if own_decay else COUPLED
    hparams.append(HParam("regularisation", default_reg, Choice((COUPLED, DECOUPLED, NONE)),
                          "how lambda is applied: coupled (the engine, in the gradient), decoupled (the class's own "
                          "weight_decay) or none"))
    version = package_version(cls)

    def validate(hp: dict) -> None:
        missing = [k for k, v in hp.items() if v is REQUIRED]
        if missing:
            raise Invalid(f"missing; {path} requires it", missing[0])
        if hp["regularisation"] == DECOUPLED and not own_decay:
            raise Invalid(f"decoupled needs a weight_decay argument, and {path} takes none; use coupled or none",
                          "regularisation")

    def build(ctx: BuildContext, hp: dict):
        kwargs = {k: v for k, v in hp.items() if k in names or (takes_kwargs and k not in ("weight_decay",
                                                                                             "regularisation"))}
        if own_decay:
            kwargs["weight_decay"] = hp["weight_decay"] if hp["regularisation"] == DECOUPLED else 0.0
        try:
            opt = cls(ctx.model.parameters(), **kwargs)
        except (TypeError, ValueError) as e:
            raise CurvbenchError(f"method {path}: the constructor refused the recipe's arguments ({e})") from None
        if "closure" not in inspect.signature(opt.step).parameters:
            _compute_gradients_first(opt)
        opt.tags = {"method_class": f"{cls.__module__}.{cls.__qualname__}", "method_version": version}
        return opt

    return MethodSpec(
        name=path,
        description=f"{cls.__module__}.{cls.__qualname__}, imported",
        regularisation=default_reg,
        hparams=tuple(hparams),
        build=build,
        validate=validate,
        source=f"{cls.__module__}.{cls.__qualname__}",
        version=version,
        open_keywords=takes_kwargs,
    )


def _compute_gradients_first(opt) -> None:
    """For a step() that takes no closure: the engine's closure runs first, then the optimizer's own step."""
    import torch

    own_step = opt.step

    def step(closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        own_step()
        return loss

    opt.step = step
