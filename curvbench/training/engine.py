"""The training loop: one method, one seed, one task. Times training steps only; reports through callbacks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from curvbench import methods, record, stopping
from curvbench.methods.base import COUPLED, BuildContext, NonFinite
from curvbench.training.schedules import lr_factor
from curvbench.training.timing import Stopwatch, configure_cpu

FINISHED, DIVERGED, KILLED, FAILED = "FINISHED", "DIVERGED", "KILLED", "FAILED"


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    step: int  # global steps done
    metrics: dict[str, float]  # train_loss, lr, epoch_seconds, train_seconds, <split>_<metric>


@dataclass
class EvalPoint:
    """An evaluation inside the training run (to-target's --eval-every): where it happened and what it found."""

    step: int
    epoch: float  # fractional epochs done
    train_seconds: float
    metrics: dict[str, float]


@dataclass
class RunResult:
    status: str = FINISHED
    reason: str = ""
    epochs: list[EpochRecord] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0
    stopped_early: bool = False
    tags: dict[str, str] = field(default_factory=dict)  # what the method reports about itself
    model: Any = None  # the trained network, for callers that inspect it
    resumed_at_epoch: int = 0  # epochs restored from a checkpoint (0: trained from the start)
    resumed_at_step: int = 0  # steps restored from a checkpoint, inside an epoch or at its end


class Callbacks(Protocol):
    def on_start(self, total_steps: int, steps_per_epoch: int) -> None: ...
    def on_resumed(self, step: int) -> None: ...  # after a checkpoint's epochs were replayed; training goes on here
    def on_progress(self, step: int, epoch: int, loss: float) -> None: ...
    def on_epoch_end(self, record: EpochRecord) -> None: ...


class NoCallbacks:
    def on_start(self, total_steps, steps_per_epoch):
        pass

    def on_resumed(self, step):
        pass

    def on_progress(self, step, epoch, loss):
        pass

    def on_epoch_end(self, record):
        pass


@dataclass
class EvalSchedule:
    """Extra evaluations within training: every `every` steps on `split`; `stop(point)` True ends the run."""

    every: int
    split: str
    stop: Callable[[EvalPoint], bool]


class Diverged(Exception):
    pass


class ExplosionCheck:
    """A loss far above where the run started ends it as diverged, like NaN does.

    At every progress check (every `log_every` steps) the epoch's running mean loss (what `train_loss` will
    report) is compared with the loss of the first step (at the initial parameters): above `factor` times it
    at `checks` checks in a row, the run has exploded. Lion at lr 10 on LeNet-5 throws its loss to 1e11 in its
    first steps and then sits at chance accuracy, an epoch's train loss of 5e10, without ever producing a NaN;
    a run that still learns is never 100 times above its initial loss for three checks. factor 0 turns the
    rule off."""

    def __init__(self, factor: float, checks: int):
        self.factor, self.checks = factor, checks
        self.initial: float | None = None
        self.strikes = 0

    def start(self, first_loss: float) -> None:
        self.initial = first_loss

    def check(self, loss: float, epoch: int, step: int) -> None:
        if not math.isfinite(loss):
            raise Diverged(f"diverged: loss {loss} in epoch {epoch} by step {step}")
        if not self.factor or self.initial is None or not math.isfinite(self.initial):
            return
        limit = self.factor * max(self.initial, 1e-12)
        self.strikes = self.strikes + 1 if loss > limit else 0
        if self.strikes >= self.checks:
            raise Diverged(f"diverged: loss exploded to {loss:.3g}, above {self.factor:g} x the initial "
                           f"{self.initial:.3g} for {self.checks} checks, in epoch {epoch} by step {step}")


class StopTraining(Exception):
    """Raised by a callback (a pruner, a reached target) to end the run early; the run still counts as finished."""


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)


def build_model(task, needs: tuple[str, ...]):
    """The task's fresh model, built as the method needs it (MethodSpec.model_needs) when the task's build_model
    takes `needs`; a task whose build_model takes no argument (an older plugin) builds its one model."""
    import inspect

    if needs:
        params = inspect.signature(task.build_model).parameters
        if "needs" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return task.build_model(needs=frozenset(needs))
    return task.build_model()


