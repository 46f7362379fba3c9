
import pytest
import torch

from curvbench.models.lenet import LeNet5
from curvbench.recipe.loading import Schedule
from curvbench.training.schedules import cosine_epoch, cosine_step, lr_factor


def test_lenet5_has_61706_parameters_and_thesis_shapes():
    net = LeNet5()
    assert sum(p.numel() for p in net.parameters()) == 61706
    x = torch.zeros(3, 1, 28, 28)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    c1 = net.c1(padded)
    assert c1.shape == (3, 6, 28, 28)
    s2 = torch.nn.functional.max_pool2d(c1, 2)
    assert s2.shape == (3, 6, 14, 14)
    c3 = net.c3(s2)
    assert c3.shape == (3, 16, 10, 10)
    c5 = net.c5(torch.nn.functional.max_pool2d(c3, 2))
    assert c5.shape == (3, 120, 1, 1)
    assert net(x).shape == (3, 10)
    # 28x28 input is padded inside: same logits as an explicitly padded 32x32 input.
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(net(x), net(torch.nn.functional.pad(x, (2, 2, 2, 2))))


# eq. (34), alpha_j = alpha_min + 1/2 (alpha_max - alpha_min)(1 + cos(j pi / J)), evaluated by hand with
# alpha_max = 1: cos(pi/4) = 0.70710678, cos(19 pi/20) = -0.98768834, cos(3 pi/4) = -0.70710678, cos(pi/3) = 0.5
@pytest.mark.parametrize("j,J,amin,expected", [
    (0, 20, 0.0, 1.0),
    (10, 20, 0.0, 0.5),
    (5, 20, 0.1, 0.86819805),  # 0.1 + 0.45 * 1.70710678
    (19, 20, 0.0, 0.00615583),  # 0.5 * 0.01231166: the last epoch is not at alpha_min
    (15, 20, 0.0, 0.14644661),  # 0.5 * 0.29289322
    (1, 3, 0.2, 0.8),  # 0.2 + 0.4 * 1.5
])
def test_cosine_per_epoch_is_eq_34(j, J, amin, expected):
    assert cosine_epoch(j, J, amin) == pytest.approx(expected, abs=1e-8)


def test_cosine_step_warms_up_linearly_then_decays_to_min():
    assert [cosine_step(t, 100, 0.0, 4) for t in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert cosine_step(4, 100, 0.0, 4) == pytest.approx(1.0)
    assert cosine_step(52, 100, 0.0, 4) == pytest.approx(0.5)
    assert cosine_step(100, 100, 0.2, 4) == pytest.approx(0.2)
    values = [cosine_step(t, 100, 0.0, 4) for t in range(4, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_lr_factor_dispatches_on_schedule_kind():
    assert lr_factor(Schedule("constant"), 5, 10, 50, 100) == 1.0
    assert lr_factor(Schedule("cosine", 0.0), 5, 10, 57, 100) == pytest.approx(0.5)
    assert lr_factor(Schedule("cosine-step", 0.0, 0), 5, 10, 50, 100) == pytest.approx(0.5)
