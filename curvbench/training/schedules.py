"""Learning-rate schedules, as multipliers of each parameter group's peak learning rate."""

from __future__ import annotations

import math


def cosine_epoch(epoch: int, epochs: int, min_lr: float = 0.0) -> float:
    """Thesis eq. (34): alpha_j = alpha_min + 1/2 (alpha_max - alpha_min)(1 + cos(j*pi/J)), j = 0..J-1.

    Returned as alpha_j / alpha_max, with alpha_min = min_lr * alpha_max."""
    return min_lr + 0.5 * (1.0 - min_lr) * (1.0 + math.cos(epoch * math.pi / epochs))


def cosine_step(step: int, total_steps: int, min_lr: float = 0.0, warmup_steps: int = 0) -> float:
    """Per-step cosine from the peak to min_lr over the steps after a linear warm-up (step counts from 0)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(step - warmup_steps, span)
    return min_lr + 0.5 * (1.0 - min_lr) * (1.0 + math.cos(t * math.pi / span))


def lr_factor(schedule, epoch: int, epochs: int, step: int, total_steps: int) -> float:
    """The multiplier for `schedule` (a recipe Schedule) at this epoch (from 0) and global step (from 0)."""
    if schedule.kind == "constant":
        return 1.0
    if schedule.kind == "cosine":
        return cosine_epoch(epoch, epochs, schedule.min_lr)
    if schedule.kind == "cosine-step":
        return cosine_step(step, total_steps, schedule.min_lr, schedule.warmup_steps)
    raise ValueError(f"unknown schedule {schedule.kind!r}")
