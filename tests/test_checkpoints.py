"""A run killed at an epoch's end, or inside an epoch, and resumed from its checkpoint computes what an unstopped run
computes: every parameter, batch-norm statistic and epoch metric bit for bit, for every built-in method, with state
that accumulates across the checkpoint (K-FAC's factors and inverses, Shampoo's statistics, moments, adaptive
damping), and inside an epoch the same batches (its data order, augmentation drawn per batch) and summed loss."""

import pytest
import torch
from torch import nn

from curvbench import methods
from curvbench.errors import CurvbenchError
from curvbench.recipe import loading as recipe
from curvbench.recipe.loading import MethodEntry
from curvbench.tasks.base import ClassificationTask, Split
from curvbench.training import engine
from curvbench.training.checkpoints import Checkpoints

# short intervals, so that each method's accumulated state changes on both sides of the checkpoint
SHORT = {
    "kfac": {"factor_every": 1, "inverse_every": 4},
    "kfac-adaptive": {"factor_every": 1, "inverse_every": 4, "damping_every": 2, "gamma_every": 3},
    "shampoo": {"precondition_frequency": 2, "start_preconditioning_step": 3},
}


class TinyConvNet(ClassificationTask):
    """Conv, batch norm (running statistics to restore), dropout (torch's generator to restore), linear; noise
    added to each training batch from the data generator, as CIFAR-10's crops and flips are drawn."""

    def augment(self, x, generator):
        return x + 0.1 * torch.randn(x.shape, generator=generator)

    def build_model(self, needs=frozenset()):
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2), nn.Flatten(),
                             nn.Linear(4 * 6 * 6, 3))


def tiny_task():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (96,), generator=g)
    x = torch.randn(96, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float()
    return TinyConvNet("tiny", "conv", "accuracy", Split(x[:72], y[:72]), Split(x[72:], y[72:]), 3)


def training(epochs):
    return recipe.Training(epochs, 12, [0], recipe.Schedule("cosine"), 0.0, ["test"], "cpu", None, None, 2)


class KillAfter(engine.NoCallbacks):
    """Ctrl-C as the run's `epoch`-th epoch is reported (after its checkpoint was written at the epoch before)."""

    def __init__(self, epoch):
        self.epoch, self.seen = epoch, []

    def on_epoch_end(self, record):
        self.seen.append(record.epoch)
        if record.epoch == self.epoch:
            raise KeyboardInterrupt


def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(methods.registry()))
def test_a_killed_run_resumed_from_its_checkpoint_is_the_unstopped_run(name, tmp_path, float64):
    entry = MethodEntry(name, name, {**methods.get(name).defaults(), **SHORT.get(name, {})})
    device = torch.device("cpu")
    straight = engine.train(tiny_task(), entry, training(4), 0, device)
    assert straight.status == "FINISHED" and straight.resumed_at_epoch == 0

    ck = Checkpoints(tmp_path, "run")
    with pytest.raises(KeyboardInterrupt):
        engine.train(tiny_task(), entry, training(4), 0, device, KillAfter(3), checkpoints=ck)
    assert ck.path.is_file()  # epoch 2's checkpoint survives the kill inside epoch 3's report

    replayed = KillAfter(0)
    resumed = engine.train(tiny_task(), entry, training(4), 0, device, replayed, checkpoints=ck)
    assert resumed.resumed_at_epoch == 2 and replayed.seen == [1, 2, 3, 4]  # epochs 1-2 replayed, 3-4 trained
    assert resumed.steps == straight.steps == 24
    assert [e.metrics["train_loss"] for e in resumed.epochs] == [e.metrics["train_loss"] for e in straight.epochs]
    assert [e.metrics["test_accuracy"] for e in resumed.epochs] == [e.metrics["test_accuracy"] for e in straight.epochs]
    a, b = state_of(straight.model), state_of(resumed.model)
    assert a.keys() == b.keys()
    for k in a:  # parameters and the batch-norm running statistics
        assert torch.equal(a[k], b[k]), f"{name}: {k} differs after resuming"
    assert resumed.train_seconds >= resumed.epochs[1].metrics["train_seconds"]  # the clock went on from the checkpoint
    assert not ck.path.exists()  # a finished run leaves no checkpoint behind


class KillAtStep(engine.NoCallbacks):
    """Ctrl-C as step `step`'s running loss is reported (log_every 2), before that step's checkpoint is written."""

    def __init__(self, step):
        self.step, self.seen, self.resumed = step, [], None

    def on_resumed(self, step):
        self.resumed = (step, list(self.seen))  # after the replayed epochs

    def on_progress(self, step, epoch, loss):
        if step == self.step:
            raise KeyboardInterrupt

    def on_epoch_end(self, record):
        self.seen.append(record.epoch)


