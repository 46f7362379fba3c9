"""Adaptive K-FAC's quadratic model against dense computations on tiny problems: the curvature products against a
Gauss-Newton matrix built from per-sample Jacobians, the (alpha, mu) solve against a numerical minimisation of
the dense model, the damping rule step by step, and an exact quadratic, where the model is the objective."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TinyTask, batch
from scipy.optimize import minimize
from torch import nn

from curvbench.methods.kfac_adaptive import AdaptiveKFAC
from curvbench.tasks.base import Batch
from curvbench.training import engine

pytestmark = pytest.mark.usefixtures("float64")  # conftest: compare to 1e-9, not to float32 rounding


def mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def dense_gauss_newton(model, b: Batch) -> torch.Tensor:
    """(1/n) sum_i J_i^T H_i J_i: J_i the Jacobian of sample i's logits, H_i = diag(p_i) - p_i p_i^T."""
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in params]
    theta = flat([p.detach() for p in params])

    def logits(vec, x):
        tensors, i = [], 0
        for s in shapes:
            k = math.prod(s)
            tensors.append(vec[i : i + k].reshape(s))
            i += k
        return torch.func.functional_call(model, dict(zip(names, tensors)), (x.unsqueeze(0),))[0]

    total = torch.zeros(theta.numel(), theta.numel())
    for x in b.inputs:
        J = torch.autograd.functional.jacobian(lambda v: logits(v, x), theta)  # (classes, params)
        p = torch.softmax(logits(theta, x), -1).detach()
        H = torch.diag(p) - torch.outer(p, p)
        total += J.T @ H @ J
    return total / len(b.inputs)


def optimizer(model, **kw):
    return AdaptiveKFAC(model, TinyTask(), seed=0, **kw)


def test_curvature_products_equal_a_dense_gauss_newton_built_from_per_sample_jacobians():
    model, b = mlp(), batch(7, 4, 3, seed=3)
    opt = optimizer(model)
    opt.batch = b
    g = torch.Generator().manual_seed(5)
    vs = [[torch.randn(p.shape, generator=g) for p in model.parameters()] for _ in range(3)]
    got = opt.curvature_matrix(vs)
    C = dense_gauss_newton(model, b)
    expected = torch.stack([torch.stack([flat(v) @ C @ flat(w) for w in vs]) for v in vs])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def watch_solves(opt, model):
    """Record, at every solve, what a dense computation needs: the gradient, Delta, delta_0, lam, the batch's
    dense Gauss-Newton matrix, and the solve's answer."""
    seen = []
    solve = opt.solve

    def watched(grad, direction, previous):
        alpha, mu, m, b = solve(grad, direction, previous)
        seen.append(dict(grad=flat(grad), delta=flat(direction), prev=None if previous is None else flat(previous),
                         lam=opt.lam, C=dense_gauss_newton(model, opt.batch), alpha=alpha, mu=mu))
        return alpha, mu, m, b

    opt.solve = watched
    return seen


def steps(opt, model, n, l2=0.0, seed=0):
    params = list(model.parameters())
    for i in range(n):
        b = batch(16, 4, 3, seed=seed + i)
        opt.step(engine.make_closure(model, TinyTask(), opt, b, params, l2))


@pytest.mark.parametrize("momentum", ["qmodel", "none"])
def test_alpha_and_mu_minimise_the_dense_quadratic_model_over_several_steps(momentum):
    model = mlp()
    l2 = 1e-3
    opt = optimizer(model, weight_decay=l2, initial_damping=0.5, factor_every=2, inverse_every=3, damping_every=2,
                    momentum=momentum, gamma_every=4)
    seen = watch_solves(opt, model)
    steps(opt, model, 6, l2)
    assert len(seen) >= 6 and seen[0]["prev"] is None and seen[0]["mu"] == 0.0
    for s in seen:
        C = (s["C"] + (s["lam"] + 2 * l2) * torch.eye(len(s["grad"]))).numpy()
        g, d = s["grad"].numpy(), s["delta"].numpy()
        prev = np.zeros_like(d) if s["prev"] is None else s["prev"].numpy()

        def model_value(c):
            step = c[0] * d + c[1] * prev
            return 0.5 * step @ C @ step + g @ step

        basis = np.stack([d, prev], 1) if s["prev"] is not None else d[:, None]
        exact = -np.linalg.solve(basis.T @ C @ basis, basis.T @ g)  # the dense model's stationary point
        assert s["alpha"] == pytest.approx(exact[0], rel=1e-8)
        if s["prev"] is not None:
            assert s["mu"] == pytest.approx(exact[1], rel=1e-8)
        got = np.array([s["alpha"], s["mu"]])
        found = minimize(model_value, np.zeros(2), method="BFGS").x  # and a minimum, found by a search
        assert model_value(got) <= model_value(found) + 1e-12
    if momentum == "qmodel":
        assert any(s["mu"] != 0 for s in seen[1:])  # momentum was used
    else:
        assert all(s["prev"] is None and s["mu"] == 0.0 for s in seen)


