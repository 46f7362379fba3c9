"""The critical batch size against hand-made step curves, and the learning-rate range at each batch size."""

import math

import pytest

from curvbench.report.batch_scaling import at_edge, critical_batch, scaled_range


def test_perfect_scaling_puts_the_knee_beyond_the_largest_batch():
    steps = {32: 6400.0, 64: 3200.0, 128: 1600.0, 256: 800.0}
    c = critical_batch(steps)
    assert c.batch == 256 and c.beyond_range and c.text() == ">= 256"
    assert c.ideal == {32: 6400.0, 64: 3200.0, 128: 1600.0, 256: 800.0}


def test_a_knee_is_the_last_batch_within_20_percent_of_ideal_scaling():
    # ideal from 32: 6400, 3200, 1600, 800, 400; measured: within 20% up to 128 (1900 <= 1.2 * 1600 = 1920),
    # 256 needs 1200 > 1.2 * 800 = 960
    steps = {32: 6400.0, 64: 3300.0, 128: 1900.0, 256: 1200.0, 512: 1000.0}
    c = critical_batch(steps)
    assert c.batch == 128 and c.steps == 1900.0 and not c.beyond_range and c.text() == "128"
    # efficiency = ideal / measured: 1600 / 1900 at 128, 800 / 1000 = 0.80 < 1 / 1.2 at 256, past the knee
    assert c.efficiency(128, 1900.0) == pytest.approx(1600 / 1900) and c.efficiency(256, 1000.0) == pytest.approx(0.8)
    assert c.efficiency(32, 6400.0) is None and c.efficiency(256, math.inf) is None  # the base; not reached


def test_a_flat_curve_has_the_smallest_batch_as_its_critical_batch():
    c = critical_batch({64: 500.0, 128: 500.0, 256: 500.0})
    assert c.batch == 64 and not c.beyond_range


def test_a_batch_that_never_reached_the_target_ends_the_scaling_and_a_missing_one_is_skipped_and_named():
    steps = {32: 4000.0, 64: None, 128: 1100.0, 256: math.inf}
    c = critical_batch(steps)
    assert c.batch == 128 and c.missing == (64,) and "not measured: 64" in c.text()
    assert critical_batch({32: math.inf, 64: 100.0}).batch is None


def test_the_threshold_is_a_parameter():
    steps = {32: 6400.0, 64: 3800.0}  # 3800 / 3200 = 1.19
    assert critical_batch(steps).batch == 64
    assert critical_batch(steps, threshold=0.1).batch == 32


def test_learning_rate_ranges_scale_linearly_or_by_the_square_root():
    assert scaled_range(0.01, 0.1, 100, 400) == pytest.approx((0.04, 0.4))
    assert scaled_range(0.01, 0.1, 100, 400, "sqrt") == pytest.approx((0.02, 0.2))
    assert scaled_range(0.01, 0.1, 100, 25) == pytest.approx((0.0025, 0.025))
    with pytest.raises(ValueError):
        scaled_range(0.01, 0.1, 100, 400, "cubic")
    with pytest.raises(ValueError):
        scaled_range(0.1, 0.01, 100, 400)


def test_a_best_value_at_an_edge_is_reported():
    assert at_edge(0.0101, 0.01, 1.0) == "low"
    assert at_edge(0.99, 0.01, 1.0) == "high"
    assert at_edge(0.1, 0.01, 1.0) is None
    assert at_edge(0.52, 0.0, 1.0, log=False) is None and at_edge(0.02, 0.0, 1.0, log=False) == "low"


SCALE_RECIPE = """
task: {{dataset: mnist, data_dir: {data}}}
training: {{epochs: 2, batch_size: 50, seeds: [0, 1], target: 0.3, schedule: constant, validation: 0.2}}
methods: {{sgd: {{lr: 0.05}}, lion: {{lr: 0.001}}}}
search: {{sgd: {{lr: {{low: 0.01, high: 0.3, log: true}}}}, lion: {{lr: {{low: 0.0001, high: 0.01, log: true}}}}}}
"""


