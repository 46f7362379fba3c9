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

import inspect
from functools import lru_cache
from typing import Any

from curvbench import record
from curvbench.errors import CurvbenchError
from curvbench.imports import import_object, package_version
from curvbench.methods.base import COUPLED, DECOUPLED, BuildContext, HParam, MethodSpec
from curvbench.schema import Choice, Invalid, Number

NONE = "none"
REQUIRED = object()  # an HParam default: the recipe must set it


# An HParam default the class computes itself (a sentinel object, a callable): never passed to the class, and
# written in recipes and run params as this text rather than as an object's address.
CLASS_DEFAULT = "class default"
PLAIN = (int, float, str, bool, type(None))


def _plain(value: Any) -> bool:
    """A default that a recipe could write and a run could log as it is."""
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return isinstance(value, PLAIN)


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


@lru_cache(maxsize=None)
def spec_for(path: str) -> MethodSpec:
    """The MethodSpec of an importable optimizer class, read from its constructor's signature."""
    import torch

    cls = import_object(path, f"method {path!r}")
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
        raise CurvbenchError(f"method {path!r}: {cls!r} is not a torch.optim.Optimizer subclass")
    sig = inspect.signature(cls.__init__)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    if not params:
        raise CurvbenchError(f"method {path!r}: its constructor takes no parameters to optimize")
    rest = params[1:]  # the first takes the model's parameters
    hparams: list[HParam] = []
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in rest)
    tuples: set[str] = set()  # arguments whose default is a tuple: passed as tuples
    for p in rest:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = REQUIRED if p.default is p.empty else p.default if _plain(p.default) else CLASS_DEFAULT
        if isinstance(default, tuple):  # as YAML writes it, so that betas: [0.9, 0.99] reads as the default
            default, tuples = list(default), tuples | {p.name}
        hparams.append(HParam(p.name, default, AnyValue(), "constructor argument" + (" (required)" if default is REQUIRED else "")))
    names = {h.name for h in hparams}
    own_decay = "weight_decay" in names
    if not own_decay:
        hparams.append(HParam("weight_decay", 0.0, Number(ge=0), "L2 lambda (the class takes none of its own)"))
    default_reg = DECOUPLED if own_decay else COUPLED
    hparams.append(HParam("regularisation", default_reg, Choice((COUPLED, DECOUPLED, NONE)),
                          "how lambda is applied: coupled (the engine, in the gradient), decoupled (the class's own "
                          "weight_decay) or none"))
    version = package_version(cls.__module__)

    def validate(values: dict) -> None:
        missing = [k for k, v in values.items() if v is REQUIRED]
        if missing:
            raise Invalid(f"missing; {path} requires it", missing[0])
        if values["regularisation"] == DECOUPLED and not own_decay:
            raise Invalid(f"decoupled needs a weight_decay argument, and {path} takes none; use coupled or none",
                          "regularisation")

    def build(ctx: BuildContext, values: dict):
        kwargs = {k: v for k, v in values.items() if v != CLASS_DEFAULT and (
            k in names or (takes_kwargs and k not in ("weight_decay", "regularisation")))}
        kwargs.update({k: tuple(v) for k, v in kwargs.items() if k in tuples and isinstance(v, list)})
        if own_decay:
            kwargs["weight_decay"] = values["weight_decay"] if values["regularisation"] == DECOUPLED else 0.0
        try:
            opt = cls(ctx.model.parameters(), **kwargs)
        except (TypeError, ValueError) as e:
            raise CurvbenchError(f"method {path}: the constructor refused the recipe's arguments ({e})") from None
        if "closure" not in inspect.signature(opt.step).parameters:
            _compute_gradients_first(opt)
        opt.tags = {record.METHOD_CLASS: f"{cls.__module__}.{cls.__qualname__}", record.METHOD_VERSION: version}
        return opt

    return MethodSpec(
        name=path,
        description=_summary(cls),
        regularisation=default_reg,
        hparams=tuple(hparams),
        build=build,
        validate=validate,
        source=f"{cls.__module__}.{cls.__qualname__}",
        version=version,
        open_keywords=takes_kwargs,
    )


def _summary(cls) -> str:
    """The first sentence of the class's docstring, short enough for one line of `curvbench methods`."""
    doc = inspect.cleandoc(cls.__doc__ or "")  # its own, not a base class's
    first = doc.strip().split("\n\n")[0].replace("\n", " ").split(". ")[0].strip().rstrip(".")
    return (first[:77] + "...") if len(first) > 80 else (first or "an imported optimizer")


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