def test_damping_follows_the_levenberg_marquardt_rule_step_by_step():
    model = mlp()
    opt = optimizer(model, initial_damping=1e-3, damping_every=2, factor_every=1, inverse_every=1, gamma_every=4)
    lams, rhos = [opt.lam], []
    params = list(model.parameters())
    for i in range(12):
        b = batch(16, 4, 3, seed=i)
        theta = [p.detach().clone() for p in params]
        opt.step(engine.make_closure(model, TinyTask(), opt, b, params, 0.0))
        lams.append(opt.lam)
        rho = opt.history[-1]["rho"]
        if rho is not None:  # independently: the loss change on this batch over the model's predicted change
            with torch.no_grad():
                before = F.cross_entropy(torch.func.functional_call(model, dict(zip(
                    [n for n, _ in model.named_parameters()], theta)), (b.inputs,)), b.targets)
                after = F.cross_entropy(model(b.inputs), b.targets)
            delta = flat([p.detach() - t for p, t in zip(params, theta)])
            coef = torch.tensor([opt.alpha, opt.mu][: len(opt.b)])
            predicted = float(0.5 * coef @ opt.m @ coef + coef @ opt.b)
            assert rho == pytest.approx(float(after - before) / predicted, rel=1e-9)
            assert delta.norm() > 0
        rhos.append(rho)
    omega = (19 / 20) ** 2
    branches = set()
    for k, rho in enumerate(rhos):
        if rho is None:
            assert lams[k + 1] == lams[k]
        elif rho > 0.75:
            assert lams[k + 1] == pytest.approx(lams[k] * omega)
            branches.add("down")
        elif rho < 0.25:
            assert lams[k + 1] == pytest.approx(lams[k] / omega)
            branches.add("up")
        else:
            assert lams[k + 1] == lams[k]
            branches.add("hold")
    assert sum(r is not None for r in rhos) == 6 and branches == {"down", "up", "hold"}


class Regression:
    """Least squares with one output: loss 1/2 mean (f(x) - y)^2, whose Gauss-Newton matrix is its Hessian."""

    forward = staticmethod(lambda model, b: model(b.inputs))

    @staticmethod
    def loss(outputs, b):
        return 0.5 * ((outputs.squeeze(-1) - b.targets) ** 2).mean()

    @staticmethod
    def fisher_loss(outputs, b, generator, empirical):
        noise = torch.randn(outputs.shape, generator=generator, dtype=outputs.dtype)
        targets = b.targets.unsqueeze(-1) if empirical else outputs.detach() + noise
        return 0.5 * ((outputs - targets) ** 2).sum(), outputs.shape[0]


