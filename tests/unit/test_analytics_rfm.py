"""Quintile breakpoints and RFM scores, checked against numpy and a plain-Python rank computation."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from analytics.rfm import Breakpoints, RawRfm, RfmScore, breakpoints, quantile, quintile_cuts, score, score_rfm


def test_quantile_interpolates_between_order_statistics() -> None:
    assert quantile([10.0, 20.0, 30.0, 40.0, 50.0], 0.2) == 18.0  # position 0.8 between 10 and 20
    assert quantile([1.0], 0.8) == 1.0
    assert quintile_cuts([5, 1, 4, 2, 3]) == (1.8, 2.6, 3.4, 4.2)


@given(st.lists(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), min_size=1, max_size=200))
def test_quintile_cuts_match_numpy_percentiles(values: list[float]) -> None:
    expected = np.percentile(values, [20, 40, 60, 80])
    assert np.allclose(quintile_cuts(values), expected, rtol=1e-9, atol=1e-6)


def test_score_counts_breakpoints_strictly_below() -> None:
    cuts = (1.0, 2.0, 3.0, 4.0)
    assert [score(v, cuts) for v in (0.5, 1.0, 1.5, 2.0, 3.5, 4.0, 4.1, 99)] == [1, 1, 2, 2, 4, 4, 5, 5]


def test_ties_share_the_lower_quintile() -> None:
    # 70% bought once: all one-order customers score F=1, and equal values always score the same
    orders = [1] * 7 + [2, 3, 5]
    cuts = quintile_cuts(orders)
    assert np.allclose(cuts, (1.0, 1.0, 1.0, 2.2))
    assert [score(o, cuts) for o in (1, 2, 3, 5)] == [1, 4, 5, 5]


def _plain_scores(values: list[float]) -> list[int]:
    """Independent: a value's score is 1 + the number of quintile positions (type-7) it is strictly above."""
    ordered = sorted(values)
    n = len(ordered)
    cuts = []
    for q in (0.2, 0.4, 0.6, 0.8):
        h = (n - 1) * q
        lo = int(h)
        hi = min(lo + 1, n - 1)
        cuts.append(ordered[lo] + (h - lo) * (ordered[hi] - ordered[lo]))
    return [1 + sum(v > c for c in cuts) for v in values]


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=100))
def test_scores_match_plain_computation(values: list[int]) -> None:
    cuts = quintile_cuts(values)
    assert [score(v, cuts) for v in values] == _plain_scores([float(v) for v in values])


def test_distinct_values_fill_the_quintiles_evenly() -> None:
    values = list(range(100))
    cuts = quintile_cuts(values)
    counts = np.bincount([score(v, cuts) for v in values], minlength=6)[1:]
    assert counts.tolist() == [20, 20, 20, 20, 20]


def test_recency_scores_later_purchases_higher() -> None:
    day = 86_400_000
    population = [
        RawRfm(last_purchase_ms=1_700_000_000_000 + i * day, orders=1 + i % 3, revenue=10.0 * i) for i in range(10)
    ]
    bp = breakpoints(population)
    newest, oldest = population[-1], population[0]
    assert score_rfm(newest, bp).r == 5
    assert score_rfm(oldest, bp).r == 1
    assert score_rfm(newest, bp).m == 5


def test_score_code_total_mean_and_fm() -> None:
    s = RfmScore(5, 4, 1)
    assert (s.code, s.total, s.mean, s.fm) == ("541", 10, 3.3333, 3)
    assert RfmScore(1, 1, 2).fm == 2  # half rounds up
    assert RfmScore(1, 5, 5).fm == 5


def test_breakpoints_round_trip() -> None:
    bp = Breakpoints((1.0, 2.0, 3.0, 4.0), (1.0, 1.0, 2.0, 3.0), (10.0, 20.0, 30.0, 40.5), 17)
    assert Breakpoints.from_dict(bp.as_dict()) == bp
