"""What every method declares: its hyperparameters, their defaults and checks, and how it is built."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

from curvbench.schema import Invalid, Number

# How a method treats the weight-decay coefficient lambda (the recipe field `weight_decay`):
COUPLED = "coupled"  # L2 in the loss, thesis eq. (16): the engine adds 2*lambda*theta to the gradient
DECOUPLED = "decoupled"  # the method shrinks the weights itself, theta <- theta - lr*lambda*theta


class NonFinite(ArithmeticError):
    """A method's own computation went non-finite (a model's curvature, a step size): the engine ends the run as
    diverged, as for a non-finite loss."""


@dataclass(frozen=True)
class HParam:
    name: str
    default: Any
    check: Any
    help: str


@dataclass(frozen=True)
class BuildContext:
    """What a method may need besides its hyperparameters."""

    model: Any  # the torch.nn.Module being trained
    task: Any  # the loaded task (loss, Fisher sampling)
    steps_per_epoch: int
    total_steps: int
    seed: int


@dataclass(frozen=True)
class EpochMetric:
    """A value a method reports per epoch: its metric key, what the report's legend calls it, its line style."""

    key: str
    label: str
    style: str = "-"


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    regularisation: str
    hparams: tuple[HParam, ...]
    # returns a torch.optim.Optimizer whose step() takes a closure; given an instance of `config` (a dict of the
    # resolved hyperparameters for a method without one: a class by import path)
    build: Callable[[BuildContext, Any], Any]
    # coupled L2 whose gradient the method adds itself, where its update rule says (SAM: at theta, not theta+eps)
    adds_l2: bool = False
    # checks across hyperparameters (nesterov needs momentum): raises Invalid naming the field
    validate: Callable[[dict], None] | None = None
    source: str = "built-in"  # where the method comes from: built-in, or the import path of its class
    version: str | None = None  # the installed version of the package that provides it (imported methods)
    open_keywords: bool = False  # the constructor takes **kwargs: keys beyond hparams pass through unchecked
    needs: tuple[str, ...] = ()  # task members it calls beyond the core protocol (tasks/protocol.py)
    # how it needs the model built, passed to the task's build_model(needs=...): "per_step_layers", a recurrent
    # network unrolled over time so that each time step's layer inputs and outputs can be observed
    model_needs: tuple[str, ...] = ()
    config: type | None = None  # the method's frozen config dataclass (MethodConfig)
    # what the optimizer's epoch_metrics() reports at every epoch's end (its adaptive choices): logged with the
    # epoch, and drawn by the report, one figure per method, on a log scale
    epoch_metrics: tuple["EpochMetric", ...] = ()

    def configure(self, hparams: dict):
        """What build() is given: the config built from resolved hyperparameters (checked again as it is built)."""
        return self.config(**hparams) if self.config is not None else dict(hparams)

    def defaults(self) -> dict:
        return {h.name: h.default for h in self.hparams}

    def resolve(self, given: dict | None) -> dict:
        """Defaults overlaid with `given`, every value checked. Raises Invalid with the field name."""
        given = dict(given or {})
        known = {h.name: h for h in self.hparams}
        for key in given:
            if key not in known and not self.open_keywords:
                raise Invalid(
                    f"unknown hyperparameter {key!r} for {self.name}; accepted: {', '.join(known)}", str(key)
                )
        out = {}
        for h in self.hparams:
            if h.name in given:
                try:
                    out[h.name] = h.check.check(given[h.name])
                except Invalid as e:
                    raise Invalid(e.message, h.name) from None
            else:
                out[h.name] = h.default
        out.update({k: v for k, v in given.items() if k not in known})  # open keywords only (checked above)
        if self.validate is not None:
            self.validate(out)
        return out


def hp(default: Any, check: Any, help: str) -> Any:
    """A field of a method's config dataclass: its default, its check and its help, stated once."""
    return field(default=default, metadata={"check": check, "help": help})


def lr_field(default: float, help: str = "learning rate alpha (peak of the schedule)") -> Any:
    return hp(default, Number(gt=0), help)


def weight_decay_field(default: float = 0.0, help: str = "regularisation lambda") -> Any:
    return hp(default, Number(ge=0), help)


class MethodConfig:
    """Base of each method's frozen config dataclass: the one place its hyperparameters, defaults and checks
    are written. Building one checks every value (Invalid names the field); `hparams()` is what the method's
    spec, `curvbench methods` and the recipe checks read."""

    def __post_init__(self) -> None:
        for f in fields(self):
            try:
                object.__setattr__(self, f.name, f.metadata["check"].check(getattr(self, f.name)))
            except Invalid as e:
                raise Invalid(e.message, f.name) from None

    @classmethod
    def hparams(cls, first: tuple[str, ...] = ()) -> tuple[HParam, ...]:
        """The fields as HParams, those named in `first` first (lr and L2 lead every method's listing)."""
        order = sorted(fields(cls), key=lambda f: (f.name not in first, first.index(f.name) if f.name in first else 0))
        return tuple(HParam(f.name, f.default, f.metadata["check"], f.metadata["help"]) for f in order)

    @classmethod
    def checked(cls, **values):
        """The config of `values` for an optimizer built from Python code: a value that does not fit is a
        ValueError naming the argument (as torch.optim's), not a ZeroDivisionError steps later."""
        try:
            return cls(**values)
        except Invalid as e:
            raise ValueError(f"{cls.__name__}: {e.path}: {e.message}") from None