def test_an_exact_quadratic_model_gives_rho_one_and_the_minimiser_in_one_step():
    """One output: K-FAC's G is a scalar, so its proposal is the Newton direction up to scale, and the model,
    with its damping near 0, is the objective itself."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 + 0.1 * torch.randn(40, generator=g)
    b = Batch(x, y)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = AdaptiveKFAC(model, Regression(), initial_damping=1e-20, min_damping=1e-22, damping_every=1, seed=0)
    opt.step(engine.make_closure(model, Regression(), opt, b, list(model.parameters()), 0.0))
    design = torch.cat([x, torch.ones(40, 1)], 1)
    solution = torch.linalg.lstsq(design, y.unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(torch.cat([model.weight.detach()[0], model.bias.detach()]), solution,
                               rtol=1e-8, atol=1e-8)
    assert opt.history[0]["rho"] == pytest.approx(1.0, abs=1e-8)


def test_greedy_gamma_keeps_the_candidate_whose_update_the_model_rates_best():
    model = mlp()
    opt = optimizer(model, initial_damping=1e-2, gamma_every=3, factor_every=1, inverse_every=50)
    tried = []
    solve = opt.solve

    def watched(grad, direction, previous):
        alpha, mu, m, b = solve(grad, direction, previous)
        c = torch.tensor([alpha, mu][: len(b)])
        tried.append((opt.steps, opt.damping, float(0.5 * c @ m @ c + c @ b)))
        return alpha, mu, m, b

    opt.solve = watched
    gammas = []
    params = list(model.parameters())
    for i in range(7):
        opt.step(engine.make_closure(model, TinyTask(), opt, batch(16, 4, 3, seed=i), params, 0.0))
        gammas.append(opt.damping)
    omega2 = (19 / 20) ** 1.5
    for step in (3, 6):  # greedy steps: three candidates, gamma^2 * omega2^(-2, 0, 2) around the last one
        candidates = [(g, v) for s, g, v in tried if s == step]
        assert len(candidates) == 3
        last = gammas[step - 1]
        assert sorted(g for g, _ in candidates) == pytest.approx(sorted([last * omega2**2, last, last / omega2**2]))
        assert gammas[step] == min(candidates, key=lambda gv: gv[1])[0]
    assert all(len([t for t in tried if t[0] == s]) == 1 for s in (1, 2, 4, 5))  # one solve on the other steps
    assert len(set(gammas)) > 1  # gamma moved


def test_alpha_every_k_steps_is_reused_between_solves_and_never_makes_a_longer_step():
    model = mlp()
    opt = optimizer(model, initial_damping=1e-2, qmodel_every=3, factor_every=1, inverse_every=1, gamma_every=6)
    seen = watch_solves(opt, model)
    params = list(model.parameters())
    lengths, alphas = [], []
    for i in range(7):
        before = [p.detach().clone() for p in params]
        opt.step(engine.make_closure(model, TinyTask(), opt, batch(16, 4, 3, seed=i), params, 0.0))
        lengths.append(float(flat([p.detach() - b for p, b in zip(params, before)]).norm()))
        alphas.append(opt.alpha)
    assert len(seen) == 3 + 2  # solves at steps 0, 3, 6, two more candidates at the greedy step 6
    assert alphas[0] == alphas[1] == alphas[2] and alphas[3] == alphas[4] == alphas[5]
    for solved, reused in ((0, (1, 2)), (3, (4, 5))):
        assert all(lengths[k] <= lengths[solved] * (1 + 1e-9) for k in reused)


def conv_bn():
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 3))


def dense_gauss_newton_of_the_batch(model, b: Batch) -> torch.Tensor:
    """J^T H J for the training-mode network, whose batch norm couples the samples: J the Jacobian of all the
    batch's logits at once, H block-diagonal with diag(p_i) - p_i p_i^T over n. Buffers are copies: this leaves
    the model's running statistics alone."""
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in params]
    theta = flat([p.detach() for p in params])

    def logits(vec):
        tensors, i = [], 0
        for s in shapes:
            k = math.prod(s)
            tensors.append(vec[i : i + k].reshape(s))
            i += k
        buffers = {n: t.clone() for n, t in model.named_buffers()}
        return torch.func.functional_call(model, {**dict(zip(names, tensors)), **buffers}, (b.inputs,))

    out = logits(theta).detach()
    J = torch.autograd.functional.jacobian(lambda v: logits(v).reshape(-1), theta)  # (n * classes, params)
    n, c = out.shape
    H = torch.zeros(n * c, n * c)
    for i, p in enumerate(torch.softmax(out, -1)):
        H[i * c:(i + 1) * c, i * c:(i + 1) * c] = (torch.diag(p) - torch.outer(p, p)) / n
    return J.T @ H @ J


