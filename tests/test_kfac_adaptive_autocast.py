"""Adaptive K-FAC under bf16 autocast, as CIFAR-10 runs on a CPU with bf16 instructions: on a net whose batch norm
feeds a convolution (ResNet's pattern), its forward-mode curvature pass runs (the normalisation layers' float32
tangents of bf16 outputs once made the next convolution refuse its input), and the quadratic model it solves is
the dense one of the batch, to bf16's precision, over several steps. In float32: autocast leaves float64 alone."""

import copy

import pytest
import torch
from helpers import TinyTask, batch
from test_kfac_adaptive import dense_gauss_newton_of_the_batch, flat
from torch import nn

from curvbench.methods.kfac_adaptive import AdaptiveKFAC
from curvbench.training import engine


class AutocastTask(TinyTask):
    """The forward pass in bf16 autocast with float32 outputs, as the CIFAR-10 task computes it."""

    @staticmethod
    def forward(model, b):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(b.inputs)
        return out.float()


def conv_bn_conv():
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1),
                         nn.GroupNorm(1, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))


def test_bf16_autocast_steps_solve_the_dense_model_and_update_running_statistics_once():
    model, task, l2 = conv_bn_conv(), AutocastTask(), 1e-3
    opt = AdaptiveKFAC(model, task, weight_decay=l2, initial_damping=0.5, damping_every=1, factor_every=1,
                       inverse_every=2, gamma_every=3, seed=0)
    seen, solve = [], opt.solve

    def watched(grad, direction, previous):
        alpha, mu, m, b = solve(grad, direction, previous)
        seen.append(dict(grad=flat(grad), delta=flat(direction), lam=opt.lam, alpha=alpha, m=float(m[0, 0]),
                         C=dense_gauss_newton_of_the_batch(model, opt.batch)))  # float32, no autocast
        return alpha, mu, m, b

    opt.solve = watched
    params = list(model.parameters())
    for i in range(5):
        b = batch(8, (2, 4, 4), 3, seed=20 + i)
        reference = copy.deepcopy(model)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            reference(b.inputs)  # the statistics one training pass in bf16 leaves
        opt.step(engine.make_closure(model, task, opt, b, params, l2))
        for (name, got), (_, want) in zip(model.named_buffers(), reference.named_buffers()):
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)
    assert int(model[1].num_batches_tracked) == 5
    assert len(seen) >= 5
    for s in seen:
        dCd = float(s["delta"] @ s["C"] @ s["delta"])
        damped = dCd + (s["lam"] + 2 * l2) * float(s["delta"] @ s["delta"])
        assert s["m"] == pytest.approx(damped, rel=0.02)  # delta^T (C + (lam + eta) I) delta, bf16 against float32
        assert s["alpha"] == pytest.approx(-float(s["delta"] @ s["grad"]) / damped, rel=0.02)
