"""Steps to target across batch sizes: the learning-rate range searched at each batch size, and a method's
critical batch size.

Shallue et al. (JMLR 2019) measure steps to a target against the batch size B, the learning rate re-tuned at each
B: steps fall as 1/B (perfect scaling) up to a point, then flatten. The critical batch size here follows the
20% rule of "How does critical batch size scale in pre-training?" (2024): the largest measured B whose steps to
target stay within 20% of ideal linear scaling from the smallest batch, S(B) <= 1.2 * S(B0) * B0 / B, at that B
and every measured batch below it. A batch whose seeds did not reach the target counts as infinitely many steps;
a batch not measured is skipped and named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

THRESHOLD = 0.2  # steps may exceed ideal linear scaling by this fraction and still count as scaling
RULES = ("linear", "sqrt")


def scaled_range(low: float, high: float, base_batch: int, batch: int, rule: str = "linear") -> tuple[float, float]:
    """The learning-rate range at `batch` from the range at `base_batch`: multiplied by B/B0 (linear, Goyal et al.
    2017) or sqrt(B/B0) (square root, Krizhevsky 2014 / Adam-type methods). The range keeps its width, so a best
    value at an edge says the rule was off there (see at_edge)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if not (0 < low < high) or base_batch < 1 or batch < 1:
        raise ValueError("expected 0 < low < high and positive batch sizes")
    factor = batch / base_batch if rule == "linear" else math.sqrt(batch / base_batch)
    return low * factor, high * factor


def at_edge(best: float, low: float, high: float, log: bool = True, margin: float = 0.05) -> str | None:
    """"low" or "high" when `best` lies within `margin` of the range's width from an edge (on a log scale for a log
    range), else None: a best value at an edge may not be the best there is."""
    t = ((math.log(best) - math.log(low)) / (math.log(high) - math.log(low)) if log
         else (best - low) / (high - low))
    return "low" if t <= margin else "high" if t >= 1 - margin else None


def edge_of(best: float, tried: list[float], searched) -> str | None:
    """Why a search's best value may not be the best there is, or None: it lies at an edge of the range searched
    (`searched`: {low, high, log}; at_edge), or it is the lowest or highest of three or more values tried."""
    tried = sorted(set(tried))
    if len(tried) < 3:
        return None
    if isinstance(searched, dict) and {"low", "high"} <= searched.keys() and best > 0 < float(searched["low"]):
        edge = at_edge(best, float(searched["low"]), float(searched["high"]), bool(searched.get("log")))
        if edge is not None:
            return f"at the {edge} edge of the range searched"
    if best in (tried[0], tried[-1]):
        return f"the {'lowest' if best == tried[0] else 'highest'} of {len(tried)} values tried"
    return None


@dataclass(frozen=True)
class Critical:
    batch: int | None  # the critical batch size; None when the smallest batch never reached the target
    steps: float | None  # steps to target at it
    beyond_range: bool  # every measured batch scaled: the knee lies beyond the largest batch measured
    missing: tuple[int, ...]  # batch sizes skipped: not measured
    ideal: dict  # batch -> steps under ideal linear scaling from the smallest batch

    def efficiency(self, batch: int, steps: float) -> float | None:
        """Ideal linear-scaling steps at `batch` over the steps measured there: 1 is perfect scaling from the
        smallest batch, below 1 / (1 + THRESHOLD) the batch is past the critical batch; None at the smallest batch
        or where the target was not reached."""
        if batch not in self.ideal or batch == min(self.ideal) or not math.isfinite(steps) or steps <= 0:
            return None
        return self.ideal[batch] / steps

    def text(self) -> str:
        if self.batch is None:
            return "the smallest batch did not reach the target"
        head = f">= {self.batch}" if self.beyond_range else f"{self.batch}"
        return head + (f" (not measured: {', '.join(map(str, self.missing))})" if self.missing else "")


def critical_batch(steps: dict[int, float | None], threshold: float = THRESHOLD) -> Critical:
    """`steps`: batch size -> median steps to target (math.inf: not reached; None: not measured)."""
    measured = sorted(b for b, s in steps.items() if s is not None)
    missing = tuple(sorted(b for b, s in steps.items() if s is None))
    if not measured or math.isinf(steps[measured[0]]):
        return Critical(None, None, False, missing, {})
    b0, s0 = measured[0], steps[measured[0]]
    ideal = {b: s0 * b0 / b for b in measured}
    best = b0
    for b in measured[1:]:
        if steps[b] <= (1 + threshold) * ideal[b]:
            best = b
        else:
            break
    return Critical(best, steps[best], best == measured[-1] and len(measured) > 1, missing, ideal)


class Point(NamedTuple):
    """One method at one batch size: steps and seconds to target over the seeds (each a Censored); `quiet` when the
    seconds are steps times a quiet step cost (report --step-costs), else the runs' own training seconds."""

    steps: object
    seconds: object
    quiet: bool = False
    missed_within: int | None = None  # the most steps a seed that missed trained: "not reached in N steps"


def scaling_rows(rows) -> dict:
    """From report rows: {(task, recipe, entry): {batch: Point}} for the to-target rows of scale-batch's recipes
    (`<recipe>@b<B>-budget<K>`), in quiet seconds where a step-cost table priced the row."""
    from curvbench.recipe import derived

    out: dict = {}
    for r in rows:
        name = derived.parse(r.recipe or "")
        if r.stt is None or name.batch is None or name.budget is None:
            continue
        quiet = r.qtt is not None
        out.setdefault((r.task, name.base, r.name), {})[name.batch] = Point(r.stt, r.qtt if quiet else r.ttt,
                                                                                  quiet, r.missed_within)
    return out