def build_optimizer(task, model, entry, steps_per_epoch: int, epochs: int, seed: int):
    spec = methods.get(entry.method)
    ctx = BuildContext(model, task, steps_per_epoch, steps_per_epoch * epochs, seed)
    opt = spec.build(ctx, spec.configure(entry.hparams))
    for g in opt.param_groups:
        g.setdefault("initial_lr", g["lr"])
    if has_modes(opt):  # Schedule-Free starts in eval mode; every step must happen in train mode
        opt.train()
    regularisation = entry.hparams.get("regularisation", spec.regularisation)  # an imported class's entry says
    coupled_by_engine = regularisation == COUPLED and not spec.adds_l2
    l2 = entry.hparams.get("weight_decay", 0.0) if coupled_by_engine else 0.0
    return opt, l2


def make_closure(model, task, opt, batch, params: list[torch.Tensor], l2: float):
    """Forward, loss, backward; coupled L2 (loss + l2*||theta||^2) enters the gradient as 2*l2*theta."""
    on_forward = getattr(opt, "on_forward", None)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        outputs = task.forward(model, batch)
        loss = task.loss(outputs, batch)
        if on_forward is not None:  # K-FAC: Fisher statistics from this forward pass
            on_forward(outputs, batch)
        loss.backward()
        if l2:
            with_grad = [p for p in params if p.grad is not None]
            torch._foreach_add_([p.grad for p in with_grad], with_grad, alpha=2.0 * l2)
        return loss.detach()

    return closure


def has_modes(opt) -> bool:
    """An optimizer with train()/eval() modes (Schedule-Free keeps its evaluation weights apart)."""
    return opt is not None and callable(getattr(opt, "eval", None)) and callable(getattr(opt, "train", None))


def evaluate(task, model, splits: list[str], opt=None) -> dict[str, float]:
    """The task's metrics on each split, an optimizer with modes switched to eval() for it and back."""
    modes = has_modes(opt)
    if modes:
        opt.eval()
    try:
        out = {}
        for split in splits:
            for k, v in task.evaluate(model, split).items():
                out[record.split_metric(split, k)] = v
    finally:
        if modes:
            opt.train()
    return out


