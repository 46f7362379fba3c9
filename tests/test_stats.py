"""Time-to-target statistics against cases computed by hand or by brute force, independently of curvbench.stats."""

import itertools
import math
import statistics

import numpy as np
import pytest

from curvbench.report.stats import Censored, compare, expected_best, speedup_of

INF = math.inf


@pytest.mark.parametrize("values, median, reached", [
    ((4.0, 2.0, 3.0, 1.0, 5.0), 3.0, 5),        # all reached
    ((1.0, 2.0, INF, 3.0, INF), 3.0, 3),        # some missed: they rank last, the median is still the 3rd value
    ((1.0, INF, 2.0, INF), INF, 2),             # half missed: the upper middle is not reached
    ((1.0, 2.0, 3.0, INF), 2.5, 3),             # even count, the two middle values reached
    ((INF, INF, INF), INF, 0),                  # all missed
    ((7.0,), 7.0, 1),                           # one seed
    ((INF,), INF, 0),
])
def test_censored_median_counts_every_seed(values, median, reached):
    c = Censored(values)
    assert c.median == median and c.reached == reached and c.n == len(values)


def test_the_survivorship_median_differs_from_the_censored_one():
    # one seed of five reached the target: the old summary showed its time; the censored median is not reached
    c = Censored((2.0, INF, INF, INF, INF))
    assert statistics.median([v for v in c.values if v != INF]) == 2.0
    assert c.median == INF and c.text().startswith("not reached")


def test_median_interval_with_few_seeds_is_min_max_with_its_own_coverage():
    ci = Censored((4.0, 2.0, 3.0, 1.0, 5.0)).interval()
    assert (ci.low, ci.high) == (1.0, 5.0)
    assert ci.coverage == pytest.approx(1 - 2 * 0.5 ** 5)  # P(min < median < max) for 5 draws
    assert Censored((3.0,)).interval() is None


def test_median_interval_at_95_percent_is_the_binomial_order_statistic_interval():
    # n = 20: P(B <= 5) = 0.0207 for B ~ Bin(20, 1/2), so [x(6), x(15)] covers 1 - 2 * 0.0207 = 95.9% >= 95%,
    # and the narrower [x(7), x(14)] only 1 - 2 * P(B <= 6) = 88.5%; computed by hand from binomial sums
    below5 = sum(math.comb(20, i) for i in range(6)) / 2 ** 20
    below6 = sum(math.comb(20, i) for i in range(7)) / 2 ** 20
    assert 1 - 2 * below5 >= 0.95 > 1 - 2 * below6
    values = tuple(float(v) for v in range(1, 21))
    ci = Censored(values).interval()
    assert (ci.low, ci.high) == (6.0, 15.0) and ci.coverage == 0.95
    # seeds that missed are the largest values: the upper end is not reached once x(15) is censored
    censored = tuple(float(v) for v in range(1, 15)) + (INF,) * 6
    ci = Censored(censored).interval()
    assert ci.low == 6.0 and ci.high == INF
    assert "not reached" in ci.text()


def _exhaustive_p_less(a, b):
    """P(U <= U_observed) under all relabellings of the pooled sample: the exact one-sided Mann-Whitney test."""
    pooled = list(a) + list(b)

    def u(x, y):  # U of x: pairs with x below y, ties half
        return sum((xi < yj) + 0.5 * (xi == yj) for xi in x for yj in y)

    observed = u(a, b)
    count = total = 0
    for idx in itertools.combinations(range(len(pooled)), len(a)):
        x = [pooled[i] for i in idx]
        y = [pooled[i] for i in range(len(pooled)) if i not in idx]
        total += 1
        count += u(x, y) >= observed - 1e-12  # "a faster" means many pairs with a below b
    return count / total


