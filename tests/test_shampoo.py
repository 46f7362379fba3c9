"""Shampoo against the paper's formulas, computed independently with scipy's fractional matrix power."""

import numpy as np
import pytest
import torch
from scipy.linalg import fractional_matrix_power

from curvbench.methods.shampoo import Shampoo, ShampooConfig, block_slices

PAPER = dict(epsilon=1e-3, precondition_frequency=1, start_preconditioning_step=1, grafting="none", beta2=1.0)


def mpow(h, p):
    return np.real(fractional_matrix_power(h, p))


def run(shape, grads, lr=0.1, **cfg):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(shape, dtype=torch.float64))
    start = p.detach().clone().numpy()
    opt = Shampoo([p], lr=lr, config=ShampooConfig(**{**PAPER, **cfg}))
    updates = []
    for g in grads:
        before = p.detach().clone().numpy()
        p.grad = torch.tensor(g)
        opt.step()
        updates.append((before - p.detach().numpy()) / lr)
    return start, updates


def test_matrix_update_is_L_quarter_G_R_quarter_each_step():
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(4, 3)) for _ in range(3)]
    _, updates = run((4, 3), grads)
    L, R = 1e-3 * np.eye(4), 1e-3 * np.eye(3)
    for g, u in zip(grads, updates):
        L += g @ g.T
        R += g.T @ g
        np.testing.assert_allclose(u, mpow(L, -0.25) @ g @ mpow(R, -0.25), rtol=1e-7, atol=1e-10)


def test_conv_kernel_update_is_the_tensor_case_formula():
    rng = np.random.default_rng(1)
    shape = (3, 2, 3, 3)
    grads = [rng.normal(size=shape) for _ in range(2)]
    _, updates = run(shape, grads)
    H = [1e-3 * np.eye(d) for d in shape]
    for g, u in zip(grads, updates):
        for i in range(4):
            gi = np.moveaxis(g, i, 0).reshape(shape[i], -1)
            H[i] += gi @ gi.T
        P = [mpow(h, -1.0 / 8) for h in H]  # exponent -1/(2k), k = 4
        expected = np.einsum("abcd,ia,jb,kc,ld->ijkl", g, *P)
        np.testing.assert_allclose(u, expected, rtol=1e-7, atol=1e-10)


def test_bias_gets_the_diagonal_adagrad_form():
    grads = [np.array([0.5, -1.0, 2.0]), np.array([0.1, 0.3, -0.2])]
    _, updates = run((3,), grads)
    acc = np.full(3, 1e-3)
    for g, u in zip(grads, updates):
        acc += g * g
        np.testing.assert_allclose(u, g / np.sqrt(acc), rtol=1e-10)


def test_roots_are_recomputed_every_precondition_frequency_steps():
    rng = np.random.default_rng(2)
    grads = [rng.normal(size=(3, 3)) for _ in range(4)]
    _, updates = run((3, 3), grads, precondition_frequency=3)
    L, R = 1e-3 * np.eye(3), 1e-3 * np.eye(3)
    roots = None
    for t, (g, u) in enumerate(zip(grads, updates)):
        L += g @ g.T  # statistics: every step
        R += g.T @ g
        if t % 3 == 0:
            roots = mpow(L, -0.25), mpow(R, -0.25)
        np.testing.assert_allclose(u, roots[0] @ g @ roots[1], rtol=1e-7, atol=1e-10)


def test_before_start_step_the_grafted_method_moves_alone():
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=(3, 2)) for _ in range(3)]
    _, updates = run((3, 2), grads, start_preconditioning_step=3, grafting="sgd")
    np.testing.assert_allclose(updates[0], grads[0])
    np.testing.assert_allclose(updates[1], grads[1])
    assert not np.allclose(updates[2], grads[2])


