"""Checkpoints at epoch ends and every few minutes inside an epoch, so that a run killed after hours (a session's
end, a reboot, Ctrl-C) resumes where it was instead of from scratch, losing at most those minutes: an epoch of
ResNet-18 on a 2-core CPU takes from half an hour (SGD) to hours (adaptive K-FAC on one thread).

A checkpoint holds what the next step depends on: the model's parameters and buffers, the whole optimizer
(whatever a method keeps: moments, K-FAC's factors and inverses, Shampoo's statistics and roots, adaptive K-FAC's
damping), the data order's and torch's random generators, the step count, the training seconds so far, the epoch
records and evaluations already made, and the divergence check's reference loss; one made inside an epoch also the
batches of the epoch done, their summed loss and the data generator's state when the epoch drew its order (the
resumed run draws that order again and skips the batches done). A resumed run therefore computes
the same numbers, bit for bit on the same machine, as one that was never stopped.

The optimizer is saved as its attribute dictionary, pickled with the model, its modules, parameters and buffers
and the task replaced by references to them; on load the references point at the fresh run's objects. This needs
no per-method state_dict and covers plugins and imported optimizer classes alike. A checkpoint is only used by
the run it was made for (its key: recipe, entry, seed and target) and is deleted when that run ends."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import time
import types
from pathlib import Path

import torch

FORMAT = 1
EVERY_SECONDS = 600.0  # inside an epoch, a checkpoint at the first step after this much wall time since the last


class _Pickler(pickle.Pickler):
    def __init__(self, f, refs: dict[int, tuple]):
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self.refs = refs

    def persistent_id(self, obj):
        return self.refs.get(id(obj))


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, objects: dict[tuple, object]):
        super().__init__(f)
        self.objects = objects

    def persistent_load(self, pid):
        try:
            return self.objects[tuple(pid)]
        except KeyError:
            raise ValueError(f"checkpoint refers to {pid[0]} {pid[1]!r}, which the model does not have") from None


def _references(model: torch.nn.Module, opt, task) -> dict[tuple, object]:
    """The live objects a checkpoint names instead of holding, as the fresh run builds them again: the task, the
    optimizer, the model's modules, parameters and buffers, the tensors the optimizer steps (Muon's 2-D stand-ins
    for conv kernels are not the model's) and the functions defined inside a method's builder (closures)."""
    objects: dict[tuple, object] = {("task", ""): task, ("optimizer", ""): opt}
    for name, module in model.named_modules(remove_duplicate=False):
        objects[("module", name)] = module
    for name, p in model.named_parameters(remove_duplicate=False):
        objects[("param", name)] = p
    for name, b in model.named_buffers(remove_duplicate=False):
        objects[("buffer", name)] = b
    for i, group in enumerate(getattr(opt, "param_groups", [])):
        for j, p in enumerate(group["params"]):
            objects[("stepped", f"{i}.{j}")] = p
    for n, f in enumerate(_local_functions(opt)):
        objects[("function", f"{f.__qualname__}#{n}")] = f
    return objects


def _local_functions(root) -> list:
    """Functions defined inside other functions, reachable from `root`'s attributes, in a fixed order."""
    found, seen, todo = [], set(), [root]
    while todo:
        obj = todo.pop(0)
        if id(obj) in seen or isinstance(obj, (torch.Tensor, torch.nn.Module, type)):
            continue
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            if "<locals>" in obj.__qualname__:
                found.append(obj)
        elif isinstance(obj, dict):
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            todo.extend(obj)
        elif hasattr(obj, "__dict__") and not callable(obj):
            todo.extend(vars(obj).values())
    return found


def pack_optimizer(opt, model, task) -> bytes:
    refs: dict[int, tuple] = {}
    for key, obj in _references(model, opt, task).items():
        refs.setdefault(id(obj), key)  # a model parameter the optimizer steps is named as the model's
    buf = io.BytesIO()
    _Pickler(buf, refs).dump(dict(vars(opt)))
    return buf.getvalue()


