"""Verdicts: each claim outcome from crafted to-target runs in a temporary store, bad claims files, baselines and
budgets refused in one line, and the verdict protocol end to end, resumed without rerunning anything."""

import math

import pytest
from conftest import new_store
from typer.testing import CliRunner

from curvbench.cli.app import app
from curvbench.report import claims as claims_mod
from curvbench.report.collect import collect
from curvbench.report.summary import settings_of, summarise
from curvbench.tracking.client import Tracker

INF = math.inf
# entry -> per-seed (seconds, epochs) to target; INF: not reached
RUNS = {
    "sgd": [(10.0, 3), (11.0, 3), (12.0, 4), (10.5, 3), (11.5, 4)],
    "sam": [(4.0, 1), (4.5, 1), (5.0, 1), (4.2, 1), (4.8, 1)],        # fastest in time and epochs
    "lion": [(10.2, 3), (11.8, 3), (10.1, 3), (12.2, 4), (10.9, 3)],  # about SGD, overlapping
    "kfac": [(20.0, 2), (22.0, 2), (21.0, 2), (INF, 0), (23.0, 2)],   # slow, one seed missed
    "shampoo": [(30.0, 5), (INF, 0), (31.0, 5), (33.0, 6), (INF, 0)],  # slowest, two missed
}


def crafted_store(tmp_path, runs=RUNS, recipe="thesis", task="mnist", target=0.985, tags=None):
    """The store at tmp_path/store with these to-target runs added (a second call adds to the same store); `tags`:
    more tags for every run."""
    db = tmp_path / "store" / "mlflow.db"
    if db.exists():
        _fill(f"sqlite:///{db}", runs, recipe, task, target, tags)
        return f"sqlite:///{db}"
    return new_store(db, ("crafted", repr(runs), recipe, task, target, repr(tags)),
                     lambda uri: _fill(uri, runs, recipe, task, target, tags))


def _fill(uri, runs, recipe, task, target, tags=None):
    tracker = Tracker(uri)
    for entry, seeds in runs.items():
        for seed, (secs, epochs) in enumerate(seeds):
            reached = math.isfinite(secs)
            run = tracker.start(task, f"{entry}-s{seed}", {"training.batch_size": 100, "task.metric": "accuracy",
                                                          f"methods.{entry}.lr": 0.1},
                                {"task": task, "method": entry, "entry": entry, "seed": seed, "recipe": recipe,
                                 "kind": "to-target-run", "target": target,
                                 "target_reached": str(reached).lower(), **(tags or {})})
            run.log_metrics({"test_accuracy": 0.99 if reached else 0.9, "train_loss": 0.1, "train_seconds": 40.0,
                             "steps": 100}, step=1)
            if reached:
                run.log_metrics({"time_to_target": secs, "epochs_to_target": epochs, "steps_to_target": 100 * epochs},
                                step=0)
            run.end("FINISHED")


def write_claims(tmp_path, text):
    p = tmp_path / "claims.yaml"
    p.write_text(text)
    return str(p)


CLAIMS = """
claims:
  - {id: sam-fastest, task: mnist, claim: fastest, methods: [sam], measure: seconds}
  - {id: sam-fastest-epochs, task: mnist, claim: fastest, methods: [sam], measure: epochs}
  - {id: sgd-fastest, task: mnist, claim: fastest, methods: [sgd], measure: seconds}
  - {id: kfac-shampoo-slowest, task: mnist, claim: slowest, methods: [kfac, shampoo], measure: seconds}
  - {id: kfac-before-shampoo, task: mnist, claim: faster, methods: [kfac, shampoo], measure: seconds}
  - {id: shampoo-before-kfac, task: mnist, claim: faster, methods: [shampoo, kfac], measure: seconds}
  - {id: lion-before-sgd, task: mnist, claim: faster, methods: [lion, sgd], measure: seconds}
  - {id: lion-about-sgd, task: mnist, claim: about_equal, methods: [lion, sgd], measure: seconds, within: 0.3}
  - {id: lion-about-sam, task: mnist, claim: about_equal, methods: [lion, sam], measure: seconds, within: 0.2}
  - {id: lion-about-sgd-tight, task: mnist, claim: about_equal, methods: [lion, sgd], measure: seconds, within: 0.01}
  - {id: sam-one-epoch, task: mnist, claim: at_most, methods: [sam], measure: epochs, value: 1}
  - {id: sgd-one-epoch, task: mnist, claim: at_most, methods: [sgd], measure: epochs, value: 1}
  - {id: sgd-three-epochs, task: mnist, claim: at_most, methods: [sgd], measure: epochs, value: 3}
  - {id: muon-fastest, task: mnist, claim: fastest, methods: [muon], measure: seconds}
  - {id: cifar, task: cifar10, claim: fastest, methods: [lion], measure: epochs}
"""


