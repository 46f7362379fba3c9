"""The verdict protocol for one task, as one resumable command (`curvbench verdict RECIPE`):

1. to-target with the recipe's own hyperparameters (the thesis's settings), every seed, on the recipe's split;
2. equal-budget tuning: every method gets `budget` trials from the scrambled Halton sampler over its search
   ranges, each trained for `tune_epochs` epochs and scored on a validation split (held out of train when the
   task has none of its own);
3. to-target with each method's winner, the same seeds and split as step 1, under the recipe name
   `<recipe>-budget<K>`, so that the report tells the two settings apart;
4. the report, with the claims file's verdicts.

Every step keeps its state in the study storage: run the same command again after an interruption and finished
runs and trials are not run again."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from curvbench.errors import CurvbenchError
from curvbench.recipe import derived
from curvbench.recipe.loading import Overrides, Recipe


@dataclass
class VerdictPlan:
    budget: int = 12
    tune_epochs: int = 3
    storage: str | None = None  # default: sqlite:///mlruns/optuna.db
    baseline: str | None = None
    out: Path = Path("verdict")
    claims: str | None = "thesis-claims"
    results: dict = field(default_factory=dict)  # filled in as the steps finish


def check_plan(plan: VerdictPlan) -> None:
    if plan.budget < 1:
        raise CurvbenchError(f"--budget: expected an integer >= 1, got {plan.budget}")
    if plan.tune_epochs < 1:
        raise CurvbenchError(f"--tune-epochs: expected an integer >= 1, got {plan.tune_epochs}")


def tuning_overrides(recipe: Recipe, base: Overrides, tune_epochs: int) -> Overrides:
    """The recipe as tune runs it: `tune_epochs` epochs, a validation split held out when the task has none."""
    from curvbench.search.tune import scoring_overrides

    values = {**base.values, "training.epochs": tune_epochs, **scoring_overrides(recipe, "val")}
    return Overrides(values, base.methods)


def tuned_recipe(recipe: Recipe, results, budget: int) -> Recipe:
    """The recipe with each method's winner, named `<recipe>-budget<K>`; a method whose search found no
    finished trial keeps its own hyperparameters (and says so in the description)."""
    from curvbench.recipe import loading as recipes
    from curvbench.search.tune import best_recipe

    data = best_recipe(recipe, results)
    data["name"] = derived.tuned(recipe.name, budget)
    missing = [r.entry for r in results if not r.best_params]
    if missing:
        data["description"] += f"; no finished trial for {', '.join(missing)}: kept the recipe's values"
    return recipes.parse(data, f"{recipe.source} (tuned, budget {budget})")


def run(ref: str, base: Overrides, plan: VerdictPlan, tracker, reporter) -> dict:
    """Runs the four steps; returns {"thesis", "tuned": to-target results, "tune": search results, "report": (rows,
    figures), "claims": verdicts}."""
    import yaml

    from curvbench.recipe import loading as recipes
    from curvbench.search import studies
    from curvbench.search.to_target import baseline_of, run_to_target, target_of
    from curvbench.search.tune import tune

    check_plan(plan)
    storage = plan.storage or studies.DEFAULT_STORAGE
    recipe = recipes.load(ref, base)
    baseline = baseline_of([m.name for m in recipe.methods], plan.baseline, len(recipe.training.seeds))
    claims = None
    if plan.claims:
        from curvbench.report import claims as claims_mod

        claims = claims_mod.load(plan.claims)  # a bad claims file fails before any training
    tune_recipe = recipes.load(ref, tuning_overrides(recipe, base, plan.tune_epochs))
    missing = [m.name for m in tune_recipe.methods if not tune_recipe.search.get(m.name)]
    if missing:
        raise CurvbenchError(f"{recipe.source}: no search range for {', '.join(missing)}; the verdict's tuning needs "
                             f"search.{missing[0]}")
    plan.out.mkdir(parents=True, exist_ok=True)

    out = {"target": target_of(recipe, None), "baseline": baseline}
    out["thesis"] = run_to_target(recipe, tracker, reporter, storage=storage, baseline=baseline)
    reporter.expect_runs(plan.budget * len(tune_recipe.methods))  # run k of N counts the search's trials now
    out["tune"] = tune(tune_recipe, tracker, reporter, sampler=derived.BUDGET_SAMPLER, trials=plan.budget,
                       storage=storage, on="val")
    tuned = tuned_recipe(recipe, out["tune"], plan.budget)
    (plan.out / f"{tuned.name}.yaml").write_text(
        f"# the winners of curvbench verdict's equal-budget search ({plan.budget} Halton trials per method, "
        f"{plan.tune_epochs} epochs each, scored on val)\n" + yaml.safe_dump(tuned.to_dict(), sort_keys=False))
    out["tuned"] = run_to_target(tuned, tracker, reporter, storage=storage, baseline=baseline)
    if tracker is not None:
        from curvbench.report.collect import collect
        from curvbench.report.pages import write_report

        runs = collect(tracker.client, task=recipe.task.dataset,
                                 experiment=recipe.experiment or recipe.task.dataset)
        out["report"] = write_report(runs, plan.out, claims=claims, baseline=baseline or "sgd")
        out["claims"] = out["report"].verdicts
    return out
