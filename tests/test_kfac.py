"""K-FAC's factors against explicit expectations, and its update against a dense Kronecker solve."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import TinyTask, batch
from torch import nn

from curvbench.methods.kfac import KFAC

pytestmark = pytest.mark.usefixtures("float64")  # conftest: compare to 1e-9, not to float32 rounding


def mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))


def convnet():
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))


def per_sample_targets(model, b, empirical, generator_state):
    if empirical:
        return b.targets
    g = torch.Generator().set_state(generator_state)
    logits = model(b.inputs).detach()
    u = torch.rand(logits.shape, generator=g, dtype=torch.float32)  # Gumbel-max: argmax(logits + Gumbel noise)
    return (logits.float() - torch.log(-torch.log(u))).argmax(-1)


def explicit_mlp_factors(model, b, targets):
    """A_l = mean_i a_i a_i^T (a with a 1 appended), G_l = mean_i g_i g_i^T, one sample at a time."""
    lin1, lin2 = model[0], model[2]
    A = [torch.zeros(5, 5), torch.zeros(6, 6)]
    G = [torch.zeros(5, 5), torch.zeros(3, 3)]
    n = b.inputs.shape[0]
    for i in range(n):
        x = b.inputs[i : i + 1]
        s1 = lin1(x)
        h = torch.tanh(s1)
        s2 = lin2(h)
        loss = F.cross_entropy(s2, targets[i : i + 1], reduction="sum")
        g1, g2 = torch.autograd.grad(loss, [s1, s2])
        for l, (a, g) in enumerate(((x, g1), (h, g2))):
            a1 = torch.cat([a[0].detach(), torch.ones(1)])
            A[l] += torch.outer(a1, a1) / n
            G[l] += torch.outer(g[0], g[0]) / n
    return A, G


def explicit_conv_factors(model, b, targets):
    """KFC: patches at every position are samples of a; G = E_i[sum_t g_t g_t^T]."""
    conv, lin = model[0], model[3]
    n = b.inputs.shape[0]
    A = torch.zeros(2 * 9 + 1, 2 * 9 + 1)
    G = torch.zeros(3, 3)
    A2, G2 = torch.zeros(49, 49), torch.zeros(3, 3)
    for i in range(n):
        x = b.inputs[i : i + 1]
        s = conv(x)
        h = torch.tanh(s).flatten(1)
        out = lin(h)
        loss = F.cross_entropy(out, targets[i : i + 1], reduction="sum")
        gs, gout = torch.autograd.grad(loss, [s, out])
        xp = F.pad(x[0], (1, 1, 1, 1))
        for r in range(4):
            for c in range(4):
                a = torch.cat([xp[:, r : r + 3, c : c + 3].reshape(-1), torch.ones(1)])
                A += torch.outer(a, a) / (n * 16)
                G += torch.outer(gs[0, :, r, c], gs[0, :, r, c]) / n
        a2 = torch.cat([h[0].detach(), torch.ones(1)])
        A2 += torch.outer(a2, a2) / n
        G2 += torch.outer(gout[0], gout[0]) / n
    return [A, A2], [G, G2]


CASES = [
    (mlp, (4,), explicit_mlp_factors),
    (convnet, (2, 4, 4), explicit_conv_factors),
]


@pytest.mark.parametrize("fisher", ["empirical", "true"])
@pytest.mark.parametrize("make,features,explicit", CASES, ids=["mlp", "conv"])
def test_factors_equal_explicit_expectations(make, features, explicit, fisher):
    model = make()
    b = batch(12, features, 3, seed=5)
    opt = KFAC(model, TinyTask().fisher_loss, lr=0.1, momentum=0, kl_clip=None, factor_every=1,
               inverse_every=1, fisher=fisher)
    state = opt.generator.get_state()
    targets = per_sample_targets(model, b, fisher == "empirical", state)
    A, G = explicit(model, b, targets)
    opt.step(_closure(model, opt, b))
    assert len(opt.blocks) == 2
    for block, a, g in zip(opt.blocks, A, G):
        torch.testing.assert_close(block.A, a, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(block.G, g, rtol=1e-9, atol=1e-12)
    if fisher == "true":  # sampled targets differ from the labels somewhere, so this case is a real one
        assert not torch.equal(targets, b.targets)


def _closure(model, opt, b):
    from curvbench.training import engine

    return engine.make_closure(model, TinyTask(), opt, b, list(model.parameters()), 0.0)


@pytest.mark.parametrize("make,features", [(mlp, (4,)), (convnet, (2, 4, 4))], ids=["mlp", "conv"])
def test_update_is_the_damped_kronecker_inverse_applied_to_the_gradient(make, features):
    lr, damping = 0.3, 0.05
    model = make()
    b = batch(10, features, 3, seed=3)
    opt = KFAC(model, TinyTask().fisher_loss, lr=lr, momentum=0, damping=damping, kl_clip=None,
               factor_every=1, inverse_every=1, fisher="empirical")
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(b.inputs), b.targets)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    A, G = (explicit_mlp_factors if make is mlp else explicit_conv_factors)(model, b, b.targets)
    opt.step(_closure(model, opt, b))
    layers = [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]
    for l, layer in enumerate(layers):
        w_idx = 2 * l
        gw, gb = grads[w_idx], grads[w_idx + 1]
        V = torch.cat([gw.reshape(gw.shape[0], -1), gb[:, None]], dim=1)
        pi = math.sqrt((torch.trace(A[l]) / A[l].shape[0]) / (torch.trace(G[l]) / G[l].shape[0]))
        Ad = A[l] + pi * math.sqrt(damping) * torch.eye(A[l].shape[0])
        Gd = G[l] + math.sqrt(damping) / pi * torch.eye(G[l].shape[0])
        # row-major vec: vec(G^-1 V A^-1) = (G (x) A)^-1 vec(V) for symmetric A
        U = torch.linalg.solve(torch.kron(Gd, Ad), V.reshape(-1)).reshape(V.shape)
        new_w = before[w_idx] - lr * U[:, :-1].reshape(gw.shape)
        new_b = before[w_idx + 1] - lr * U[:, -1]
        torch.testing.assert_close(layer.weight.detach(), new_w, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(layer.bias.detach(), new_b, rtol=1e-8, atol=1e-10)


def test_kl_clipping_scales_the_update_to_the_bound():
    lr, kl = 0.5, 1e-6
    model, ref = mlp(), mlp()
    b = batch(10, (4,), 3, seed=4)
    clipped = KFAC(model, TinyTask().fisher_loss, lr=lr, momentum=0, kl_clip=kl, factor_every=1,
                   inverse_every=1, fisher="empirical")
    free = KFAC(ref, TinyTask().fisher_loss, lr=lr, momentum=0, kl_clip=None, factor_every=1,
                inverse_every=1, fisher="empirical")
    before = [p.detach().clone() for p in model.parameters()]
    g = torch.autograd.grad(F.cross_entropy(ref(b.inputs), b.targets), list(ref.parameters()))
    clipped.step(_closure(model, clipped, b))
    free.step(_closure(ref, free, b))
    steps_free = [(b0 - p.detach()) / lr for b0, p in zip(before, ref.parameters())]  # U
    vg = lr**2 * sum((u * gi).sum() for u, gi in zip(steps_free, g))
    nu = min(1.0, math.sqrt(kl / vg))
    assert nu < 1
    for b0, p, u in zip(before, model.parameters(), steps_free):
        torch.testing.assert_close(p.detach(), b0 - lr * nu * u, rtol=1e-8, atol=1e-12)


def test_factor_and_inverse_intervals_and_uncovered_params_are_tagged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3))
    opt = KFAC(model, TinyTask().fisher_loss, factor_every=3, inverse_every=6, fisher="empirical")
    assert opt.tags["kfac_plain_gradient"] == "1.weight, 1.bias"
    assert opt.tags["kfac_layers"] == "0:linear, 2:linear"
    seen_factors, seen_inverses = [], []
    for step in range(13):
        b = batch(8, (4,), 3, seed=step)
        a_before = None if opt.blocks[0].A is None else opt.blocks[0].A.clone()
        inv_before = None if opt.blocks[0].A_inv is None else opt.blocks[0].A_inv.clone()
        opt.step(_closure(model, opt, b))
        if a_before is None or not torch.equal(a_before, opt.blocks[0].A):
            seen_factors.append(step)
        if inv_before is None or not torch.equal(inv_before, opt.blocks[0].A_inv):
            seen_inverses.append(step)
    assert seen_factors == [0, 3, 6, 9, 12]
    assert seen_inverses == [0, 3, 6, 12]  # every factor update in the first interval, then every 6 steps


def test_sampled_labels_follow_the_softmax_distribution():
    from curvbench.tasks.base import sample_labels

    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5]]).expand(200_000, 4)
    labels = sample_labels(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(labels, minlength=4).double() / labels.numel()
    torch.testing.assert_close(freq, torch.softmax(logits[0].double(), 0), atol=4e-3, rtol=0)


def test_nan_logits_end_the_run_as_diverged_not_with_an_error():
    """K-FAC samples Fisher labels from the model; NaN logits must reach the divergence check, not raise."""
    from curvbench.methods import get
    from curvbench.recipe import loading as recipe
    from curvbench.recipe.loading import MethodEntry
    from curvbench.training import engine
    from curvbench.training.runner import load_task

    torch.set_default_dtype(torch.float32)  # a real task's float32 data and model
    r = recipe.parse({"task": "mnist-mini", "methods": ["kfac"], "training": {"epochs": 1, "log_every": 50}}, "t")
    task = load_task(r, torch.device("cpu"))
    entry = MethodEntry("kfac", "kfac", get("kfac").resolve({"lr": 1e4, "kl_clip": 0, "momentum": 0}))
    result = engine.train(task, entry, r.training, 0, torch.device("cpu"))
    assert result.status == engine.DIVERGED, result.reason
    assert "loss" in result.reason


def strided_convnet():
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=2, dilation=2), nn.Tanh(), nn.Flatten(),
                         nn.Linear(3 * 3 * 3, 3))


def explicit_reduce_factors(model, b, targets):
    """K-FAC-reduce, one sample and one position at a time: A = E_i[abar abar^T] with abar the mean of the
    sample's patches (a 1 appended), G = E_i[gsum gsum^T] with gsum the sum of its output gradients."""
    conv, lin = model[0], model[3]
    (s,), (d,), (p,) = conv.stride[:1], conv.dilation[:1], conv.padding[:1]
    n, k = b.inputs.shape[0], conv.kernel_size[0]
    A, G = torch.zeros(2 * 9 + 1, 2 * 9 + 1), torch.zeros(3, 3)
    A2, G2 = torch.zeros(lin.in_features + 1, lin.in_features + 1), torch.zeros(3, 3)
    for i in range(n):
        x = b.inputs[i : i + 1]
        out_conv = conv(x)
        h = torch.tanh(out_conv).flatten(1)
        out = lin(h)
        loss = F.cross_entropy(out, targets[i : i + 1], reduction="sum")
        gs, gout = torch.autograd.grad(loss, [out_conv, out])
        xp = F.pad(x[0], (p, p, p, p))
        positions = [(r, c) for r in range(out_conv.shape[2]) for c in range(out_conv.shape[3])]
        abar = torch.zeros(2 * 9)
        for r, c in positions:
            rows = [r * s + u * d for u in range(k)]
            cols = [c * s + v * d for v in range(k)]
            abar += xp[:, rows][:, :, cols].reshape(-1) / len(positions)
        a = torch.cat([abar, torch.ones(1)])
        gsum = gs[0].sum((1, 2))
        A += torch.outer(a, a) / n
        G += torch.outer(gsum, gsum) / n
        a2 = torch.cat([h[0].detach(), torch.ones(1)])
        A2 += torch.outer(a2, a2) / n
        G2 += torch.outer(gout[0], gout[0]) / n
    return [A, A2], [G, G2]


