"""`curvbench scale-batch RECIPE --batch-sizes 32,64,...`: steps to target across batch sizes, each tuned.

For each batch size B, in increasing order: the recipe at batch B (named `<recipe>@b<B>`), an equal-budget
search of each method's learning rate (and of whatever else its `search` section ranges over) on the validation
split, the learning-rate range moved from the recipe's batch size to B by the linear or square-root rule
(curvbench.batch_scaling.scaled_range); then to-target with each method's winner over the recipe's seeds (recipe
`<recipe>@b<B>-budget<K>`), evaluated --evals-per-epoch times an epoch. `report` reads those runs back: steps to target against B per method, ideal linear
scaling and each method's critical batch size. Every step keeps its state in the study storage, so the same
command resumes; a batch size that does not fit in memory ends with one line and the sweep goes on. Several
workers (`--workers N`) run the same sweep against one storage: they share each batch size's trials and its
to-target queue, and each waits for the others' trials before it reads the search's winners, so that all of them
run the same tuned setting."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

from curvbench.errors import CurvbenchError
from curvbench.recipe import derived
from curvbench.recipe.loading import Overrides
from curvbench.report.batch_scaling import RULES, edge_of, scaled_range


@dataclass
class ScalePlan:
    batch_sizes: list[int]
    budget: int = 6
    tune_epochs: int = 2
    rule: str = "linear"
    storage: str | None = None
    evals_per_epoch: int = 10  # to-target evaluates this many times an epoch: steps to target to a tenth of an epoch
    skipped: dict = field(default_factory=dict)  # batch size -> why it was not run (out of memory)


def parse_batch_sizes(text: str) -> list[int]:
    """`32,64,128` -> [32, 64, 128]: positive integers, increasing, none repeated."""
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CurvbenchError(f"--batch-sizes {text}: expected comma-separated positive integers such as 32,64,128") from None
    if not sizes or any(b < 1 for b in sizes):
        raise CurvbenchError(f"--batch-sizes {text}: expected positive integers such as 32,64,128")
    if len(set(sizes)) != len(sizes):
        raise CurvbenchError(f"--batch-sizes {text}: a batch size is repeated")
    if sizes != sorted(sizes):
        raise CurvbenchError(f"--batch-sizes {text}: expected increasing batch sizes, e.g. "
                             f"{','.join(map(str, sorted(sizes)))}")
    return sizes


def check_plan(plan: ScalePlan) -> None:
    if plan.budget < 1:
        raise CurvbenchError(f"--budget: expected an integer >= 1, got {plan.budget}")
    if plan.tune_epochs < 1:
        raise CurvbenchError(f"--tune-epochs: expected an integer >= 1, got {plan.tune_epochs}")
    if not 1 <= plan.evals_per_epoch <= 1000:
        raise CurvbenchError(f"--evals-per-epoch: expected an integer from 1 to 1000, got {plan.evals_per_epoch}")
    if plan.rule not in RULES:
        raise CurvbenchError(f"--rule: expected one of {', '.join(RULES)}, got {plan.rule!r}")


def at_batch(data: dict, name: str, batch: int, base_batch: int, rule: str) -> dict:
    """The raw recipe at batch size `batch`: its name, batch size, and every `lr` range of its search moved by
    the rule (grids are moved value by value)."""
    d = copy.deepcopy(data)
    d["name"] = derived.at_batch(name, batch)
    d.setdefault("training", {})
    d["training"] = dict(d["training"] or {}, batch_size=batch)
    for entry, space in (d.get("search") or {}).items():
        lr = (space or {}).get("lr")
        if isinstance(lr, dict):
            lo, hi = scaled_range(float(lr["low"]), float(lr["high"]), base_batch, batch, rule)
            space["lr"] = {**lr, "low": lo, "high": hi}
        elif isinstance(lr, list):
            factor = scaled_range(1.0, 2.0, base_batch, batch, rule)[0]
            space["lr"] = [float(v) * factor for v in lr]
    return d


WAIT_SECONDS = 5.0  # how often a worker looks whether the others' trials of a search have finished


def settled_search(recipe, tracker, reporter, budget: int, storage: str, poll: float = WAIT_SECONDS) -> list:
    """A batch size's equal-budget search once every one of its trials has finished: trials other workers hold
    are waited for, and trials a dead worker left are run here (tune takes them over)."""
    from curvbench.search.tune import study_results, tune

    def search():
        return tune(recipe, tracker, reporter, sampler=derived.BUDGET_SAMPLER, trials=budget, storage=storage, on="val")

    results = search()
    while any(r.held for r in results):
        time.sleep(poll)
        results = study_results(recipe, derived.BUDGET_SAMPLER, storage, None, "val", None)
        if not any(r.held for r in results) and any(len(r.trials) < budget for r in results):
            results = search()  # a worker died holding a trial: what it left is run here
    return results


def lr_edges(results, spaces: dict) -> dict[str, str]:
    """entry -> why its search's best learning rate may not be the best there is (batch_scaling.edge_of)."""
    out = {}
    for res in results:
        if not res.best_params or "lr" not in res.best_params:
            continue
        tried = [float(t.params["lr"]) for t in res.trials if "lr" in t.params]
        edge = edge_of(float(res.best_params["lr"]), tried, (spaces.get(res.entry) or {}).get("lr"))
        if edge is not None:
            out[res.entry] = f"best lr {res.best_params['lr']:.4g} is {edge}"
    return out


