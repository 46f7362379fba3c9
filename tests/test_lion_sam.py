"""Lion and SAM against their equations, computed independently on tiny problems."""

import numpy as np
import pytest
import torch
from helpers import batch, one_step
from torch import nn

from curvbench.methods.lion import Lion
from curvbench.methods.sam import SAM


def test_lion_matches_eqs_31_to_33_over_several_steps():
    lr, b1, b2, wd = 0.01, 0.9, 0.99, 0.1
    theta0 = np.array([0.5, -1.0, 2.0, 0.0, 0.3])
    grads = [np.array([0.2, -0.1, 0.0, 0.4, -0.3]), np.array([-0.5, -0.1, 0.2, 0.1, 0.01]),
             np.array([0.3, 0.3, -0.2, -0.6, 0.02]), np.array([0.01, -0.02, 0.03, -0.04, 0.05])]
    # by hand, eq. (31)-(33)
    theta, m = theta0.copy(), np.zeros(5)
    for g in grads:
        c = b1 * m + (1 - b1) * g
        theta = theta - lr * (np.sign(c) + wd * theta)
        m = b2 * m + (1 - b2) * g
    p = torch.nn.Parameter(torch.tensor(theta0, dtype=torch.float64))
    opt = Lion([p], lr=lr, betas=(b1, b2), weight_decay=wd)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(p.detach().numpy(), theta, rtol=0, atol=1e-12)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_perturbation_and_the_gradient_it_applies(adaptive):
    rho, lr = 0.2, 0.1
    model = _mlp()
    ref = _mlp()
    b = batch(16, 4, 3)
    theta = [p.detach().clone() for p in ref.parameters()]
    # independent computation: g at theta, eps_hat, g at theta + eps_hat
    loss = nn.functional.cross_entropy(ref(b.inputs), b.targets)
    g = torch.autograd.grad(loss, list(ref.parameters()))
    if adaptive:
        # the authors' code rescales the parameters named weight only; biases keep T = 1
        t = [th.abs() + 0.01 if n.endswith("weight") else torch.ones_like(th)
             for (n, _), th in zip(ref.named_parameters(), theta)]
        norm = torch.sqrt(sum(((ti * gi) ** 2).sum() for ti, gi in zip(t, g)))
        eps = [rho * ti * ti * gi / norm for ti, gi in zip(t, g)]
    else:
        norm = torch.sqrt(sum((gi**2).sum() for gi in g))
        eps = [rho * gi / norm for gi in g]
    with torch.no_grad():
        for p, e in zip(ref.parameters(), eps):
            p.add_(e)
    g_sam = torch.autograd.grad(nn.functional.cross_entropy(ref(b.inputs), b.targets), list(ref.parameters()))
    expected = [th - lr * gs for th, gs in zip(theta, g_sam)]

    opt = SAM(model, torch.optim.SGD(model.parameters(), lr=lr), rho=rho, adaptive=adaptive)
    # the perturbation the optimizer computes from the first-pass gradient
    model.zero_grad()
    nn.functional.cross_entropy(model(b.inputs), b.targets).backward()
    for e_impl, e_ref in zip(opt.perturbation(list(model.parameters())), eps):
        torch.testing.assert_close(e_impl, e_ref, rtol=1e-5, atol=1e-7)
    if not adaptive:
        total = torch.sqrt(sum((e**2).sum() for e in eps))
        assert total.item() == pytest.approx(rho, rel=1e-5)
    one_step(model, opt, b)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-7)


def test_sam_second_pass_leaves_batchnorm_statistics_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    b = batch(32, 4, 3)
    bn = model[1]
    # what one forward pass at theta does to the running statistics
    ref = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    ref.load_state_dict(model.state_dict())
    ref.train()
    ref(b.inputs)
    opt = SAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5)
    model.train()
    one_step(model, opt, b)
    torch.testing.assert_close(bn.running_mean, ref[1].running_mean)
    torch.testing.assert_close(bn.running_var, ref[1].running_var)
    assert bn.num_batches_tracked.item() == 1
    assert bn.track_running_stats


@pytest.mark.parametrize("inside", [False, True])
def test_sam_with_l2_over_several_steps(inside):
    """Three steps of SAM with coupled L2 and a momentum base, against a hand-written loop. Thesis eq. (22)
    (inside=False): eps from grad L alone, update gradient grad L(theta + eps) + 2*lambda*theta. inside=True:
    SAM of L + lambda*||theta||^2, both gradients of the regularised objective."""
    from helpers import TinyTask

    from curvbench.methods import get
    from curvbench.recipe.loading import MethodEntry
    from curvbench.training import engine

    rho, lr, lam, mom = 0.1, 0.05, 0.01, 0.9
    batches = [batch(16, 4, 3, seed=s) for s in range(3)]
    ref = _mlp()
    theta = [p.detach().clone() for p in ref.parameters()]
    buf = [torch.zeros_like(t) for t in theta]

    def grad_at(params, b, with_l2):
        params = [p.detach().clone().requires_grad_(True) for p in params]
        out = torch.func.functional_call(ref, dict(zip([n for n, _ in ref.named_parameters()], params)), (b.inputs,))
        loss = nn.functional.cross_entropy(out, b.targets)
        if with_l2:
            loss = loss + lam * sum((p**2).sum() for p in params)
        return torch.autograd.grad(loss, params)

    for b in batches:
        g = grad_at(theta, b, inside)
        norm = torch.sqrt(sum((gi**2).sum() for gi in g))
        perturbed = [t + rho * gi / norm for t, gi in zip(theta, g)]
        g_sam = grad_at(perturbed, b, inside)
        if not inside:
            g_sam = [gs + 2 * lam * t for gs, t in zip(g_sam, theta)]
        buf = [mom * m + gs for m, gs in zip(buf, g_sam)]
        theta = [t - lr * m for t, m in zip(theta, buf)]

    model = _mlp()
    entry = MethodEntry("sam", "sam", get("sam").resolve(
        {"lr": lr, "rho": rho, "momentum": mom, "weight_decay": lam, "l2_in_perturbation": inside}))
    opt, l2 = engine.build_optimizer(TinyTask(), model, entry, 10, 1, 0)
    assert l2 == 0.0  # SAM adds the L2 gradient itself, where eq. (22) says
    params = list(model.parameters())
    for b in batches:
        opt.step(engine.make_closure(model, TinyTask(), opt, b, params, l2))
    for p, e in zip(model.parameters(), theta):
        torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-6)


def test_rho_defaults_to_each_variants_authors_choice():
    from helpers import TinyTask

    from curvbench.methods import get
    from curvbench.recipe.loading import MethodEntry
    from curvbench.training import engine

    for adaptive, rho in ((False, 0.05), (True, 0.5)):
        entry = MethodEntry("sam", "sam", get("sam").resolve({"adaptive": adaptive}))
        opt, _ = engine.build_optimizer(TinyTask(), _mlp(), entry, 10, 1, 0)
        assert opt.rho == rho and opt.adaptive is adaptive