@pytest.mark.parametrize("make,features", [(convnet, (2, 4, 4)), (strided_convnet, (2, 6, 6))],
                         ids=["padded", "strided-dilated"])
def test_reduce_factors_and_three_updates_equal_a_dense_reference(make, features):
    """conv_factors=reduce over three steps: each step's factors against the explicit per-sample sums, their
    running averages (decay 0.9) and the update against a dense solve with the Kronecker product of the averaged,
    damped factors (momentum 0, inverses every step)."""
    lr, damping, decay = 0.2, 0.05, 0.9
    model = make()
    opt = KFAC(model, TinyTask().fisher_loss, lr=lr, momentum=0, damping=damping, kl_clip=None, factor_every=1,
               inverse_every=1, fisher="empirical", factor_decay=decay, conv_factors="reduce")
    assert [blk.kind for blk in opt.blocks] == ["conv2d-reduce", "linear"]
    avg_A = avg_G = None
    for step in range(3):
        b = batch(10, features, 3, seed=20 + step)
        before = [p.detach().clone() for p in model.parameters()]
        loss = F.cross_entropy(model(b.inputs), b.targets)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        A, G = explicit_reduce_factors(model, b, b.targets)
        if avg_A is None:
            avg_A, avg_G = A, G
        else:
            avg_A = [decay * old + (1 - decay) * new for old, new in zip(avg_A, A)]
            avg_G = [decay * old + (1 - decay) * new for old, new in zip(avg_G, G)]
        opt.step(_closure(model, opt, b))
        for block, a, g in zip(opt.blocks, avg_A, avg_G):
            torch.testing.assert_close(block.A, a, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(block.G, g, rtol=1e-9, atol=1e-12)
        for l, layer in enumerate(m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))):
            gw, gb = grads[2 * l], grads[2 * l + 1]
            V = torch.cat([gw.reshape(gw.shape[0], -1), gb[:, None]], dim=1)
            a, g = avg_A[l], avg_G[l]
            pi = math.sqrt((torch.trace(a) / a.shape[0]) / (torch.trace(g) / g.shape[0]))
            Ad = a + pi * math.sqrt(damping) * torch.eye(a.shape[0])
            Gd = g + math.sqrt(damping) / pi * torch.eye(g.shape[0])
            U = torch.linalg.solve(torch.kron(Gd, Ad), V.reshape(-1)).reshape(V.shape)
            torch.testing.assert_close(layer.weight.detach(), before[2 * l] - lr * U[:, :-1].reshape(gw.shape),
                                       rtol=1e-8, atol=1e-10)
            torch.testing.assert_close(layer.bias.detach(), before[2 * l + 1] - lr * U[:, -1], rtol=1e-8, atol=1e-10)