def test_blocks_are_preconditioned_independently():
    rng = np.random.default_rng(4)
    g = rng.normal(size=(5, 3))
    _, [u] = run((5, 3), [g], max_preconditioner_dim=2)
    assert len(block_slices((5, 3), 2)) == 6
    for rows in (slice(0, 2), slice(2, 4), slice(4, 5)):
        for cols in (slice(0, 2), slice(2, 3)):
            gb = g[rows, cols]
            L = 1e-3 * np.eye(gb.shape[0]) + gb @ gb.T
            R = 1e-3 * np.eye(gb.shape[1]) + gb.T @ gb
            np.testing.assert_allclose(u[rows, cols], mpow(L, -0.25) @ gb @ mpow(R, -0.25), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("graft", ["sgd", "adagrad"])
def test_grafting_keeps_the_direction_and_takes_the_norm(graft):
    rng = np.random.default_rng(5)
    grads = [rng.normal(size=(4, 3)) for _ in range(2)]
    _, updates = run((4, 3), grads, grafting=graft)
    L, R, acc = 1e-3 * np.eye(4), 1e-3 * np.eye(3), np.zeros((4, 3))
    for g, u in zip(grads, updates):
        L += g @ g.T
        R += g.T @ g
        acc += g * g
        d = mpow(L, -0.25) @ g @ mpow(R, -0.25)
        graft_dir = g if graft == "sgd" else g / (np.sqrt(acc) + 1e-8)
        np.testing.assert_allclose(u, d * np.linalg.norm(graft_dir) / np.linalg.norm(d), rtol=1e-7)


def test_dimensions_above_the_skip_size_are_left_unpreconditioned():
    rng = np.random.default_rng(6)
    grads = [rng.normal(size=(9, 3)) for _ in range(2)]  # an "embedding": 9 rows > skip size 5
    _, updates = run((9, 3), grads, skip_dim_above=5, max_preconditioner_dim=4)
    R = 1e-3 * np.eye(3)
    for g, u in zip(grads, updates):
        R += g.T @ g
        np.testing.assert_allclose(u, g @ mpow(R, -0.5), rtol=1e-7, atol=1e-10)  # k = 1 preconditioned dim


def test_roots_are_refreshed_at_start_then_every_frequency_steps_after_it():
    """start 2, frequency 3: roots from the statistics of steps 2, 5 and 8 (1-based), used until the next."""
    rng = np.random.default_rng(7)
    grads = [rng.normal(size=(3, 2)) for _ in range(8)]
    _, updates = run((3, 2), grads, precondition_frequency=3, start_preconditioning_step=2)
    L, R = 1e-3 * np.eye(3), 1e-3 * np.eye(2)
    roots = None
    for step, (g, u) in enumerate(zip(grads, updates), start=1):
        L += g @ g.T
        R += g.T @ g
        if step == 1:
            np.testing.assert_allclose(u, g)  # before the start: plain SGD (no grafting)
            continue
        if step in (2, 5, 8):
            roots = mpow(L, -0.25), mpow(R, -0.25)
        np.testing.assert_allclose(u, roots[0] @ g @ roots[1], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("graft", ["sgd", "adagrad"])
def test_vectors_are_grafted_like_every_other_block(graft):
    """A bias keeps its diagonal-AdaGrad direction and takes the grafted method's step size, from the first
    preconditioned step on (no jump when preconditioning starts)."""
    rng = np.random.default_rng(8)
    grads = [rng.normal(size=4) for _ in range(5)]
    _, updates = run((4,), grads, grafting=graft, start_preconditioning_step=3)
    acc, graft_acc = np.full(4, 1e-3), np.zeros(4)
    for step, (g, u) in enumerate(zip(grads, updates), start=1):
        acc += g * g
        graft_acc += g * g
        graft_dir = g if graft == "sgd" else g / (np.sqrt(graft_acc) + 1e-8)
        if step < 3:
            np.testing.assert_allclose(u, graft_dir, rtol=1e-10)
            continue
        d = g / np.sqrt(acc)
        np.testing.assert_allclose(u, d * np.linalg.norm(graft_dir) / np.linalg.norm(d), rtol=1e-10)
        np.testing.assert_allclose(np.linalg.norm(u), np.linalg.norm(graft_dir), rtol=1e-10)


def test_a_root_that_cannot_be_computed_keeps_the_previous_one_and_is_counted(monkeypatch):
    """A collapsed run's statistics can defeat the eigendecomposition (LAPACK did not converge) or stop being
    finite: the block keeps its last root, as Distributed Shampoo does, the run goes on and the count is tagged."""
    import curvbench.methods.shampoo as shampoo_mod

    rng = np.random.default_rng(3)
    grads = [rng.normal(size=(3, 2)) for _ in range(3)]
    p = torch.nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))
    opt = Shampoo([p], lr=0.1, config=ShampooConfig(**PAPER))
    p.grad = torch.tensor(grads[0])
    opt.step()  # roots from the first statistics
    L = 1e-3 * np.eye(3) + grads[0] @ grads[0].T
    R = 1e-3 * np.eye(2) + grads[0].T @ grads[0]
    block = opt.state[p]["blocks"][0]
    np.testing.assert_allclose(block.roots[0].numpy(), mpow(L, -0.25), rtol=1e-7)

    def no_convergence(*a, **k):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(shampoo_mod.torch.linalg, "eigh", no_convergence)
    before = p.detach().clone()
    p.grad = torch.tensor(grads[1])
    opt.step()  # both roots fail: the first step's roots precondition this gradient
    expect = mpow(L, -0.25) @ grads[1] @ mpow(R, -0.25)
    np.testing.assert_allclose((before - p.detach()).numpy() / 0.1, expect, rtol=1e-7)
    assert opt.roots_kept == 2 and "2 root computations kept the previous root" in opt.tags["shampoo_roots_kept"]
    monkeypatch.undo()
    block.stats[0][0, 0] = float("inf")  # a blown-up statistic: kept too, the other root is recomputed
    p.grad = torch.tensor(grads[2])
    opt.step()
    assert opt.roots_kept == 3
    R += grads[1].T @ grads[1] + grads[2].T @ grads[2]
    np.testing.assert_allclose(block.roots[1].numpy(), mpow(R, -0.25), rtol=1e-7)
