"""Quiet seconds to target: steps to target priced by a step-cost table (`report --step-costs`), tested against the
baseline again, used by the claims; bad tables refused in one line; step_cost.py's --json read back."""

import copy
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from test_verdicts import CLAIMS, RUNS, crafted_store, write_claims
from typer.testing import CliRunner

from curvbench.cli.app import app
from curvbench.errors import CurvbenchError
from curvbench.report import claims as claims_mod
from curvbench.report.collect import collect
from curvbench.report.step_costs import load, load_all
from curvbench.report.summary import price_steps, settings_of, summarise
from curvbench.tracking.client import Tracker

ROOT = Path(__file__).resolve().parents[1]
# crafted runs: steps to target = 100 x epochs. Priced, Lion's busy-seconds "no clear difference" from SGD becomes
# "faster", K-FAC's "slower" becomes "no clear difference" (its missed seed keeps it from "faster")
MS = {"sgd": 20.0, "sam": 40.0, "lion": 10.0, "kfac": 10.0, "shampoo": 30.0}


def costs_file(tmp_path, ms=MS, task="mnist", batch=100, name="steps.json", **extra):
    p = tmp_path / name
    p.write_text(json.dumps({"task": task, "batch_size": batch, "device": "cpu", "threads": 1, "cpu": "test CPU",
                             "ms_per_step": ms, **extra}))
    return str(p)


def exact_p_less(x, y):
    """One-sided Mann-Whitney p (x smaller) by enumerating every split of the pooled sample: an oracle apart
    from SciPy. U counts pairs x > y, ties a half; small U favours x < y."""
    def u(a, b):
        return sum((ai > bi) + 0.5 * (ai == bi) for ai in a for bi in b)

    pooled, n = list(x) + list(y), len(x)
    observed = u(x, y)
    splits = list(itertools.combinations(range(len(pooled)), n))
    hits = 0
    for idx in splits:
        a = [pooled[i] for i in idx]
        b = [pooled[i] for i in range(len(pooled)) if i not in idx]
        hits += u(a, b) <= observed + 1e-9
    return hits / len(splits)


def test_each_seed_is_priced_and_the_test_is_run_again_on_quiet_seconds(tmp_path):
    rows = summarise(collect(Tracker(crafted_store(tmp_path)).client))
    price_steps(rows, [load(costs_file(tmp_path))])
    by = {r.name: r for r in rows}
    for entry, seeds in RUNS.items():
        expect = tuple(100 * ep * MS[entry] / 1e3 if math.isfinite(s) else math.inf for s, ep in seeds)
        assert sorted(by[entry].qtt.values) == pytest.approx(sorted(expect))
    # busy seconds: K-FAC (20-23 s, a seed missed) is slower than SGD (10-12 s); priced: 2 s against 6-8 s
    assert by["kfac"].vs.verdict == "slower" and by["lion"].vs.verdict == "no clear difference"
    kfac, lion, sgd = by["kfac"].qvs, by["lion"].qvs, by["sgd"].qtt
    big = 1e9  # a missed seed ranks last
    p = exact_p_less([2, 2, 2, 2, big], [6, 6, 8, 6, 8])
    assert kfac.p_faster == pytest.approx(p, rel=1e-9) and 0.05 < p < 0.1
    assert kfac.verdict == "no clear difference" and kfac.speedup == pytest.approx(sgd.median / 2.0)
    p = exact_p_less([3, 3, 3, 4, 3], [6, 6, 8, 6, 8])
    assert lion.p_faster == pytest.approx(p, rel=1e-9) and p < 0.05
    assert lion.verdict == "faster" and lion.speedup == pytest.approx(2.0)
    assert by["sgd"].qvs is None  # the baseline is not tested against itself


