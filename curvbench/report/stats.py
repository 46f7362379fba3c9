"""Statistics of time to target over seeds, where a seed that never reached the target is censored, never dropped.

A seed that missed counts as an infinite time (AlgoPerf's rule): it ranks after every seed that reached the
target, so the median is "not reached" as soon as half or more of the seeds missed. Every number here comes from
SciPy or NumPy:

- the median's interval is the exact distribution-free order-statistic interval (`scipy.stats.quantile_test`):
  it holds at 95% from 6 seeds on; with 2 to 5 seeds no pair of order statistics covers 95%, and the widest one,
  [min, max], is given with its own coverage, 1 - 2^(1-n) (93.8% for 5 seeds);
- the speed-up over a baseline is the ratio of the medians (baseline / method), with a percentile bootstrap
  interval (`scipy.stats.bootstrap`, each sample resampled on its own); a resample whose median is not reached
  gives a ratio of 0 (the method's) or infinity (the baseline's), one where both are not reached a ratio of 1;
- the test is a one-sided Mann-Whitney U test on the per-seed times (`scipy.stats.mannwhitneyu`), exact by
  permutation of the ranks (`scipy.stats.PermutationMethod`), so ties, and the not-reached seeds that tie with
  each other at the end, are counted exactly rather than by the normal approximation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LEVEL = 0.95  # the confidence level of every interval
ALPHA = 0.05  # a difference is called when its one-sided p-value is below this
RESAMPLES = 9999

EXPLANATION = (
    "Median over all seeds, a seed that missed the target counting as not reached (so the median is not reached "
    "when half or more missed), with its order-statistic interval: 95%, or with fewer than 6 seeds [min, max] and "
    "its own coverage in brackets. Against the baseline: the ratio of the medians (baseline / method) with a 95% "
    "percentile-bootstrap interval, and a one-sided Mann-Whitney U test on the per-seed seconds (exact by "
    "permutation, ties counted; not reached ranks last).")


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    coverage: float  # the interval's own confidence level (below LEVEL when too few seeds allow no better)

    def text(self, fmt: str = "{:.2f}") -> str:
        def end(v):
            return "not reached" if math.isinf(v) else fmt.format(v)

        note = "" if self.coverage >= LEVEL else f" ({self.coverage:.1%})"
        return f"[{end(self.low)}, {end(self.high)}]{note}"


@dataclass(frozen=True)
class Censored:
    """A measure to target over every seed: `values` with math.inf for the seeds that did not reach it."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def reached(self) -> int:
        return sum(math.isfinite(v) for v in self.values)

    @property
    def median(self) -> float:
        """The median over all seeds: inf ("not reached") when half or more missed."""
        import numpy as np

        if not self.values:
            return math.inf
        s = sorted(self.values)
        mid = len(s) // 2
        if len(s) % 2:
            return float(s[mid])
        lo, hi = s[mid - 1], s[mid]
        return math.inf if math.isinf(hi) else float(np.mean([lo, hi]))

    def interval(self) -> Interval | None:
        """The order-statistic interval of the median; None with a single seed."""
        import numpy as np
        from scipy import stats

        n = self.n
        if n < 2:
            return None
        x = np.asarray(self.values, dtype=float)
        ci = stats.quantile_test(x, q=0.0, p=0.5).confidence_interval(LEVEL)  # the interval does not depend on q
        if math.isnan(ci.low) or math.isnan(ci.high):
            s = sorted(self.values)
            return Interval(float(s[0]), float(s[-1]), 1 - 2.0 ** (1 - n))
        return Interval(float(ci.low), float(ci.high), LEVEL)

    def text(self, fmt: str = "{:.2f}", unit: str = "") -> str:
        """`12.3 s [10.1, 15.0] (93.8%)`, or `not reached`; the reached count is shown apart."""
        m = self.median
        head = "not reached" if math.isinf(m) else fmt.format(m) + unit
        ci = self.interval()
        return head + (" " + ci.text(fmt) if ci is not None else "")


def _finite_or(x):
    import numpy as np

    f = x[np.isfinite(x)]
    return f if f.size else np.zeros(1)