def test_each_claim_outcome_from_crafted_runs(tmp_path):
    uri = crafted_store(tmp_path)
    rows = summarise(collect(Tracker(uri).client))
    verdicts = {v.claim.id: v for v in claims_mod.evaluate(claims_mod.load(write_claims(tmp_path, CLAIMS)),
                                                           settings_of(rows))}
    expect = {
        "sam-fastest": "confirmed",           # 5 of 5 below every other method: p = 1/252 against each
        "sam-fastest-epochs": "confirmed",
        "sgd-fastest": "refuted",             # sam is faster than sgd at 5% / 4 pairs
        "kfac-shampoo-slowest": "confirmed",  # both slower than sgd, sam and lion; the missed seeds rank last
        "kfac-before-shampoo": "confirmed",   # U = 21 of 25 (the missed seeds tie at the end): p < 5%
        "shampoo-before-kfac": "refuted",
        "lion-before-sgd": "inconclusive",    # interleaved times
        "lion-about-sgd": "confirmed",        # the speed-up's interval inside [1/1.3, 1.3]
        "lion-about-sam": "refuted",          # wholly outside [1/1.2, 1.2]
        "lion-about-sgd-tight": "inconclusive",
        "sam-one-epoch": "confirmed",
        "sgd-one-epoch": "refuted",
        "sgd-three-epochs": "inconclusive",   # 3 seeds in 3 epochs, 2 in 4: the interval [3, 4] straddles 3
        "muon-fastest": "missing runs",
        "cifar": "not run",
    }
    assert {k: v.outcome for k, v in verdicts.items()} == expect
    assert verdicts["sam-fastest"].setting == "thesis (target 0.985)"
    assert "p = 0.004" in verdicts["sam-fastest"].evidence
    assert "no runs of muon" in verdicts["muon-fastest"].evidence


def test_a_faster_claim_with_one_seed_a_side_is_inconclusive_and_says_why_once(tmp_path):
    uri = crafted_store(tmp_path, {"sgd": RUNS["sgd"][:1], "kfac": RUNS["kfac"][:1]})
    rows = summarise(collect(Tracker(uri).client))
    text = "claims:\n  - {id: k, task: mnist, claim: faster, methods: [kfac, sgd], measure: seconds}\n"
    [verdict] = claims_mod.evaluate(claims_mod.load(write_claims(tmp_path, text)), settings_of(rows))
    assert verdict.outcome == "inconclusive"
    assert verdict.evidence.startswith("seconds: kfac ") and verdict.evidence.count("fewer than 2 seeds") == 1