def test_claims_about_seconds_use_quiet_seconds_where_rows_are_priced(tmp_path):
    rows = summarise(collect(Tracker(crafted_store(tmp_path)).client))
    text = CLAIMS + "  - {id: kfac-before-sgd, task: mnist, claim: faster, methods: [kfac, sgd], measure: seconds}\n"
    claims = claims_mod.load(write_claims(tmp_path, text))

    def outcomes():
        v = {v.claim.id: v.outcome for v in claims_mod.evaluate(claims, settings_of(rows))}
        return v["kfac-before-sgd"], v["lion-before-sgd"]

    assert outcomes() == ("refuted", "inconclusive")
    price_steps(rows, [load(costs_file(tmp_path))])
    assert outcomes() == ("inconclusive", "confirmed")


@pytest.mark.parametrize("table, priced", [
    pytest.param({"batch": 50}, False, marks=pytest.mark.slow),  # another batch size: nothing priced, no columns
    pytest.param({"task": "fashion-mnist"}, False, marks=pytest.mark.slow),
    ({"ms": {"sgd": 20.0, "kfac": 10.0, "lion": 10.0}}, True),  # entries it lacks stay unpriced
])
def test_only_rows_of_the_tables_task_batch_size_and_entries_are_priced(tmp_path, table, priced):
    uri = crafted_store(tmp_path)
    out = tmp_path / "rep"
    args = {"ms": MS, "task": "mnist", "batch": 100, **table}
    result = CliRunner().invoke(app, ["report", "--tracking-uri", uri, "--out", str(out), "--no-log",
                                      "--step-costs", costs_file(tmp_path, **args)])
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text()
    assert ("quiet s to target" in md) is priced
    if priced:
        lines = {e: next(line for line in md.splitlines() if line.startswith(f"| mnist | {e}")) for e in RUNS}
        assert lines["lion"].rstrip(" |").split(" | ")[-1].startswith("faster than sgd (2.00x")
        assert lines["kfac"].rstrip(" |").split(" | ")[-1].startswith("no clear difference from sgd (3.00x")
        assert lines["sam"].endswith("| - | - |")  # sam is not in the table
        assert "6.00 [6.00, 8.00] (93.8%)" in lines["sgd"]  # 300, 300, 400, 300, 400 steps at 20 ms
        assert "test CPU" in md and "steps.json" in md  # the note says what priced them
        html = (out / "report.html").read_text()
        assert "quiet s to target" in html and "6.00 [6.00, 8.00] (93.8%)" in html