def test_batch_norm_networks_step_with_the_dense_model_and_running_statistics_updated_once_per_step():
    """A conv + BatchNorm net in training mode over several steps: alpha minimises the dense quadratic model of
    the batch-coupled network, and after each step the running statistics are exactly those one training-mode
    forward pass of the batch would leave (the extra passes of the model and of the damping rule change none)."""
    import copy

    model = conv_bn()
    l2 = 1e-3
    opt = AdaptiveKFAC(model, TinyTask(), weight_decay=l2, initial_damping=0.5, damping_every=1, factor_every=1,
                       inverse_every=2, gamma_every=3, seed=0)
    seen = []
    solve = opt.solve

    def watched(grad, direction, previous):
        alpha, mu, m, b = solve(grad, direction, previous)
        seen.append(dict(grad=flat(grad), delta=flat(direction), lam=opt.lam, alpha=alpha,
                         C=dense_gauss_newton_of_the_batch(model, opt.batch)))
        return alpha, mu, m, b

    opt.solve = watched
    params = list(model.parameters())
    for i in range(5):
        b = batch(8, (2, 4, 4), 3, seed=10 + i)
        reference = copy.deepcopy(model)  # the statistics one plain training pass leaves
        reference.train()
        with torch.no_grad():
            reference(b.inputs)
        opt.step(engine.make_closure(model, TinyTask(), opt, b, params, l2))
        for (name, got), (_, want) in zip(model.named_buffers(), reference.named_buffers()):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=name)
    assert int(model[1].num_batches_tracked) == 5
    assert sum(h["rho"] is not None for h in opt.history) == 5  # the damping rule's pass ran every step
    assert len(seen) >= 5
    for s in seen:
        C = s["C"] + (s["lam"] + 2 * l2) * torch.eye(len(s["grad"]))
        exact = -float(s["delta"] @ s["grad"]) / float(s["delta"] @ C @ s["delta"])
        assert s["alpha"] == pytest.approx(exact, rel=1e-8)


def test_steps_in_a_fresh_process_raise_no_future_warning_of_pytorchs_own_jit_script_use():
    """Forward-mode AD's first use in a process loads PyTorch's jvp decompositions, which warn that PyTorch itself
    calls torch.jit.script (a FutureWarning in every adaptive K-FAC run's log, naming nothing of the user's). A fresh
    process, where that first load happens, takes three steps with FutureWarnings turned into errors."""
    import subprocess
    import sys
    from pathlib import Path

    script = """
import torch
from torch import nn
from helpers import TinyTask, batch
from curvbench.methods.kfac_adaptive import AdaptiveKFAC
from curvbench.training import engine
torch.manual_seed(2)
model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 3))
opt = AdaptiveKFAC(model, TinyTask(), seed=0)
params = list(model.parameters())
for i in range(3):
    opt.step(engine.make_closure(model, TinyTask(), opt, batch(8, (2, 4, 4), 3, seed=i), params, 0.0))
print(len(opt.history))
"""
    tests = Path(__file__).parent
    r = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", script], cwd=tests, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[-1] == "3"  # three quadratic-model steps were taken


def test_the_jvp_quieting_hides_only_pytorchs_jit_script_notice():
    import warnings

    from curvbench.methods.kfac_adaptive import _quiet_jvp_decompositions

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _quiet_jvp_decompositions():
            warnings.warn("`torch.jit.script` is deprecated. Please switch to `torch.compile`.", FutureWarning)
            warnings.warn("another notice", FutureWarning)
            warnings.warn("`torch.jit.script` is deprecated, said as another kind", UserWarning)
    assert [(w.category, str(w.message)[:17]) for w in caught] == [
        (FutureWarning, "another notice"), (UserWarning, "`torch.jit.script")]


def test_steps_leave_the_warning_filters_alone_so_a_once_shown_warning_stays_once_shown():
    """Changing the warning filters resets every module's record of warnings already shown, so quieting the jvp
    passes at every step would repeat, every step, a warning that the user's model raises once: here a model
    whose forward warns is stepped three times (several forward passes a step) and the warning is shown once."""
    import warnings

    class Warns(nn.Module):
        def forward(self, x):
            warnings.warn("this model warns at every forward", UserWarning)
            return x

    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), Warns(),
                          nn.Linear(48, 3))
    opt = AdaptiveKFAC(model, TinyTask(), seed=0)
    params = list(model.parameters())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for i in range(3):
            opt.step(engine.make_closure(model, TinyTask(), opt, batch(8, (2, 4, 4), 3, seed=i), params, 0.0))
    assert len(opt.history) == 3
    assert [str(w.message) for w in caught if w.category is UserWarning] == ["this model warns at every forward"]
