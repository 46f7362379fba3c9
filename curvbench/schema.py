"""Small declarative checks for recipe values, each failing with 'expected ..., got ...'."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class Invalid(Exception):
    """A value that does not fit; `path` is filled in by whoever knows where the value sits."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.message, self.path = message, path


def _got(value: Any) -> str:
    from curvbench.errors import describe

    return describe(value)


@dataclass(frozen=True)
class Number:
    """A real number with optional bounds; ints are accepted and converted."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    integer: bool = False
    nullable: bool = False

    def expected(self) -> str:
        words = "an integer" if self.integer else "a number"
        bounds = []
        for op, b in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le)):
            if b is not None:
                bounds.append(f"{op} {b}" if self.integer and float(b).is_integer() else f"{op} {b:g}")
        text = words + (" " + " and ".join(bounds) if bounds else "")
        return text + (" or null" if self.nullable else "")

    def check(self, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        ok_type = isinstance(value, int) if self.integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            # "1e-3" is a string in YAML 1.1 (PyYAML): accept it when it reads as a float.
            if not self.integer and isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise Invalid(f"expected {self.expected()}, got {_got(value)}") from None
            else:
                raise Invalid(f"expected {self.expected()}, got {_got(value)}")
        if not self.integer:
            value = float(value)
            if not math.isfinite(value):
                raise Invalid(f"expected {self.expected()}, got {_got(value)}")
        if (
            (self.gt is not None and not value > self.gt)
            or (self.ge is not None and not value >= self.ge)
            or (self.lt is not None and not value < self.lt)
            or (self.le is not None and not value <= self.le)
        ):
            raise Invalid(f"expected {self.expected()}, got {_got(value)}")
        return value


@dataclass(frozen=True)
class Boolean:
    def expected(self) -> str:
        return "true or false"

    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise Invalid(f"expected true or false, got {_got(value)}")
        return value


class DeviceName:
    """auto, cpu, cuda or cuda:N (one GPU of several, as `--devices` gives each worker)."""

    def expected(self) -> str:
        return "one of auto, cpu, cuda or cuda:N"

    def check(self, value: Any) -> str:
        import re

        if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d{1,4})?", value):
            raise Invalid(f"expected {self.expected()}, got {_got(value)}")
        return value


class AutoBoolean:
    """true, false, or auto (the task decides per device)."""

    def expected(self) -> str:
        return "true, false or auto"

    def check(self, value: Any) -> bool | str:
        if not (isinstance(value, bool) or value == "auto"):
            raise Invalid(f"expected true, false or auto, got {_got(value)}")
        return value


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]
    nullable: bool = False

    def expected(self) -> str:
        return "one of " + ", ".join(self.options) + (" or null" if self.nullable else "")

    def check(self, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        if not isinstance(value, str) or value not in self.options:
            raise Invalid(f"expected {self.expected()}, got {_got(value)}")
        return value


@dataclass(frozen=True)
class Text:
    nullable: bool = False
    allow_empty: bool = False
    max_length: int | None = None

    def expected(self) -> str:
        most = f" of at most {self.max_length} characters" if self.max_length else ""
        return "a string" + most + (" or null" if self.nullable else "")

    def check(self, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        if not isinstance(value, str) or (not value.strip() and not self.allow_empty):
            raise Invalid(f"expected {self.expected()}, got {_got(value)}")
        if self.max_length is not None and len(value) > self.max_length:
            raise Invalid(f"expected {self.expected()}, got {len(value)} characters")
        return value


@dataclass(frozen=True)
class ListOf:
    item: Any
    min_items: int = 1
    scalar_ok: bool = True  # a lone value stands for a one-item list

    def expected(self) -> str:
        return f"a list of {self.item.expected().removeprefix('a ').removeprefix('an ')}"

    def check(self, value: Any) -> list:
        if not isinstance(value, list):
            if self.scalar_ok and not isinstance(value, dict):
                value = [value]
            else:
                raise Invalid(f"expected {self.expected()}, got {_got(value)}")
        if len(value) < self.min_items:
            raise Invalid(f"expected {self.expected()} with at least {self.min_items} item(s), got an empty list")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(self.item.check(v))
            except Invalid as e:
                raise Invalid(e.message, f"[{i}]" + (("." + e.path) if e.path else "")) from None
        return out


@dataclass
class Section:
    """A mapping with known keys: unknown keys are errors, missing keys take their defaults."""

    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key -> (check, default); default REQUIRED
    REQUIRED = object()

    def check(self, value: Any) -> dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise Invalid(f"expected a mapping, got {_got(value)}")
        unknown = [k for k in value if k not in self.fields]
        if unknown:
            raise Invalid(
                f"unknown key {_got(str(unknown[0]))}; expected one of: {', '.join(self.fields)}",
                str(unknown[0]),
            )
        out = {}
        for key, (check, default) in self.fields.items():
            if key not in value:
                if default is Section.REQUIRED:
                    raise Invalid(f"missing; expected {check.expected()}", key)
                out[key] = default
                continue
            try:
                out[key] = check.check(value[key])
            except Invalid as e:
                sub = e.path
                joined = key + (sub if sub.startswith("[") else ("." + sub if sub else ""))
                raise Invalid(e.message, joined) from None
        return out

    def expected(self) -> str:
        return "a mapping"
