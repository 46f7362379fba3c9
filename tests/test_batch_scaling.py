"""The critical batch size against hand-made step curves, and the learning-rate range at each batch size."""

import math

import pytest

from curvbench.batch_scaling import at_edge, critical_batch, scaled_range


def test_perfect_scaling_puts_the_knee_beyond_the_largest_batch():
    steps = {32: 6400.0, 64: 3200.0, 128: 1600.0, 256: 800.0}
    c = critical_batch(steps)
    assert c.batch == 256 and c.beyond_range and c.text() == ">= 256"
    assert c.ideal == {32: 6400.0, 64: 3200.0, 128: 1600.0, 256: 800.0}


def test_a_knee_is_the_last_batch_within_20_percent_of_ideal_scaling():
    # ideal from 32: 6400, 3200, 1600, 800, 400; measured: within 20% up to 128 (1900 <= 1.2 * 1600 = 1920),
    # 256 needs 1200 > 1.2 * 800 = 960
    steps = {32: 6400.0, 64: 3300.0, 128: 1900.0, 256: 1200.0, 512: 1000.0}
    c = critical_batch(steps)
    assert c.batch == 128 and c.steps == 1900.0 and not c.beyond_range and c.text() == "128"


def test_a_flat_curve_has_the_smallest_batch_as_its_critical_batch():
    c = critical_batch({64: 500.0, 128: 500.0, 256: 500.0})
    assert c.batch == 64 and not c.beyond_range


def test_a_batch_that_never_reached_the_target_ends_the_scaling_and_a_missing_one_is_skipped_and_named():
    steps = {32: 4000.0, 64: None, 128: 1100.0, 256: math.inf}
    c = critical_batch(steps)
    assert c.batch == 128 and c.missing == (64,) and "not measured: 64" in c.text()
    assert critical_batch({32: math.inf, 64: 100.0}).batch is None


def test_the_threshold_is_a_parameter():
    steps = {32: 6400.0, 64: 3800.0}  # 3800 / 3200 = 1.19
    assert critical_batch(steps).batch == 64
    assert critical_batch(steps, threshold=0.1).batch == 32


def test_learning_rate_ranges_scale_linearly_or_by_the_square_root():
    assert scaled_range(0.01, 0.1, 100, 400) == pytest.approx((0.04, 0.4))
    assert scaled_range(0.01, 0.1, 100, 400, "sqrt") == pytest.approx((0.02, 0.2))
    assert scaled_range(0.01, 0.1, 100, 25) == pytest.approx((0.0025, 0.025))
    with pytest.raises(ValueError):
        scaled_range(0.01, 0.1, 100, 400, "cubic")
    with pytest.raises(ValueError):
        scaled_range(0.1, 0.01, 100, 400)


def test_a_best_value_at_an_edge_is_reported():
    assert at_edge(0.0101, 0.01, 1.0) == "low"
    assert at_edge(0.99, 0.01, 1.0) == "high"
    assert at_edge(0.1, 0.01, 1.0) is None
    assert at_edge(0.52, 0.0, 1.0, log=False) is None and at_edge(0.02, 0.0, 1.0, log=False) == "low"