@pytest.mark.parametrize("sizes, fragment", [
    ("64,32", "expected increasing batch sizes, e.g. 32,64"),
    ("32,32", "a batch size is repeated"),
    ("0,32", "expected positive integers"),
    ("32,x", "expected comma-separated positive integers"),
    ("32,100000", "100000 is larger than the training set (480 examples)"),
])
def test_bad_batch_sizes_are_one_line_exit_2_and_nothing_runs(sizes, fragment, mnist_dir, write_recipe, tracking_uri):
    from typer.testing import CliRunner

    from curvbench.cli.app import app

    path = write_recipe(SCALE_RECIPE.format(data=mnist_dir))
    result = CliRunner().invoke(app, ["scale-batch", str(path), "--batch-sizes", sizes, "--tracking-uri", tracking_uri,
                                      "-q"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.output
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_a_batch_budget_of_zero_is_refused(mnist_dir, write_recipe, tracking_uri):
    from typer.testing import CliRunner

    from curvbench.cli.app import app

    path = write_recipe(SCALE_RECIPE.format(data=mnist_dir))
    result = CliRunner().invoke(app, ["scale-batch", str(path), "--batch-sizes", "25,50", "--budget", "0", "-q"])
    assert result.exit_code == 2 and "--budget: expected an integer >= 1, got 0" in result.output
    result = CliRunner().invoke(app, ["scale-batch", str(path), "--batch-sizes", "25,50", "--evals-per-epoch", "0"])
    assert result.exit_code == 2 and "--evals-per-epoch: expected an integer from 1 to 1000, got 0" in result.output


def test_to_target_is_evaluated_a_tenth_of_an_epoch_apart_at_every_batch_size():
    from curvbench.search.scale_batch import eval_interval

    assert eval_interval(60_000, 32, 10) == 187  # 1875 steps an epoch
    assert eval_interval(60_000, 2048, 10) == 3  # 30 steps
    assert eval_interval(480, 100, 10) == 1  # 5 steps: every step
    assert eval_interval(60_000, 128, 1) == 469  # once an epoch


def test_the_lr_range_moves_with_the_batch_size_in_the_recipe_at_each_batch():
    from curvbench.search.scale_batch import at_batch

    data = {"task": "mnist", "training": {"batch_size": 100},
            "search": {"sgd": {"lr": {"low": 0.01, "high": 0.1, "log": True}, "weight_decay": [0, 1e-4]},
                       "kfac": {"lr": [0.01, 0.03]}}}
    d = at_batch(data, "m", 400, 100, "linear")
    assert d["name"] == "m@b400" and d["training"]["batch_size"] == 400
    assert d["search"]["sgd"]["lr"] == {"low": pytest.approx(0.04), "high": pytest.approx(0.4), "log": True}
    assert d["search"]["sgd"]["weight_decay"] == [0, 1e-4]  # only the learning rate moves
    assert d["search"]["kfac"]["lr"] == [pytest.approx(0.04), pytest.approx(0.12)]
    assert data["search"]["sgd"]["lr"]["low"] == 0.01  # the recipe itself is untouched
    assert at_batch(data, "m", 400, 100, "sqrt")["search"]["sgd"]["lr"]["low"] == pytest.approx(0.02)


@pytest.mark.slow
def test_scale_batch_end_to_end_two_batch_sizes_two_methods_then_the_report(mnist_dir, write_recipe, tmp_path,
                                                                              monkeypatch):
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from curvbench.cli.app import app

    monkeypatch.chdir(tmp_path)
    path = write_recipe(SCALE_RECIPE.format(data=mnist_dir), "scale.yaml")
    args = ["scale-batch", str(path), "--batch-sizes", "25,50", "--budget", "2", "--tune-epochs", "1", "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = [line for line in result.output.splitlines() if line.startswith("batch ")]
    assert [line.split(" steps to target ")[0] for line in printed] == [
        "batch 25: sgd", "batch 25: lion", "batch 50: sgd", "batch 50: lion"], result.output
    assert all(line.endswith("/2)") or "the best may lie beyond" in line for line in printed), printed
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")  # absolute: MLflow caches stores by URI
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    targets = [r for r in runs if r.data.tags.get("kind") == "to-target-run"]
    assert sorted({r.data.tags["recipe"] for r in targets}) == ["scale@b25-budget2", "scale@b50-budget2"]
    assert len(targets) == 2 * 2 * 2  # batch sizes x methods x seeds
    assert {r.data.params["training.batch_size"] for r in targets} == {"25", "50"}
    parents = [r for r in runs if r.data.tags.get("kind") == "to-target"]
    assert sorted(r.data.params["eval_every"] for r in parents) == ["1", "2"]  # 480 examples: 10 and 20 steps
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(trials) == 2 * 2 * 2  # batch sizes x methods x budget
    assert CliRunner().invoke(app, args).exit_code == 0  # resumes: nothing runs again
    assert len(client.search_runs([client.get_experiment_by_name("mnist").experiment_id])) == len(runs)
    rep = CliRunner().invoke(app, ["report", "--out", "rep", "--no-log", "--task", "mnist"])
    assert rep.exit_code == 0, rep.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Steps to target against batch size" in md
    row = next(line for line in md.splitlines() if line.startswith("| mnist | scale | sgd |"))
    assert "25: " in row and "50: " in row
    assert (tmp_path / "rep" / "mnist_steps_vs_batch.png").stat().st_size > 5000


def test_a_best_value_at_an_edge_is_named_whether_of_the_range_or_of_what_was_tried():
    from curvbench.report.batch_scaling import edge_of

    rng = {"low": 0.01, "high": 1.0, "log": True}
    assert edge_of(0.99, [0.02, 0.1, 0.99], rng) == "at the high edge of the range searched"
    assert edge_of(0.0101, [0.0101, 0.1, 0.5], rng) == "at the low edge of the range searched"
    assert edge_of(0.5, [0.02, 0.1, 0.5], rng) == "the highest of 3 values tried"  # inside the range, nothing above
    assert edge_of(0.02, [0.02, 0.1, 0.5], rng) == "the lowest of 3 values tried"
    assert edge_of(0.1, [0.02, 0.1, 0.5], rng) is None  # bracketed on both sides
    assert edge_of(0.5, [0.1, 0.5], rng) is None  # two values tried say nothing
    assert edge_of(0.3, [0.01, 0.03, 0.1, 0.3], [0.01, 0.03, 0.1, 0.3]) == "the highest of 4 values tried"  # a grid


def test_the_scaling_table_marks_a_batch_size_whose_search_ended_at_an_edge():
    from types import SimpleNamespace

    from curvbench.report.batch_scaling import Point
    from curvbench.report.stats import Censored
    from curvbench.report.tables import scaling_table

    scaling = {("mnist", "s", "sgd"): {25: Point(Censored((400.0, 420.0)), Censored((4.0, 4.2))),
                                       50: Point(Censored((200.0, 210.0)), Censored((2.0, 2.1))),
                                       100: Point(Censored((190.0, 200.0)), Censored((1.9, 2.0)))}}
    found = [SimpleNamespace(task="mnist", study="s@b100-sgd-halton",
                             edges=lambda: {"lr": "the highest of 4 values tried"})]
    row = scaling_table(scaling, found).splitlines()[2]
    assert "25: 410, 50: 205 (100% of linear), 100: 195 (53% of linear; lr the highest of 4 values tried)" in row
    assert "| 50 | 205 |" in row  # the knee: 195 > 1.2 x 410 x 25 / 100


def test_the_fastest_batch_size_is_judged_on_quiet_seconds_where_a_step_cost_table_priced_it():
    """Busy training seconds say batch 64 is fastest; priced at quiet step costs (steps x ms per step, measured at
    each batch size) batch 256 is, and the table says which seconds it used."""
    from types import SimpleNamespace

    from curvbench.report.batch_scaling import scaling_rows
    from curvbench.report.stats import Censored
    from curvbench.report.tables import scaling_table

    def row(b, steps, busy, quiet):
        return SimpleNamespace(task="mnist", recipe=f"s@b{b}-budget4", name="sgd", stt=Censored(steps),
                               ttt=Censored(busy), qtt=None if quiet is None else Censored(quiet),
                               missed_within=None)

    ms = {64: 10.0, 256: 25.0}  # a quiet step at 256 costs 2.5x one at 64, not 4x
    steps = {64: (800.0, 820.0, 840.0), 256: (300.0, 310.0, 320.0)}
    busy = {64: (9.0, 9.5, 10.0), 256: (30.0, 31.0, 32.0)}  # batch 256 ran while the machine was loaded
    rows = [row(b, steps[b], busy[b], tuple(s * ms[b] / 1000 for s in steps[b])) for b in (64, 256)]
    table = scaling_table(scaling_rows(rows)).splitlines()[2]
    assert table.endswith("| 7.8 s at 256 (quiet) |")  # 310 x 25 ms, against 820 x 10 ms = 8.2 s at 64
    unpriced = scaling_table(scaling_rows([row(b, steps[b], busy[b], None) for b in (64, 256)])).splitlines()[2]
    assert unpriced.endswith("| 9.5 s at 64 (the runs' own seconds) |")


def test_the_scaling_figure_draws_a_batch_size_not_reached_above_every_reached_one(tmp_path):
    """A batch size at which the median seed missed the target is drawn (on the figure's top line), not dropped: a
    curve that stops at 128 would read as 'not measured beyond', when it was measured and failed."""
    from curvbench.report.batch_scaling import Point
    from curvbench.report.figures import scaling_figure
    from curvbench.report.stats import Censored

    inf = math.inf
    scaling = {("mnist", "s", "sgd"): {32: Point(Censored((2400.0, 2500.0, 2450.0)), None),
                                       128: Point(Censored((880.0, 870.0, 900.0)), None)},
               ("mnist", "s", "shampoo"): {32: Point(Censored((1900.0, 1850.0, 1870.0)), None),
                                           128: Point(Censored((700.0, 690.0, 680.0)), None),
                                           512: Point(Censored((600.0, inf, inf)), None)}}
    drawn = scaling_figure(scaling, "mnist", tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
    assert drawn["sgd"] == {32: (32, 2450.0, True), 128: (128, 880.0, True)}
    x, y, reached = drawn["shampoo"][512]
    assert not reached and y > 2450.0 and x == 512  # alone at 512: not moved
    assert drawn["shampoo"][128] == (128, 690.0, True)


def test_the_scaling_figure_draws_a_method_that_missed_everywhere_and_spreads_marks_at_one_batch(tmp_path):
    """A method whose median seed missed at every batch size is still drawn (its x marks), and where several
    methods missed at the same batch size their marks are apart (they coincided: one colour seen for three)."""
    from curvbench.report.batch_scaling import Point
    from curvbench.report.figures import scaling_figure
    from curvbench.report.stats import Censored

    inf = math.inf
    missed = Point(Censored((inf, inf, 300.0)), None)
    scaling = {("f", "s", "adamw"): {512: Point(Censored((440.0, 450.0, 430.0)), None), 2048: missed},
               ("f", "s", "momentum"): {512: Point(Censored((570.0, 580.0, 560.0)), None), 2048: missed},
               ("f", "s", "sgd"): {512: missed, 2048: missed}}
    drawn = scaling_figure(scaling, "f", tmp_path / "f.png")
    assert set(drawn["sgd"]) == {512, 2048} and not any(r for *_, r in drawn["sgd"].values())
    at_2048 = [drawn[e][2048][0] for e in ("adamw", "momentum", "sgd")]
    assert len(set(at_2048)) == 3  # three marks, three places
    assert all(2048 * 2 ** -0.5 < x < 2048 * 2 ** 0.5 for x in at_2048)  # each still nearer 2048 than 1024 or 4096
    assert drawn["sgd"][512][0] == 512  # alone at 512


def test_a_batch_size_not_reached_says_how_many_steps_its_seeds_were_given(tmp_path):
    """At a large batch the recipe's epochs are few steps: "not reached" alone would read as a failure to train,
    where "not reached in 300" says the seeds were given 300 steps (the most a seed that missed trained)."""
    from curvbench.report.batch_scaling import scaling_rows
    from curvbench.report.collect import RunData
    from curvbench.report.summary import summarise
    from curvbench.report.tables import scaling_table

    def run(b, seed, reached, steps):
        per_epoch = steps // 10
        return RunData(run_id=f"{b}-{seed}", task="mnist", entry="sgd", seed=str(seed), status="FINISHED",
                       batch_size=str(b), target_reached="true" if reached else "false", recipe=f"s@b{b}-budget4",
                       protocol="to-target >= 0.985", target=0.985, method="sgd", label=f"sgd b{b}",
                       metrics={"steps_to_target": steps, "time_to_target": steps / 100.0,
                                "epochs_to_target": 10} if reached else {},
                       curves={"steps": [(e, e * per_epoch) for e in range(1, 11)]})

    runs = [run(512, s, True, 900 + 10 * s) for s in range(3)]
    runs += [run(2048, 0, True, 290), run(2048, 1, False, 300), run(2048, 2, False, 240)]  # seed 2 diverged early
    rows = summarise(runs)
    assert {r.recipe: r.missed_within for r in rows} == {"s@b512-budget4": None, "s@b2048-budget4": 300}
    table = scaling_table(scaling_rows(rows)).splitlines()[2]
    assert "| 512: 910, 2048: not reached in 300 | 512 | 910 |" in table


def test_scale_batch_closing_lines_keep_an_interval_that_is_not_reached_and_name_edges_and_skips():
    """At a batch size where no seed reached the target the interval is "[not reached, not reached]": printed
    through rich's markup it read as a style tag and vanished from the line."""
    from curvbench.search.scale_batch import summary_lines
    from curvbench.search.to_target import TargetRun, TargetSummary

    def runs(entry, steps):
        return [TargetRun(entry, entry, seed, s is not None, "FINISHED", steps=s) for seed, s in enumerate(steps)]

    done = {512: {"target": ([TargetSummary("kfac", runs("kfac", [160, 170, 150]))], None, "test_accuracy"),
                  "edges": {"kfac": "best lr 0.003 is the highest of 4 values tried"}},
            2048: {"target": ([TargetSummary("sgd", runs("sgd", [None, None, None]))], None, "test_accuracy"),
                   "edges": {}}}
    lines = summary_lines(done, {4096: "out of memory"})
    assert lines == ["batch 512: kfac steps to target 160 [150, 170] (75.0%) (3/3); its best lr 0.003 is the "
                     "highest of 4 values tried: the best may lie beyond",
                     "batch 2048: sgd steps to target not reached [not reached, not reached] (75.0%) (0/3)",
                     "batch 4096: not run: out of memory"]