def train(
    task,
    entry,
    training,
    seed: int,
    device: torch.device,
    callbacks: Callbacks | None = None,
    eval_schedule: EvalSchedule | None = None,
    checkpoints=None,
) -> RunResult:
    """Train `entry` (a recipe MethodEntry) on `task` for `training.epochs` epochs.

    Divergence (a NaN or infinite loss, or an explosion: see ExplosionCheck) ends the run with status DIVERGED;
    KeyboardInterrupt propagates after the epochs already reported stay reported.

    Every epoch record holds the cumulative `steps` and `train_seconds`; `epoch_seconds` only for epochs that ran
    all their steps (a run stopped inside an epoch, at a target, logs no partial epoch time).

    `checkpoints` (training/checkpoints.Checkpoints): saved at every epoch end but the last, and between two steps
    whenever `checkpoints.due()` (minutes of wall time since the last save: an epoch of ResNet-18 on a CPU can
    outlast the session that runs it); a run that finds one resumes at its step (the epochs and evaluations before
    it are replayed to the callbacks, the epoch it was inside goes on with the same batches), and it is deleted
    when the run ends other than by Ctrl-C or SIGTERM."""
    cb = callbacks or NoCallbacks()
    configure_cpu()
    seed_everything(seed)
    model = build_model(task, methods.get(entry.method).model_needs).to(device)
    if hasattr(task, "prepare_model"):  # e.g. channels_last on CUDA
        model = task.prepare_model(model)
    steps_per_epoch = task.steps_per_epoch(training.batch_size)
    total = steps_per_epoch * training.epochs
    opt, l2 = build_optimizer(task, model, entry, steps_per_epoch, training.epochs, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed)
    watch = Stopwatch(device)
    result = RunResult(tags=dict(getattr(opt, "tags", {}) or {}))
    cb.on_start(total, steps_per_epoch)
    step, log_every = 0, training.log_every
    explosion = ExplosionCheck(training.explode_factor, training.explode_checks)
    points: list[EvalPoint] = []  # every evaluation inside the run, kept for a checkpoint
    inside = None  # where a checkpoint made inside an epoch stopped (InsideEpoch)
    if checkpoints is not None:
        step, inside = resume(checkpoints, task, model, opt, gen, watch, explosion, result, points, cb, eval_schedule)
        if step:
            cb.on_resumed(step)
    model.train()
    try:
        for epoch in range(result.resumed_at_epoch, training.epochs):
            epoch_start = watch.total
            loss_sum = torch.zeros((), device=device)
            batches = 0
            lr = 0.0
            if inside is not None:  # the killed run's epoch: its data order drawn again, the batches done skipped
                gen.set_state(inside.epoch_rng)
            epoch_rng = gen.get_state()  # the epoch's data order is drawn from `gen`, by the iterator below
            batch_iter = iter(task.train_batches(training.batch_size, gen))
            if inside is not None:
                for _ in range(inside.batches):
                    next(batch_iter)
                restore_rngs(inside.saved, gen)  # whatever drawing those batches again drew: the states as saved
                epoch_start, loss_sum, batches = inside.epoch_start, inside.loss_sum.to(device), inside.batches
                inside = None
            watch.start()
            for batch in batch_iter:
                lr = set_lr(opt, lr_factor(training.schedule, epoch, training.epochs, step, total))
                loss = take_step(opt, make_closure(model, task, opt, batch, params, l2), params[0].dtype, lr,
                                 f"in epoch {epoch + 1}, step {step + 1}")
                loss_sum += loss
                stopping.check()  # a worker asked to stop: here, between steps, not inside a database write
                if step == 0:
                    explosion.start(float(loss))  # the loss at the initial parameters: one sync per run
                batches += 1
                step += 1
                if step % log_every == 0:
                    running = loss_sum.item() / batches  # a sync point: also where divergence is seen
                    explosion.check(running, epoch + 1, step)
                    cb.on_progress(step, epoch + 1, running)
                if eval_schedule and step % eval_schedule.every == 0:
                    watch.stop()
                    point = EvalPoint(step, step / steps_per_epoch, watch.total,
                                      evaluate(task, model, [eval_schedule.split], opt))
                    points.append(point)
                    if eval_schedule.stop(point):
                        result.stopped_early = True
                        break
                    watch.start()
                if checkpoints is not None and batches < steps_per_epoch and checkpoints.due():
                    watch.stop()  # off the clock
                    checkpoints.save({**checkpoint_state(epoch, step, gen, watch, explosion, result, points),
                                      "inside_epoch": {"batches": batches, "loss_sum": loss_sum.detach().cpu(),
                                                       "epoch_rng": epoch_rng, "epoch_start": epoch_start}},
                                     model, opt, task)
                    watch.start()
            watch.stop()
            train_loss = loss_sum.item() / max(1, batches)
            if not math.isfinite(train_loss):
                raise Diverged(f"diverged: loss {train_loss} in epoch {epoch + 1}")
            epoch_seconds = watch.total - epoch_start if batches == steps_per_epoch else None  # whole epochs only
            metrics = epoch_end_metrics(task, model, opt, training.eval_splits, train_loss, lr, step, watch.total,
                                        epoch_seconds)
            epoch_record = EpochRecord(epoch + 1, step, metrics)
            result.epochs.append(epoch_record)
            result.steps, result.train_seconds = step, watch.total
            cb.on_epoch_end(epoch_record)
            if result.stopped_early:
                break
            if checkpoints is not None and epoch + 1 < training.epochs:  # off the clock: the watch is stopped
                checkpoints.save(checkpoint_state(epoch + 1, step, gen, watch, explosion, result, points),
                                 model, opt, task)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the caller ends the run; `finally` fills in its time
        result.status = KILLED  # its checkpoint stays, for the run's resumption
        e.partial_result = result
        raise
    except StopTraining as e:
        result.stopped_early, result.reason = True, str(e)
    except Diverged as e:
        watch.stop()
        result.status, result.reason = DIVERGED, str(e)
    finally:
        if watch.running:
            watch.stop()
        result.steps, result.train_seconds = step, watch.total
        result.tags.update(getattr(opt, "tags", {}) or {})  # what the optimizer found out while training
    if checkpoints is not None:
        checkpoints.discard()
    result.model = model
    return result