def test_reduce_and_expand_differ_on_a_conv_layer():
    """The two approximations are not the same matrix (the reduce test cannot pass on expand's factors)."""
    b = batch(10, (2, 4, 4), 3, seed=3)
    blocks = {}
    for approx in ("expand", "reduce"):
        model = convnet()
        opt = KFAC(model, TinyTask().fisher_loss, lr=0.1, momentum=0, kl_clip=None, factor_every=1,
                   inverse_every=1, fisher="empirical", conv_factors=approx)
        opt.step(_closure(model, opt, b))
        blocks[approx] = opt.blocks[0]
    assert not torch.allclose(blocks["expand"].A, blocks["reduce"].A)
    assert not torch.allclose(blocks["expand"].G, blocks["reduce"].G)


@pytest.mark.slow  # 8 s of tracing
def test_factors_and_updates_under_torch_compile_equal_the_eager_ones_over_several_steps():
    """A compiled model's layer outputs are outputs of its graph that the loss's backward does not pass through:
    K-FAC's hooks must keep them links of autograd (else every G but the last layer's is silently zero)."""
    b = batch(12, (2, 4, 4), 3, seed=4)
    runs = []
    for compiled in (False, True):
        model = convnet()
        opt = KFAC(model, TinyTask().fisher_loss, lr=0.2, momentum=0.9, kl_clip=None, factor_every=1,
                   inverse_every=2, fisher="empirical")
        forward = torch.compile(model, backend="aot_eager") if compiled else model  # AOTAutograd, no C++ build
        for _ in range(3):
            opt.step(_closure(forward, opt, b))
        runs.append((opt, model))
    (eager, eager_model), (comp, comp_model) = runs
    assert eager.blocks[0].G.abs().sum() > 0  # the conv layer's G: the one a traced hook would lose
    for be, bc in zip(eager.blocks, comp.blocks):
        torch.testing.assert_close(bc.A, be.A, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(bc.G, be.G, rtol=1e-9, atol=1e-12)
    for pe, pc in zip(eager_model.parameters(), comp_model.parameters()):
        torch.testing.assert_close(pc, pe, rtol=1e-9, atol=1e-12)


def test_a_factor_step_whose_layer_hooks_did_not_run_is_an_error_not_plain_sgd():
    """A forward that skips K-FAC's layer hooks (as a compiled graph traced for another instance of the model did)
    would leave K-FAC without factors, updating by the plain gradient: it must say so instead."""
    model = convnet()
    b = batch(6, (2, 4, 4), 3, seed=1)
    opt = KFAC(model, TinyTask().fisher_loss, lr=0.1, factor_every=2, inverse_every=2)
    opt.step(_closure(model, opt, b))  # hooks run: factors gathered
    for m in model.modules():
        m._forward_hooks.clear()  # what a graph traced without the hooks amounts to
    opt.step(_closure(model, opt, b))  # not a factor step: nothing to gather, no error
    with pytest.raises(RuntimeError, match="no layer it preconditions .* saw this forward pass"):
        opt.step(_closure(model, opt, b))
