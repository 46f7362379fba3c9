"""What ends a run as diverged: NaN or inf, and a loss that explodes without ever becoming NaN."""

import pytest
import torch

from curvbench.methods import get
from curvbench.recipe import loading as recipe
from curvbench.recipe.loading import MethodEntry
from curvbench.training import engine
from curvbench.training.engine import Diverged, ExplosionCheck
from curvbench.training.runner import load_task


def test_explosion_needs_the_set_number_of_checks_in_a_row():
    check = ExplosionCheck(factor=100, checks=3)
    check.start(2.3)
    for epoch, loss in enumerate([2.0, 300.0, 300.0, 2.0, 300.0, 300.0], start=1):  # strikes reset at 2.0
        check.check(loss, epoch, 20 * epoch)
    with pytest.raises(Diverged, match=r"exploded to 231, above 100 x the initial 2.3 for 3 checks, in epoch 7"):
        check.check(231.0, 7, 140)


def test_a_loss_just_under_the_limit_never_explodes_and_factor_0_turns_the_rule_off():
    check = ExplosionCheck(factor=100, checks=2)
    check.start(2.0)
    for step in range(10):
        check.check(199.9, 1, step)
    off = ExplosionCheck(factor=0, checks=1)
    off.start(2.0)
    off.check(1e30, 1, 1)
    with pytest.raises(Diverged, match="loss nan"):
        off.check(float("nan"), 1, 2)  # NaN always diverges


def _mini(training=None):
    r = recipe.parse({"task": "mnist-mini", "methods": ["sgd"], "training": {"epochs": 1, **(training or {})}}, "t")
    return r, load_task(r, torch.device("cpu"))


def test_lion_at_lr_10_ends_as_exploded_not_finished():
    """Lion's sign step never produces a NaN: at lr 10 the loss climbs to ~1e10 at chance accuracy."""
    r, task = _mini()
    entry = MethodEntry("lion", "lion", get("lion").resolve({"lr": 10}))
    result = engine.train(task, entry, r.training, 0, torch.device("cpu"))
    assert result.status == engine.DIVERGED
    assert "exploded" in result.reason and "for 3 checks" in result.reason
    assert result.steps == 60  # found at the third check (log_every 20), not at the end of the epoch


def test_a_healthy_run_is_not_called_exploded():
    r, task = _mini({"explode_factor": 2, "explode_checks": 1})  # even a tight rule: SGD's loss only falls
    result = engine.train(task, MethodEntry("sgd", "sgd", get("sgd").defaults()), r.training, 0, torch.device("cpu"))
    assert result.status == engine.FINISHED, result.reason