@pytest.mark.parametrize("a, b", [
    ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0)),          # fully separated: p = 1/20
    ((1.0, 5.0, 3.0), (4.0, 2.0, 6.0)),          # overlapping
    ((1.0, 2.0, INF), (3.0, INF, INF)),          # not reached ranks last and ties with itself
    ((2.0, 2.0, 3.0), (2.0, 3.0, 3.0)),          # ties
])
def test_one_sided_test_matches_an_exhaustive_permutation_on_3_vs_3(a, b):
    cmp = compare(Censored(a), Censored(b), "sgd")
    assert cmp.p_faster == pytest.approx(_exhaustive_p_less(a, b))
    assert cmp.p_slower == pytest.approx(_exhaustive_p_less(b, a))


def test_one_sided_test_matches_scipy_exact_mann_whitney_without_ties():
    from scipy import stats

    a, b = (1.0, 2.5, 3.0, 4.5, 7.0), (2.0, 5.0, 6.0, 8.0, 9.0)
    exact = stats.mannwhitneyu(a, b, alternative="less", method="exact").pvalue
    assert compare(Censored(a), Censored(b), "sgd").p_faster == pytest.approx(exact)


def test_verdict_words_follow_the_test():
    fast, slow = Censored((1.0, 1.1, 1.2, 1.3, 1.4)), Censored((2.0, 2.1, 2.2, 2.3, 2.4))
    assert compare(fast, slow, "sgd").text().startswith("faster than sgd (")
    assert "p = 0.004" in compare(fast, slow, "sgd").text()  # 1/252, the smallest exact p for 5 vs 5
    assert compare(slow, fast, "sgd").text().startswith("slower than sgd (")
    mixed = Censored((1.0, 2.05, 1.25, 2.35, 1.35))
    assert compare(mixed, slow, "sgd").verdict in ("faster", "no clear difference")
    assert compare(fast, fast, "sgd").verdict == "no clear difference"
    assert compare(Censored((1.0,)), slow, "sgd").verdict == "no test (fewer than 2 seeds)"


def _exact_bootstrap(a, b):
    """Every equally likely pair of resamples, and its ratio of medians (baseline b / method a)."""
    out = []
    for ra in itertools.product(a, repeat=len(a)):
        for rb in itertools.product(b, repeat=len(b)):
            out.append(speedup_of(float(np.median(rb)), float(np.median(ra))))
    return np.array(out)


def test_speedup_interval_ends_sit_at_the_exact_bootstrap_distributions_2_5_and_97_5_percentiles():
    a, b = (1.0, 1.5, 2.0), (3.0, 4.0, 6.0)
    cmp = compare(Censored(a), Censored(b), "sgd")
    assert cmp.speedup == pytest.approx(4.0 / 1.5)
    dist = _exact_bootstrap(a, b)
    lo, hi = cmp.interval.low, cmp.interval.high
    assert np.mean(dist < lo - 1e-9) <= 0.025 + 0.01 and np.mean(dist <= lo + 1e-9) >= 0.025 - 0.01
    assert np.mean(dist > hi + 1e-9) <= 0.025 + 0.01 and np.mean(dist >= hi - 1e-9) >= 0.025 - 0.01


def test_speedup_with_censored_medians_and_identical_times_never_gives_nan_text():
    all_missed = Censored((INF, INF, INF))
    reached = Censored((2.0, 3.0, 4.0))
    for a, b in ((all_missed, reached), (reached, all_missed), (all_missed, all_missed),
                 (Censored((3.0, 3.0)), Censored((3.0, 3.0)))):
        text = compare(a, b, "sgd").text()
        assert "nan" not in text.lower(), text
    assert compare(all_missed, reached, "sgd").speedup == 0.0
    assert compare(reached, all_missed, "sgd").speedup == INF
    assert compare(Censored((3.0, 3.0)), Censored((6.0, 6.0)), "sgd").interval.low == 2.0


@pytest.mark.parametrize("scores", [[0.9, 0.1, 0.5, 0.3], [0.2, 0.2, 0.7, 0.1, 0.7, 0.4]])
def test_expected_best_after_k_matches_all_k_subsets(scores):
    for k in range(1, len(scores) + 1):
        subsets = list(itertools.combinations(scores, k))
        brute = sum(max(s) for s in subsets) / len(subsets)
        assert expected_best(scores, k) == pytest.approx(brute)
    with pytest.raises(ValueError):
        expected_best(scores, 0)