def set_lr(opt, factor: float) -> float:
    """Every group's learning rate at `factor` times its initial one (the schedule); returns the first group's."""
    for g in opt.param_groups:
        g["lr"] = g["initial_lr"] * factor
    return opt.param_groups[0]["lr"]


def take_step(opt, closure, dtype, lr: float, where: str) -> torch.Tensor:
    """One optimizer step; an update that overflows the parameters' dtype (lr 1e300) or a method's own numbers
    going non-finite (adaptive K-FAC's model) end the run as diverged, `where` ("in epoch E, step S") saying when."""
    try:
        return opt.step(closure)
    except RuntimeError as e:
        if "overflow" not in str(e):
            raise
        raise Diverged(f"diverged: the update overflowed {dtype} at lr {lr:g} {where}") from None
    except NonFinite as e:
        raise Diverged(f"diverged: {e} {where}") from None


def epoch_end_metrics(task, model, opt, splits, train_loss: float, lr: float, step: int, train_seconds: float,
                      epoch_seconds: float | None) -> dict[str, float]:
    """An epoch's record: its loss, lr and the cumulative steps and seconds, its own seconds when it ran all its
    steps, what the method reports per epoch (adaptive K-FAC's damping), and the evaluation of `splits`."""
    metrics = {record.TRAIN_LOSS: train_loss, record.LR: lr, record.STEPS: step, record.TRAIN_SECONDS: train_seconds}
    if epoch_seconds is not None:
        metrics[record.EPOCH_SECONDS] = epoch_seconds
    if callable(getattr(opt, "epoch_metrics", None)):
        metrics.update(opt.epoch_metrics())
    metrics.update(evaluate(task, model, splits, opt))
    return metrics


def checkpoint_state(epochs_done: int, step: int, gen, watch, explosion, result, points) -> dict:
    """What the next epoch depends on besides the model and the optimizer (training/checkpoints.py)."""
    state = {"epoch": epochs_done, "step": step, "train_seconds": watch.total, "data_rng": gen.get_state(),
             "torch_rng": torch.get_rng_state(), "initial_loss": explosion.initial, "strikes": explosion.strikes,
             "epochs": list(result.epochs), "evaluations": list(points)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_rngs(saved: dict, gen) -> None:
    """The data generator and torch's generators as `checkpoint_state` saved them."""
    gen.set_state(saved["data_rng"])
    torch.set_rng_state(saved["torch_rng"])
    if "cuda_rng" in saved:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])


@dataclass
class InsideEpoch:
    """Where a checkpoint made between two steps of an epoch stands: the batches of the epoch done, their summed
    loss, the data generator's state when the epoch drew its order, the clock when the epoch began, and the whole
    checkpoint (its random generators are restored again after the done batches are drawn again)."""
    batches: int
    loss_sum: torch.Tensor
    epoch_rng: torch.Tensor
    epoch_start: float
    saved: dict


def resume(checkpoints, task, model, opt, gen, watch, explosion, result, points, cb,
           eval_schedule) -> tuple[int, InsideEpoch | None]:
    """Restore a checkpoint's run, if there is one, and replay its epochs and evaluations to the callbacks (a
    tracked run logs them again, a to-target run sees its earlier evaluations). Returns the steps done and, for a
    checkpoint made inside an epoch, where in it."""
    saved = checkpoints.load(model, opt, task)
    if saved is None:
        return 0, None
    restore_rngs(saved, gen)
    watch.total = saved["train_seconds"]
    explosion.initial, explosion.strikes = saved["initial_loss"], saved["strikes"]
    result.resumed_at_epoch, result.epochs = saved["epoch"], saved["epochs"]
    result.steps, result.train_seconds = saved["step"], watch.total
    for e in result.epochs:
        cb.on_epoch_end(e)
    for p in saved["evaluations"]:
        points.append(p)
        if eval_schedule is not None:
            eval_schedule.stop(p)
    result.resumed_at_step = saved["step"]
    inside = saved.get("inside_epoch")  # absent: saved at an epoch's end
    if inside is None:
        return saved["step"], None
    return saved["step"], InsideEpoch(inside["batches"], inside["loss_sum"], inside["epoch_rng"],
                                      inside["epoch_start"], saved)