@pytest.mark.slow
def test_a_claim_is_judged_on_each_setting_and_a_target_can_be_pinned(tmp_path):
    uri = crafted_store(tmp_path)
    # a second setting on the same task in which sgd and sam swap places
    swapped = {"sgd": RUNS["sam"], "sam": RUNS["sgd"]}
    Tracker(uri)  # same store
    crafted_store(tmp_path, swapped, recipe="tuned")
    rows = summarise(collect(Tracker(uri).client))
    claims = claims_mod.load(write_claims(tmp_path, """
claims:
  - {id: sam-before-sgd, task: mnist, claim: faster, methods: [sam, sgd], measure: seconds}
  - {id: pinned, task: mnist, claim: faster, methods: [sam, sgd], measure: seconds, target: 0.9}
"""))
    got = {(v.claim.id, v.setting): v.outcome for v in claims_mod.evaluate(claims, settings_of(rows))}
    assert got == {("sam-before-sgd", "thesis (target 0.985)"): "confirmed",
                   ("sam-before-sgd", "tuned (target 0.985)"): "refuted",
                   ("pinned", "-"): "not run"}


@pytest.mark.parametrize("text, fragment", [
    ("claims:\n  - {task: nosuch, claim: fastest, methods: [sgd]}", "claims[0].tasks: unknown task 'nosuch'"),
    ("claims:\n  - {task: mnist, claim: fastest, methods: [nosuch]}", "claims[0].methods: unknown method 'nosuch'"),
    ("claims:\n  - {task: mnist, claim: fastest, methods: [sgd], measure: joules}", "claims[0].measure: expected one of"),
    ("claims:\n  - {task: mnist, claim: quickest, methods: [sgd]}", "claims[0].claim: expected one of"),
    ("claims:\n  - {task: mnist, claim: faster, methods: [sgd]}", "a faster claim names 2 method(s)"),
    ("claims:\n  - {task: mnist, claim: about_equal, methods: [sgd, sam]}", "claims[0].within"),
    ("claims: []", "expected a mapping with a non-empty list `claims`"),
])
def test_a_bad_claims_file_is_one_line_exit_2(tmp_path, text, fragment):
    uri = crafted_store(tmp_path, {"sgd": RUNS["sgd"][:2]})
    result = CliRunner().invoke(app, ["report", "--tracking-uri", uri, "--out", str(tmp_path / "r"), "--no-log",
                                      "--claims", write_claims(tmp_path, text)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output
    assert not (tmp_path / "r").exists()  # nothing written


@pytest.mark.slow
def test_report_with_claims_prints_and_writes_the_verdicts(tmp_path):
    uri = crafted_store(tmp_path)
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", "--tracking-uri", uri, "--out", str(out), "--no-log",
                                      "--claims", write_claims(tmp_path, CLAIMS)])
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text()
    assert "## Claims" in md and "**confirmed**" in md and "**refuted**" in md and "**not run**" in md
    # the baseline column: sam against sgd in the same setting
    sam = next(line for line in md.splitlines() if line.startswith("| mnist | sam"))
    assert "faster than sgd (" in sam and "p = 0.004" in sam
    shampoo = next(line for line in md.splitlines() if line.startswith("| mnist | shampoo"))
    assert "| 3/5 |" in shampoo and "33.00 [30.00, not reached] (93.8%)" in shampoo  # 30, 31, 33, missed, missed
    assert "nan" not in md.lower()
    assert (out / "mnist_test_accuracy_seconds.png").stat().st_size > 5000