@dataclass(frozen=True)
class Comparison:
    """A method's times against the baseline's."""

    baseline: str
    speedup: float  # baseline median / method median: > 1 is faster; inf, 0 or nan (both not reached) at the ends
    interval: Interval | None
    p_faster: float | None  # one-sided p-values; None when a sample has fewer than 2 seeds
    p_slower: float | None

    @property
    def verdict(self) -> str:
        """What the numbers allow, in words."""
        if self.p_faster is None:
            return "no test (fewer than 2 seeds)"
        if self.p_faster < ALPHA:
            return "faster"
        if self.p_slower < ALPHA:
            return "slower"
        return "no clear difference"

    def text(self) -> str:
        """`faster than sgd (1.9x [1.6, 2.3], p = 0.004)`, `no clear difference (p = 0.31)`."""
        ratio = _ratio_text(self.speedup)
        ci = f" {self.interval.text()}" if self.interval is not None else ""
        if self.p_faster is None:
            return f"{ratio}{ci} vs {self.baseline}; no test (fewer than 2 seeds)"
        v = self.verdict
        if v == "faster":
            return f"faster than {self.baseline} ({ratio}{ci}, p = {_p(self.p_faster)})"
        if v == "slower":
            return f"slower than {self.baseline} ({ratio}{ci}, p = {_p(self.p_slower)})"
        return f"no clear difference from {self.baseline} ({ratio}{ci}, p = {_p(self.p_two_sided)})"

    @property
    def p_two_sided(self) -> float | None:
        if self.p_faster is None:
            return None
        return min(1.0, 2 * min(self.p_faster, self.p_slower))


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _ratio_text(r: float) -> str:
    if math.isnan(r):
        return "neither median reached"
    if math.isinf(r):
        return "the baseline's median not reached"
    if r == 0:
        return "its median not reached"
    return f"{r:.2f}x"


def speedup_of(baseline: float, method: float) -> float:
    """baseline / method for medians that may be inf (not reached)."""
    if math.isinf(baseline) and math.isinf(method):
        return math.nan
    if math.isinf(method):
        return 0.0
    if math.isinf(baseline):
        return math.inf
    return baseline / method if method > 0 else math.inf


def compare(method: Censored, baseline: Censored, baseline_name: str, seed: int = 0) -> Comparison:
    """Speed-up with its bootstrap interval and the one-sided Mann-Whitney tests of `method` against `baseline`."""
    import numpy as np
    from scipy import stats

    speedup = speedup_of(baseline.median, method.median)
    if method.n < 2 or baseline.n < 2:
        return Comparison(baseline_name, speedup, None, None, None)
    a = np.asarray(method.values, dtype=float)
    b = np.asarray(baseline.values, dtype=float)
    big = 2 * max([1.0, *_finite_or(np.concatenate([a, b]))])  # ranks only: inf and any larger value tie alike
    ra, rb = np.where(np.isinf(a), big, a), np.where(np.isinf(b), big, b)
    perm = stats.PermutationMethod(n_resamples=RESAMPLES, random_state=np.random.default_rng(seed))
    p_faster = float(stats.mannwhitneyu(ra, rb, alternative="less", method=perm).pvalue)
    p_slower = float(stats.mannwhitneyu(ra, rb, alternative="greater", method=perm).pvalue)
    return Comparison(baseline_name, speedup, _ratio_interval(a, b, seed), p_faster, p_slower)


def _ratio_interval(a, b, seed: int) -> Interval | None:
    """Percentile bootstrap of baseline median / method median. Computed on arctan(log ratio), which keeps the
    not-reached ends (0, inf) finite and in order while the percentiles are taken, then mapped back."""
    import numpy as np
    from scipy import stats

    if np.all(a == a[0]) and np.all(b == b[0]):
        r = speedup_of(float(b[0]), float(a[0]))
        return None if math.isnan(r) else Interval(r, r, 1.0)  # nothing varies: every resample gives the same ratio

    def statistic(x, y, axis=-1):
        mx = np.median(x, axis=axis)  # a median half of whose values are inf is inf or nan: both count as inf
        my = np.median(y, axis=axis)
        mx = np.where(np.isnan(mx), np.inf, mx)
        my = np.where(np.isnan(my), np.inf, my)
        with np.errstate(divide="ignore", invalid="ignore"):
            lr = np.log(my) - np.log(mx)
        lr = np.where(np.isinf(mx) & np.isinf(my), 0.0, lr)
        return np.arctan(lr)

    res = stats.bootstrap((a, b), statistic, vectorized=True, method="percentile", n_resamples=RESAMPLES,
                          confidence_level=LEVEL, random_state=np.random.default_rng(seed))
    lo, hi = res.confidence_interval

    def back(t):
        if t >= math.pi / 2 - 1e-12:
            return math.inf
        if t <= -math.pi / 2 + 1e-12:
            return 0.0
        return math.exp(math.tan(t))

    return Interval(back(float(lo)), back(float(hi)), LEVEL)


def expected_best(scores: list[float], k: int) -> float:
    """The expected best of k trials drawn without replacement from `scores` (Dodge et al. 2019, exact by order
    statistics): with scores sorted v_1 <= ... <= v_n, the best of k is v_i with probability C(i-1, k-1)/C(n, k)."""
    from scipy.special import comb

    n = len(scores)
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and {n}, got {k}")
    v = sorted(scores)
    total = comb(n, k, exact=True)
    return float(sum(v[i - 1] * comb(i - 1, k - 1, exact=True) for i in range(k, n + 1)) / total)