@pytest.mark.parametrize("content, fragment", [
    (None, "no such file"),
    ("{not json", "not JSON"),
    ('["a"]', "expected a JSON object"),
    ('{"batch_size": 100, "ms_per_step": {"sgd": 1}}', "field task is missing"),
    ('{"task": "mnist", "batch_size": 0, "ms_per_step": {"sgd": 1}}', "field batch_size: expected a positive integer"),
    ('{"task": "mnist", "batch_size": 100, "ms_per_step": {"sgd": -1}}', "field ms_per_step.sgd: expected a positive"),
    ('{"task": "mnist", "batch_size": 100, "ms_per_step": {}}', "field ms_per_step: expected"),
    ('{"task": "mnist", "batch_size": 100, "ms_per_step": {"sgd": 1}, "execution": []}', "field execution: expected"),
    ('{"task": "mnist", "batch_size": 100, "ms_per_step": {"sgd": 1}, "execution": {"precision": 16}}',
     "field execution: expected"),
])
def test_a_bad_step_cost_table_is_one_line_exit_2_naming_the_file_and_field(tmp_path, content, fragment):
    uri = crafted_store(tmp_path, {"sgd": RUNS["sgd"][:2]})
    path = tmp_path / "costs.json"
    if content is not None:
        path.write_text(content)
    result = CliRunner().invoke(app, ["report", "--tracking-uri", uri, "--out", str(tmp_path / "r"), "--no-log",
                                      "--step-costs", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and fragment in lines[0], result.output
    assert not (tmp_path / "r").exists()


def test_two_tables_for_one_task_and_batch_size_are_refused(tmp_path):
    a, b = costs_file(tmp_path, name="a.json"), costs_file(tmp_path, name="b.json")
    with pytest.raises(Exception, match="already given by"):
        load_all([a, b])


def test_a_table_naming_its_recipe_prices_that_recipe_and_those_derived_from_it_only(tmp_path):
    """The same entry name in two recipes may hold other settings (K-FAC's intervals): a table that names the
    recipe it timed prices that recipe's runs, and those of verdict's and scale-batch's recipes derived from it."""
    from curvbench.recipe.derived import derived_from

    assert derived_from("thesis", "thesis") and derived_from("thesis-budget8", "thesis")
    assert derived_from("thesis@b512", "thesis") and derived_from("thesis@b512-budget4", "thesis")
    assert not derived_from("thesis2", "thesis") and not derived_from("other-budget8", "thesis")
    assert not derived_from("thesis@bx", "thesis") and not derived_from(None, "thesis")
    fresh = summarise(collect(Tracker(crafted_store(tmp_path)).client))  # the crafted runs' recipe is "thesis"
    rows = copy.deepcopy(fresh)
    other = costs_file(tmp_path, ms={e: 1000.0 for e in MS}, name="other.json", recipe="other")
    own = costs_file(tmp_path, name="own.json", recipe="thesis")
    anyone = costs_file(tmp_path, ms={e: 500.0 for e in MS}, name="any.json")  # names no recipe: a fallback
    price_steps(rows, load_all([other, anyone, own]))  # three tables for mnist at 100, each for other recipes
    sgd = next(r for r in rows if r.name == "sgd")
    assert sgd.priced_by.source == own and sorted(sgd.qtt.values) == pytest.approx([6.0, 6.0, 6.0, 8.0, 8.0])
    rows = copy.deepcopy(fresh)
    price_steps(rows, load_all([other]))
    assert all(r.qtt is None for r in rows)  # another recipe's table prices nothing here
    with pytest.raises(Exception, match="for thesis is already given by"):
        load_all([own, costs_file(tmp_path, name="own2.json", recipe="thesis")])


@pytest.mark.slow  # times two methods for a few steps
def test_step_cost_json_prices_the_runs_of_its_task(tmp_path):
    """step_cost.py --recipe times the recipe's entries and names the recipe in the JSON: it prices the runs of the
    recipes scale-batch derives from it (`stepped@b100-budget4`)."""
    out = tmp_path / "steps.json"
    (tmp_path / "stepped.yaml").write_text("task: mnist\ntraining: {batch_size: 100}\n"
                                           "methods: {sgd: {}, kfac: {inverse_every: 3}}\n")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_cost.py"), "--recipe",
                           str(tmp_path / "stepped.yaml"), "--rounds", "2", "--block", "3", "--short-block", "2",
                           "--threads", "1", "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    table = load(str(out))
    assert table.task == "mnist-mini" and table.batch_size == 100 and set(table.ms_per_step) == {"sgd", "kfac"}
    assert table.recipe == "stepped"
    printed = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in done.stdout.splitlines()
               if line.startswith("| sgd") or line.startswith("| kfac")}
    assert printed == pytest.approx(table.ms_per_step, abs=0.006)  # the JSON holds what the table printed
    assert json.loads(out.read_text())["blocks"] == {"sgd": 2, "kfac": 3}  # --short-block for SGD alone
    rows = summarise(collect(Tracker(crafted_store(tmp_path, {"sgd": RUNS["sgd"]}, recipe="stepped@b100-budget4",
                                                   task="mnist-mini")).client))
    price_steps(rows, [table])
    expect = sorted(100 * epochs * table.ms_per_step["sgd"] / 1e3 for _, epochs in RUNS["sgd"])
    assert sorted(rows[0].qtt.values) == pytest.approx(expect)


def step_cost_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("step_cost", ROOT / "benchmarks" / "step_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method, hparams, same", [
    ("sgd", {}, True), ("sam", {"rho": 0.1}, True), ("lion", {}, True), ("adamw", {}, True),
    ("kfac", {}, False),  # factors every 10 steps, inverses every 100
    ("kfac", {"factor_every": 1, "inverse_every": 1}, True),
    ("kfac", {"factor_every": 1}, False),
    ("kfac-adaptive", {"factor_every": 1, "inverse_every": 1}, False),  # its damping and gamma intervals
    ("shampoo", {}, False),  # roots every 20 steps
    ("shampoo", {"precondition_frequency": 1}, False),  # preconditioned from step 20
    ("shampoo", {"precondition_frequency": 1, "start_preconditioning_step": 1}, True),  # the paper's update
    ("torch.optim.Adam", {}, False),  # an import path: its intervals have no known names
])
def test_short_blocks_only_for_entries_whose_every_step_does_the_same_work(method, hparams, same):
    from curvbench.recipe.loading import MethodEntry

    assert step_cost_script().same_work_every_step(MethodEntry("e", method, hparams)) is same


def test_a_derived_recipe_name_reads_back_as_the_parts_it_was_spelled_from():
    from curvbench.recipe import derived

    for base, batch, budget in [("mnist-scale-batch", 512, 4), ("conll-verdict", None, 8), ("a-budget", 32, None),
                                ("x@by", None, None), ("cifar", 2048, 12)]:
        name = base
        name = derived.at_batch(name, batch) if batch is not None else name
        name = derived.tuned(name, budget) if budget is not None else name
        assert derived.parse(name) == (base, batch, budget), name
    assert derived.parse("thesis-budget8x") == ("thesis-budget8x", None, None)
    assert derived.parse("") == ("", None, None)  # a run without a recipe tag: no derived name, no error


def test_float32_and_bf16_runs_are_two_rows_each_tested_and_priced_against_their_own_kind(tmp_path):
    """One recipe run on a CPU without bf16 and on one with it (`bf16: auto`): never averaged together, Lion in bf16
    tested against SGD in bf16, and a float32 step-cost table prices the float32 runs only."""
    f32, bf16 = {"precision": "float32"}, {"precision": "bf16 autocast (float32 loss and statistics)"}
    crafted_store(tmp_path, {"sgd": [(10.0, 3), (11.0, 3), (12.0, 3)], "lion": [(5.0, 3), (5.5, 3), (6.0, 3)]},
                  task="cifar10", tags=f32)
    uri = crafted_store(tmp_path, {"sgd": [(5.0, 3), (5.5, 3), (6.0, 3)], "lion": [(2.0, 3), (2.2, 3), (2.4, 3)]},
                        task="cifar10", tags=bf16)
    rows = {r.entry.removesuffix(" [to-target >= 0.985, thesis]"): r for r in summarise(collect(Tracker(uri).client))}
    assert set(rows) == {"sgd (precision=float32)", "sgd (precision=bf16)", "lion (precision=float32)",
                         "lion (precision=bf16)"}
    assert all(r.runs == 3 for r in rows.values())
    assert rows["lion (precision=float32)"].vs.speedup == pytest.approx(11.0 / 5.5)  # not 11.0 / 2.2 nor 5.5 / 5.5
    assert rows["lion (precision=bf16)"].vs.speedup == pytest.approx(5.5 / 2.2)
    settings = settings_of(list(rows.values()))  # what the claims read: one setting per kind
    assert set(settings) == {("cifar10", "thesis (float32)", 0.985), ("cifar10", "thesis (bf16)", 0.985)}
    assert settings[("cifar10", "thesis (bf16)", 0.985)]["lion"]["seconds"].median == pytest.approx(2.2)
    table = load(costs_file(tmp_path, {"sgd": 20.0, "lion": 10.0}, task="cifar10", execution=f32))
    price_steps(list(rows.values()), [table])
    assert rows["sgd (precision=float32)"].qtt.values == pytest.approx((6.0, 6.0, 6.0))  # 300 steps at 20 ms
    assert rows["sgd (precision=bf16)"].qtt is None and rows["lion (precision=bf16)"].qtt is None
    assert "float32" in table.describe()
    other = costs_file(tmp_path, {"sgd": 10.0}, task="cifar10", name="bf16.json", execution=bf16)
    assert len(load_all([table.source, other])) == 2  # one table per kind of execution
    with pytest.raises(CurvbenchError, match="is already given by"):
        load_all([table.source, costs_file(tmp_path, {"sgd": 10.0}, task="cifar10", name="b.json", execution=f32)])
