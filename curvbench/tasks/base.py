"""A loaded task: data resident on the training device, the model to build, its loss and its metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from curvbench.errors import CurvbenchError


def sample_labels(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One label per row drawn from softmax(logits), by the Gumbel-max trick: argmax(logits + Gumbel noise).

    Unlike torch.multinomial it never raises (NaN or infinite logits give some label, and the loss check then
    ends the run as diverged) and never waits for the device."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
    gumbel = -torch.log(-torch.log(u.clamp(min=1e-20)))
    return (logits.float() + gumbel).argmax(-1)


@dataclass
class Batch:
    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor | None = None  # True where a target is real (sequence tasks); None: all real


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.y.shape[0]

    def subset(self, idx: torch.Tensor) -> "Split":
        return Split(self.x[idx], self.y[idx])


class ClassificationTask:
    """Images and labels held as tensors on the device; batches come from a seeded permutation."""

    def __init__(self, name: str, model_name: str, metric: str, train: Split, test: Split, num_classes: int):
        self.name, self.model_name, self.metric = name, model_name, metric
        self.splits: dict[str, Split] = {"train": train, "test": test}
        self.num_classes = num_classes

    # ---- data
    def hold_out(self, fraction: float, seed: int = 0) -> None:
        """Move a seeded `fraction` of train into a validation split (the same for every run of the task)."""
        if fraction <= 0:
            return
        train = self.splits["train"]
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(train), generator=g).to(train.y.device)
        n_val = max(1, int(round(fraction * len(train))))
        if n_val >= len(train):
            raise CurvbenchError(f"training.validation {fraction:g}: holds out {n_val} of the {len(train)} training "
                                 f"examples, leaving none to train on")
        self.splits["val"] = train.subset(perm[:n_val])
        self.splits["train"] = train.subset(perm[n_val:])

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-len(self.splits["train"]) // batch_size)

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        train = self.splits["train"]
        perm = torch.randperm(len(train), generator=generator).to(train.y.device)
        for start in range(0, len(train), batch_size):
            idx = perm[start : start + batch_size]
            yield Batch(self.augment(train.x[idx], generator), train.y[idx])

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        data = self.splits[split]
        for start in range(0, len(data), batch_size):
            yield Batch(data.x[start : start + batch_size], data.y[start : start + batch_size])

    # ---- model and loss
    def build_model(self, needs: frozenset = frozenset()) -> torch.nn.Module:
        raise NotImplementedError

    def forward(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return model(batch.inputs)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(outputs, batch.targets)

    def fisher_loss(self, outputs: torch.Tensor, batch: Batch, generator: torch.Generator | None, empirical: bool):
        """Summed negative log-likelihood whose gradient gives per-sample Fisher gradients, and the sample count.

        True Fisher: targets are sampled from the model's own predictive distribution; empirical: the labels."""
        logits = outputs.detach()
        if empirical:
            targets = batch.targets
        else:
            targets = sample_labels(logits, generator)
        return F.cross_entropy(outputs, targets, reduction="sum"), targets.shape[0]

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, split: str, batch_size: int = 1000) -> dict[str, float]:
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros((), device=self.splits[split].y.device)
        correct = torch.zeros((), device=loss_sum.device, dtype=torch.long)
        for b in self.eval_batches(split, batch_size):
            out = self.forward(model, b).float()
            loss_sum += F.cross_entropy(out, b.targets, reduction="sum")
            correct += (out.argmax(-1) == b.targets).sum()
        model.train(was_training)
        n = len(self.splits[split])
        return {"loss": loss_sum.item() / n, "accuracy": correct.item() / n}
