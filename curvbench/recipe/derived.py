"""The names of the recipes the tool derives from a user's recipe, spelled and read back in this one place.

`verdict` runs its winners as `<recipe>-budget<K>`; `scale-batch` runs `<recipe>@b<B>` at batch size B and its
winners as `<recipe>@b<B>-budget<K>`. The report reads these names back to group runs by batch size and to price a
derived recipe's steps with its base recipe's step-cost table. A search's Optuna study is `<recipe>-<entry>-<sampler>`
(`study`): `tune` names it, the report finds a search's edges by it."""

from __future__ import annotations

import re
from typing import NamedTuple

AT_BATCH = "@b"
BUDGET_SAMPLER = "halton"  # equal-budget searches (`tune --budget`, verdict, scale-batch) draw their trials with it
BUDGET = "-budget"
_PARTS = re.compile(rf"(?P<base>.+?)(?:{re.escape(AT_BATCH)}(?P<batch>\d+))?(?:{re.escape(BUDGET)}(?P<budget>\d+))?")


class Derived(NamedTuple):
    base: str
    batch: int | None  # scale-batch's batch size, None for a recipe at its own batch size
    budget: int | None  # the tuning budget whose winners it runs, None for the recipe's own settings


def at_batch(name: str, batch: int) -> str:
    """The recipe `name` at batch size `batch`."""
    return f"{name}{AT_BATCH}{batch}"


def tuned(name: str, budget: int) -> str:
    """The recipe `name` with the winners of a `budget`-trial search."""
    return f"{name}{BUDGET}{budget}"


def study(recipe: str, entry: str, sampler: str) -> str:
    """The Optuna study of a search of recipe `recipe`'s entry `entry` with `sampler`, unless the user names it."""
    return f"{recipe}-{entry}-{sampler}"


def parse(name: str) -> Derived:
    """`name` split into its base recipe, batch size and budget (a plain recipe's are None; "" is a plain name)."""
    m = _PARTS.fullmatch(name)
    if m is None:
        return Derived(name, None, None)
    batch, budget = m.group("batch"), m.group("budget")
    return Derived(m.group("base"), int(batch) if batch else None, int(budget) if budget else None)


def derived_from(name: str | None, base: str) -> bool:
    """`name` is `base` itself or a recipe derived from it."""
    return name is not None and parse(name).base == base