@pytest.mark.parametrize("name", list(methods.registry()))
def test_a_run_killed_inside_an_epoch_resumes_at_its_last_checkpoint_as_the_unstopped_run(name, tmp_path, float64):
    entry = MethodEntry(name, name, {**methods.get(name).defaults(), **SHORT.get(name, {})})
    device = torch.device("cpu")
    straight = engine.train(tiny_task(), entry, training(4), 0, device)

    ck = Checkpoints(tmp_path, "run", every_seconds=0)  # due after every step
    with pytest.raises(KeyboardInterrupt):
        engine.train(tiny_task(), entry, training(4), 0, device, KillAtStep(16), checkpoints=ck)
    saved = torch.load(ck.path, map_location="cpu", weights_only=False)
    assert saved["step"] == 15 and saved["inside_epoch"]["batches"] == 3  # 6 steps an epoch: epoch 3, 3 done

    replayed = KillAtStep(0)
    resumed = engine.train(tiny_task(), entry, training(4), 0, device, replayed, checkpoints=ck)
    assert resumed.resumed_at_epoch == 2 and resumed.resumed_at_step == 15 and replayed.seen == [1, 2, 3, 4]
    assert replayed.resumed == (15, [1, 2])  # the reporter hears where training goes on, after the replay
    assert resumed.steps == straight.steps == 24
    assert [e.metrics["train_loss"] for e in resumed.epochs] == [e.metrics["train_loss"] for e in straight.epochs]
    assert [e.metrics["test_accuracy"] for e in resumed.epochs] == [e.metrics["test_accuracy"] for e in straight.epochs]
    a, b = state_of(straight.model), state_of(resumed.model)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{name}: {k} differs after resuming inside an epoch"
    assert "epoch_seconds" in resumed.epochs[2].metrics  # the resumed epoch ran all its steps, over two processes
    assert not ck.path.exists()


def test_a_checkpoint_inside_an_epoch_is_due_after_its_interval_of_wall_time(monkeypatch, tmp_path):
    from curvbench.training import checkpoints

    now = [100.0]
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: now[0])
    ck = Checkpoints(tmp_path, "run", every_seconds=600)
    assert not ck.due()
    now[0] = 699.0
    assert not ck.due()
    now[0] = 700.0
    assert ck.due()
    ck.save({}, torch.nn.Linear(1, 1), torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1), None)
    assert not ck.due()  # counted again from the save
    assert not Checkpoints(tmp_path, "other", every_seconds=None).due()  # epoch ends only
    assert Checkpoints(tmp_path, "default").every_seconds == checkpoints.EVERY_SECONDS


def test_the_checkpoint_is_what_changes_the_result(tmp_path, float64):
    """The same comparison fails when the optimizer's state is not restored: K-FAC rebuilt fresh at the checkpoint
    (factors and inverses from scratch) trains other parameters, so the test above can tell."""
    from curvbench.training import checkpoints

    entry = MethodEntry("kfac", "kfac", {**methods.get("kfac").defaults(), **SHORT["kfac"]})
    device = torch.device("cpu")
    straight = engine.train(tiny_task(), entry, training(4), 0, device)
    ck = Checkpoints(tmp_path, "run")
    with pytest.raises(KeyboardInterrupt):
        engine.train(tiny_task(), entry, training(4), 0, device, KillAfter(3), checkpoints=ck)
    real = checkpoints.unpack_optimizer
    try:
        checkpoints.unpack_optimizer = lambda data, opt, model, task: None  # the optimizer's state dropped
        resumed = engine.train(tiny_task(), entry, training(4), 0, device, checkpoints=ck)
    finally:
        checkpoints.unpack_optimizer = real
    assert not torch.equal(straight.model[0].weight, resumed.model[0].weight)


def test_a_damaged_checkpoint_is_named_and_never_half_used(tmp_path):
    entry = MethodEntry("sgd", "sgd", methods.get("sgd").defaults())
    ck = Checkpoints(tmp_path, "run")
    ck.path.write_bytes(b"not a checkpoint")
    with pytest.raises(CurvbenchError, match=r"checkpoint .*run\.pt: cannot be resumed from .*delete it"):
        engine.train(tiny_task(), entry, training(2), 0, torch.device("cpu"), checkpoints=ck)
    assert ck.path.read_bytes() == b"not a checkpoint"  # left for the user to look at
