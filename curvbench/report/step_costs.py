"""Quiet seconds to target: steps to target times a time per step measured alone.

Runs that shared a machine count their steps honestly but not their seconds (two jobs on two cores made identical
SGD steps vary tenfold). `benchmarks/step_cost.py --json FILE` measures each entry's time per step on a quiet
machine, interleaved (amortised factor, inverse and root updates included); `curvbench report --step-costs FILE`
turns each seed's steps to target into seconds with it. A seed that missed the target stays not reached, and the
test against the baseline is run again on these seconds. A table applies to the runs of its task, batch size and
entries only, and, when it names the recipe it timed (step_cost.py --recipe), to that recipe's runs and those of the
recipes derived from it (`recipe.derived`): the same
entry name in another recipe may hold other settings (K-FAC's intervals) and another cost. It prices only runs
computed as it was timed ("execution": the precision and memory format a task tags its runs with, CIFAR-10's bf16
autocast halving a step): a float32 table never prices bf16 runs. It says what it was measured on (CPU, threads,
device, execution), and the report repeats it.

The file, as step_cost.py writes it:
    {"task": "fashion-mnist", "batch_size": 100, "recipe": "fashion-mnist-verdict", "device": "cpu", "threads": 1,
     "cpu": "AMD EPYC ...", "data": "real", "execution": {}, "rounds": 5, "block": 100,
     "ms_per_step": {"sgd": 23.4, ...}}
("recipe" is optional: a table without it prices every recipe's runs of its task and batch size. "execution" is
{} or absent for tasks that tag no precision; for cifar10, e.g. {"precision": "float32", "memory_format":
"channels_last"}.)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from curvbench.errors import CurvbenchError
from curvbench.recipe import derived
from curvbench.report import stats


@dataclass(frozen=True)
class StepCosts:
    source: str  # the file it was read from
    task: str  # the task's dataset name, as runs are tagged (mnist, fashion-mnist, conll2003, cifar10)
    batch_size: int
    ms_per_step: dict  # entry -> milliseconds per training step
    device: str = "cpu"
    threads: int | None = None
    cpu: str = ""
    recipe: str | None = None  # the recipe whose entries were timed; None: any recipe's entries of these names
    execution: dict = field(default_factory=dict)  # how the task computed (precision, memory format) when timed

    def computed(self) -> str:
        """How the timed steps computed, as text to append: ", float32, channels_last"; "" for tasks that tag none."""
        return "".join(f", {v}" for v in self.execution.values())

    def describe(self) -> str:
        """`fashion-mnist at batch 100: cpu, 1 thread(s), AMD EPYC (steps.json)`."""
        where = ", ".join(x for x in (self.device, f"{self.threads} thread(s)" if self.threads else "", self.cpu) if x)
        of = f" ({self.recipe}'s entries)" if self.recipe else ""
        return f"{self.task} at batch {self.batch_size}{of}: {where}{self.computed()} ({Path(self.source).name})"


def load(path: str) -> StepCosts:
    """Read and check a step-cost table; a problem is one line naming the file and the field."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise CurvbenchError(f"--step-costs {path}: no such file (write one with benchmarks/step_cost.py --json "
                             f"{path})") from None
    except OSError as e:
        raise CurvbenchError(f"--step-costs {path}: cannot read it ({e.strerror or e.__class__.__name__})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CurvbenchError(f"--step-costs {path}: not JSON ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise CurvbenchError(f"--step-costs {path}: expected a JSON object such as step_cost.py --json writes")

    def field(name, kind, check=lambda v: True, want=""):
        if name not in data:
            raise CurvbenchError(f"--step-costs {path}: field {name} is missing")
        v = data[name]
        if not isinstance(v, kind) or isinstance(v, bool) or not check(v):
            raise CurvbenchError(f"--step-costs {path}: field {name}: expected {want}, got {v!r}")
        return v

    task = field("task", str, bool, "a task name such as mnist")
    batch = field("batch_size", int, lambda v: v > 0, "a positive integer")
    costs = field("ms_per_step", dict, bool, "an object of entry: milliseconds per step")
    for entry, ms in costs.items():
        if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not math.isfinite(ms) or ms <= 0:
            raise CurvbenchError(f"--step-costs {path}: field ms_per_step.{entry}: expected a positive number of "
                                 f"milliseconds, got {ms!r}")
    threads = data.get("threads")
    recipe = field("recipe", str, bool, "a recipe name") if data.get("recipe") is not None else None
    execution = data.get("execution", {})  # absent: no tags; present, it must be an object (`[]` is not one)
    if not isinstance(execution, dict) or not all(isinstance(v, str) for v in execution.values()):
        raise CurvbenchError(f"--step-costs {path}: field execution: expected an object of tag: value such as "
                             f'{{"precision": "float32"}}, got {execution!r}')
    return StepCosts(str(path), task, batch, {str(k): float(v) for k, v in costs.items()},
                     str(data.get("device", "cpu")), threads if isinstance(threads, int) else None,
                     str(data.get("cpu", "")), recipe, dict(execution))


def load_all(paths) -> list[StepCosts]:
    """Several tables; two for the same task, batch size, recipe and execution would make a row's seconds
    ambiguous."""
    tables = [load(p) for p in paths or ()]
    seen: dict = {}
    for t in tables:
        key = (t.task, t.batch_size, t.recipe, tuple(sorted(t.execution.items())))
        if key in seen:
            of = (f" for {t.recipe}" if t.recipe else "") + t.computed()
            raise CurvbenchError(f"--step-costs {t.source}: {t.task} at batch {t.batch_size}{of} is already given by "
                                 f"{seen[key]}; give one table per task, batch size, recipe and execution")
        seen[key] = t.source
    return tables


def table_for(tables: list[StepCosts], task: str, batch_size, entry: str, recipe: str | None = None,
              execution: dict | None = None) -> StepCosts | None:
    """The table that prices this entry's steps on this task at this batch size (and recipe, when the table names
    one), computed as the runs were (`execution`: their precision and memory format tags), if any; a table for the
    row's own recipe before one for any recipe."""
    fits = [t for t in tables if t.task == task and str(t.batch_size) == str(batch_size) and entry in t.ms_per_step
            and (t.recipe is None or derived.derived_from(recipe, t.recipe)) and t.execution == (execution or {})]
    return min(fits, key=lambda t: t.recipe is None, default=None)


def quiet_seconds(steps: stats.Censored, ms_per_step: float) -> stats.Censored:
    """Each seed's steps to target as seconds at `ms_per_step`; a seed that missed stays not reached."""
    return stats.Censored(tuple(s * ms_per_step / 1e3 if math.isfinite(s) else math.inf for s in steps.values))