def eval_interval(train_size: int, batch: int, evals_per_epoch: int) -> int:
    """Steps between to-target's evaluations at batch size `batch`: an epoch's steps / evals_per_epoch, at least 1.
    Evaluated only at epoch ends, steps to target would move in whole epochs, and every batch size that needs the
    same number of epochs would look perfectly scaled."""
    steps = -(-train_size // batch)
    return max(1, steps // evals_per_epoch)


def checked(ref: str, base: Overrides, plan: ScalePlan):
    """The recipe, refused in one line unless the sweep can run: a target, an lr search for every entry, batch
    sizes no larger than the training set (the data is loaded to count it). Before any worker starts."""
    from curvbench.recipe import loading as recipes
    from curvbench.training.runner import load_task
    from curvbench.training.timing import resolve_device

    check_plan(plan)
    base_recipe = recipes.load(ref, base)
    if base_recipe.training.target is None:
        raise CurvbenchError(f"{base_recipe.source}: training.target is not set; scale-batch measures steps to it")
    missing = [m.name for m in base_recipe.methods if "lr" not in (base_recipe.search.get(m.name) or {})]
    if missing:
        raise CurvbenchError(f"{base_recipe.source}: no learning-rate search for {', '.join(missing)}; scale-batch "
                             f"needs search.{missing[0]}.lr (a range, moved to each batch size)")
    task = load_task(base_recipe, resolve_device(base_recipe.training.device))
    train_size = len(task.splits["train"])
    too_big = [b for b in plan.batch_sizes if b > train_size]
    if too_big:
        raise CurvbenchError(f"--batch-sizes: {too_big[0]} is larger than the training set ({train_size} examples)")
    return base_recipe, train_size


def run(ref: str, base: Overrides, plan: ScalePlan, tracker, reporter, known=None) -> dict[int, dict]:
    """Every batch size of the plan; returns {batch: {"tune": results, "target": to-target result}} for the batch
    sizes that ran (plan.skipped names the others). `known`: what `checked` returned for these arguments, when the
    caller checked them already (the data is then not loaded again to count it)."""
    import torch

    from curvbench.recipe import loading as recipes
    from curvbench.recipe.loading import find_recipe, load_yaml
    from curvbench.search import studies
    from curvbench.search.to_target import run_to_target
    from curvbench.search.verdict import tuned_recipe, tuning_overrides

    base_recipe, train_size = known or checked(ref, base, plan)
    storage = plan.storage or studies.DEFAULT_STORAGE
    raw = base.apply(load_yaml(find_recipe(ref)))
    out: dict[int, dict] = {}
    for batch in plan.batch_sizes:
        data = at_batch(raw, base_recipe.name, batch, base_recipe.training.batch_size, plan.rule)
        source = f"{base_recipe.source} at batch {batch}"
        chosen = Overrides({}, base.methods)  # the --methods selection; the other flags are in `data` already
        recipe_b = recipes.parse(data, source, chosen)
        tune_b = recipes.parse(data, source, tuning_overrides(recipe_b, chosen, plan.tune_epochs))
        try:
            reporter.expect_runs(plan.budget * len(tune_b.methods))  # run k of N counts the search's trials
            results = settled_search(tune_b, tracker, reporter, plan.budget, storage)
            tuned = tuned_recipe(recipe_b, results, plan.budget)
            every = eval_interval(train_size, batch, plan.evals_per_epoch)
            out[batch] = {"tune": results, "target": run_to_target(tuned, tracker, reporter, eval_every=every,
                                                                   storage=storage),
                          "edges": lr_edges(results, tune_b.search)}
        except (torch.OutOfMemoryError, MemoryError) as e:  # this point ends; the larger ones may still be tried
            plan.skipped[batch] = f"out of memory ({' '.join(str(e).split())[:120] or e.__class__.__name__})"
        except RuntimeError as e:
            if "can't allocate memory" not in str(e):  # the CPU allocator's words for out of memory
                raise
            plan.skipped[batch] = f"out of memory ({' '.join(str(e).split())[:120]})"
    return out


def summary_lines(done: dict[int, dict], skipped: dict[int, str]) -> list[str]:
    """scale-batch's closing lines: per batch size and method the median steps to target with its interval and the
    reached count, a best lr at an edge of what was searched, and the batch sizes not run and why."""
    lines = []
    for batch, parts in done.items():
        for s in parts["target"][0]:
            st = s.censored("steps")
            edge = parts["edges"].get(s.entry)
            lines.append(f"batch {batch}: {s.entry} steps to target {st.text('{:.0f}')} ({st.reached}/{st.n})"
                         + (f"; its {edge}: the best may lie beyond" if edge else ""))
    return lines + [f"batch {batch}: not run: {why}" for batch, why in skipped.items()]