@pytest.mark.slow  # two to-target runs through the command line
def test_one_seed_to_target_with_sgd_in_the_recipe_runs_without_a_baseline_test(mnist_dir, write_recipe,
                                                                                  tracking_uri):
    """The thesis's recipes run one seed with sgd among the methods: the default baseline needs no second seed
    (the command once resolved it and then refused it as if the user had named it)."""
    recipe = write_recipe(f"""
task: {{dataset: mnist, data_dir: {mnist_dir}}}
training: {{epochs: 1, batch_size: 100, seeds: [0], target: 0.05}}
methods: {{sgd: {{lr: 0.1}}, lion: {{lr: 0.001}}}}
""")
    result = CliRunner().invoke(app, ["to-target", str(recipe), "--tracking-uri", tracking_uri, "-q"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines() if line.split()[:1] in (["sgd"], ["lion"])}
    assert "1/1" in rows["sgd"] and "baseline" in rows["sgd"], result.output
    assert "1/1" in rows["lion"] and "no test (fewer than 2 seeds)" in rows["lion"], result.output


def test_baseline_and_budget_refusals_are_one_line_exit_2(tmp_path, mnist_dir, write_recipe, tracking_uri):
    recipe = write_recipe(f"""
task: {{dataset: mnist, data_dir: {mnist_dir}}}
training: {{epochs: 1, batch_size: 100, seeds: [0, 1], target: 0.5}}
methods: {{sgd: {{lr: 0.1}}, lion: {{lr: 0.001}}}}
search: {{sgd: {{lr: {{low: 0.01, high: 0.3, log: true}}}}, lion: {{lr: {{low: 0.0001, high: 0.01, log: true}}}}}}
""")
    cases = [
        (["to-target", str(recipe), "--baseline", "adamw"], "--baseline adamw: not among the entries run (sgd, lion)"),
        (["to-target", str(recipe), "--baseline", "lion", "--seed", "0"], "needs at least 2 seeds"),
        (["tune", str(recipe), "--budget", "0"], "--budget: expected an integer >= 1, got 0"),
        (["tune", str(recipe), "--budget", "-3"], "--budget: expected an integer >= 1, got -3"),
        (["tune", str(recipe), "--budget", "4", "--sampler", "tpe"], "--budget draws its trials with the halton"),
        (["verdict", str(recipe), "--budget", "0"], "--budget: expected an integer >= 1, got 0"),
        (["verdict", str(recipe), "--baseline", "adamw", "--claims", ""], "--baseline adamw: not among the entries"),
    ]
    for args, fragment in cases:
        result = CliRunner().invoke(app, args + ["--tracking-uri", tracking_uri, "-q"])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], (args, result.output)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])  # nothing ran


@pytest.mark.slow
def test_verdict_runs_the_protocol_and_resumes_without_rerunning(tmp_path, mnist_dir, write_recipe, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(f"""
task: {{dataset: mnist, data_dir: {mnist_dir}}}
training: {{epochs: 2, batch_size: 50, seeds: [0, 1], target: 0.3, schedule: constant}}
methods: {{sgd: {{lr: 0.05}}, lion: {{lr: 0.001}}}}
search: {{sgd: {{lr: {{low: 0.01, high: 0.3, log: true}}}}, lion: {{lr: {{low: 0.0001, high: 0.01, log: true}}}}}}
""", "proto.yaml")
    claims = write_claims(tmp_path, "claims:\n  - {task: mnist, claim: faster, methods: [lion, sgd]}\n")
    args = ["verdict", str(recipe), "--budget", "2", "--tune-epochs", "1", "--claims", claims, "--out", "v", "-q"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")  # absolute: MLflow caches stores by URI
    exp = client.get_experiment_by_name("mnist").experiment_id
    runs = client.search_runs([exp])
    kinds = [r.data.tags.get("kind") for r in runs]
    # 2 methods x 2 seeds to target, twice (own settings, winners); 2 methods x 2 trials; 2 tune parents
    assert kinds.count("to-target-run") == 8 and kinds.count("trial") == 4 and kinds.count("tune") == 2
    recipes = {r.data.tags.get("recipe") for r in runs if r.data.tags.get("kind") == "to-target-run"}
    assert recipes == {"proto", "proto-budget2"}
    for parent in (r for r in runs if r.data.tags.get("kind") == "tune"):
        assert parent.data.metrics["trials_run"] == 2 and parent.data.metrics["search_train_seconds"] > 0
    assert (tmp_path / "v" / "proto-budget2.yaml").is_file()
    md = (tmp_path / "v" / "report.md").read_text()
    assert "## Claims" in md and "proto (target 0.3)" in md and "proto-budget2 (target 0.3)" in md
    assert "expected best after k trials" in md
    second = CliRunner().invoke(app, args)  # resumes: every step finds its work done
    assert second.exit_code == 0, second.output
    assert len(client.search_runs([exp])) == len(runs)