def unpack_optimizer(data: bytes, opt, model, task) -> None:
    attrs = _Unpickler(io.BytesIO(data), _references(model, opt, task)).load()
    done: dict[int, object] = {}
    for k, v in attrs.items():
        vars(opt)[k] = _merge(vars(opt).get(k), v, done)


def _merge(fresh, saved, done: dict[int, object]):
    """`saved` poured into `fresh` where both are the same kind of container or object, so that what the fresh
    run's hooks and closures hold (K-FAC's forward hooks hold their layer's block) is what the optimizer uses;
    anything else (tensors, numbers) is taken from `saved`. Returns what the holder of `fresh` should hold; an
    object saved once and held in two places (SAM's state is its base optimizer's) stays one object."""
    if id(saved) in done:
        return done[id(saved)]
    if fresh is None or saved is fresh or type(fresh) is not type(saved) or not (
            isinstance(saved, (torch.Generator, list, dict)) or _plain_object(saved)):
        return saved
    done[id(saved)] = fresh  # before its contents: cycles (K-FAC's LSTM block knows its optimizer) end here
    if isinstance(saved, torch.Generator):
        fresh.set_state(saved.get_state())
    elif isinstance(saved, list) and len(fresh) == len(saved):
        fresh[:] = [_merge(f, s, done) for f, s in zip(fresh, saved)]
    elif isinstance(saved, dict):
        merged = {k: _merge(fresh.get(k), v, done) for k, v in saved.items()}
        fresh.clear()
        fresh.update(merged)
    elif isinstance(saved, list):  # another length: nothing of the fresh one to keep
        done[id(saved)] = saved
        return saved
    else:
        for k, v in vars(saved).items():
            vars(fresh)[k] = _merge(vars(fresh).get(k), v, done)
    return fresh


def _plain_object(obj) -> bool:
    """An instance with attributes of its own (an optimizer, a layer block), not a tensor, module or function."""
    return hasattr(obj, "__dict__") and not isinstance(obj, (torch.Tensor, torch.nn.Module, type)) and not callable(obj)


def key_of(*parts) -> str:
    """A file name for one run's checkpoint: a digest of what identifies the run."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]


class Checkpoints:
    """One run's checkpoint file in `folder`, written atomically (a killed write leaves the last one intact).
    `every_seconds`: how often a checkpoint is due inside an epoch (None: at epoch ends only)."""

    def __init__(self, folder: str | os.PathLike, key: str, every_seconds: float | None = EVERY_SECONDS):
        self.path = Path(folder) / f"{key}.pt"
        self.every_seconds = every_seconds
        self._last = time.monotonic()

    def due(self) -> bool:
        """Whether `every_seconds` of wall time have passed since the last save (or since this run began)."""
        return self.every_seconds is not None and time.monotonic() - self._last >= self.every_seconds

    def save(self, state: dict, model, opt, task) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, **state, "model": model.state_dict(),
                   "optimizer": pack_optimizer(opt, model, task)}
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        try:
            torch.save(payload, tmp)
            os.replace(tmp, self.path)
        finally:  # Ctrl-C or SIGTERM inside the write: the last checkpoint stays, the partial file goes
            tmp.unlink(missing_ok=True)
        self._last = time.monotonic()

    def load(self, model, opt, task) -> dict | None:
        """The saved state with the model and optimizer restored from it; None when there is no checkpoint."""
        if not self.path.is_file():
            return None
        from curvbench.errors import CurvbenchError

        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=False)
            if payload.get("format") != FORMAT:
                raise ValueError(f"format {payload.get('format')}, expected {FORMAT}")
            model.load_state_dict(payload.pop("model"))
            unpack_optimizer(payload.pop("optimizer"), opt, model, task)
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file: named, never half-used
            raise CurvbenchError(f"checkpoint {self.path}: cannot be resumed from ({e.__class__.__name__}: "
                                 f"{' '.join(str(e).split())[:160]}); delete it to start this run afresh") from None
        return payload

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
