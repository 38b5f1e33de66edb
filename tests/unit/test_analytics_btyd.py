"""The buy-till-you-die figures against reference computations.

* the fits (``lifetimes``) against the published CDNOW estimates and against an independent maximum-likelihood fit
  of each model's log-likelihood, written here with scipy.optimize;
* the closed forms against the published worked example, a hand-written hypergeometric series, and ``lifetimes``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import betaln, gammaln

from analytics.btyd import (
    ForecastError,
    History,
    PurchaseParams,
    SpendParams,
    Variant,
    expected_order_value,
    expected_purchases,
    forecast,
    p_alive,
)
from analytics.fit import FitInput, ModelFitError, check_enough, fit_purchases, fit_spend

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from lifetimes import BetaGeoFitter, GammaGammaFitter, ModifiedBetaGeoFitter
    from lifetimes.datasets import load_cdnow_summary, load_cdnow_summary_data_with_monetary_value


@pytest.fixture(scope="module")
def cdnow() -> dict[str, np.ndarray[Any, Any]]:
    """The CDNOW sample (2,357 customers, weeks) shipped with lifetimes: the data of the BG/NBD paper."""
    d = load_cdnow_summary(index_col=[0])
    return {"x": d["frequency"].to_numpy(), "t_x": d["recency"].to_numpy(), "T": d["T"].to_numpy()}


@pytest.fixture(scope="module")
def cdnow_spend() -> dict[str, np.ndarray[Any, Any]]:
    d = load_cdnow_summary_data_with_monetary_value()
    d = d[d["frequency"] > 0]
    return {"x": d["frequency"].to_numpy(), "m": d["monetary_value"].to_numpy()}


def _input(c: dict[str, np.ndarray[Any, Any]]) -> FitInput:
    x = [int(v) for v in c["x"]]
    return FitInput(x=x, t_x=list(c["t_x"]), T=list(c["T"]), orders=[v + 1 for v in x], revenue=[1.0] * len(x))


# ----- independent log-likelihoods -----


def _bgnbd_ll(params: np.ndarray[Any, Any], x: Any, t_x: Any, T: Any) -> float:
    """Fader, Hardie & Lee (2005), eq. (6)."""
    r, alpha, a, b = params
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    alive = betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + T)
    dead = betaln(a + 1, b + x - 1) - betaln(a, b) - (r + x) * np.log(alpha + t_x)
    ll = common + np.where(x > 0, np.logaddexp(alive, np.where(x > 0, dead, -np.inf)), alive)
    return float(np.sum(ll))


def _mbgnbd_ll(params: np.ndarray[Any, Any], x: Any, t_x: Any, T: Any) -> float:
    """Batislam, Denizel & Filiztekin (2007): dropout possible after every purchase, the first included."""
    r, alpha, a, b = params
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    alive = betaln(a, b + x + 1) - betaln(a, b) - (r + x) * np.log(alpha + T)
    dead = betaln(a + 1, b + x) - betaln(a, b) - (r + x) * np.log(alpha + t_x)
    return float(np.sum(common + np.logaddexp(alive, dead)))


def _gg_ll(params: np.ndarray[Any, Any], x: Any, m: Any) -> float:
    """Fader & Hardie (2013): mean spend m over x transactions."""
    p, q, v = params
    ll = (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(v)
        + (p * x - 1) * np.log(m)
        + p * x * np.log(x)
        - (p * x + q) * np.log(v + x * m)
    )
    return float(np.sum(ll))


def _mle(ll: Any, start: list[float], *data: Any) -> np.ndarray[Any, Any]:
    def neg(log_params: np.ndarray[Any, Any]) -> float:
        return -float(ll(np.exp(log_params), *data))

    with np.errstate(all="ignore"):
        first = minimize(
            neg, np.log(start), method="Nelder-Mead", options={"maxiter": 20_000, "xatol": 1e-9, "fatol": 1e-9}
        )
        best = minimize(neg, first.x, method="L-BFGS-B")
    result: np.ndarray[Any, Any] = np.exp(best.x if best.fun <= first.fun else first.x)
    return result


# ----- fits -----


def test_bgnbd_fit_matches_the_published_cdnow_estimates(cdnow: dict[str, Any]) -> None:
    fitted = fit_purchases(_input(cdnow), Variant.BGNBD)
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # Fader, Hardie & Lee (2005), p. 280
    for name, value in published.items():
        assert getattr(fitted, name) == pytest.approx(value, abs=1.5e-3), name


@pytest.mark.parametrize(("variant", "ll"), [(Variant.BGNBD, _bgnbd_ll), (Variant.MBGNBD, _mbgnbd_ll)])
def test_purchase_fit_matches_an_independent_maximum_likelihood_fit(
    cdnow: dict[str, Any], variant: Variant, ll: Any
) -> None:
    fitted = fit_purchases(_input(cdnow), variant)
    ours = np.array([fitted.r, fitted.alpha, fitted.a, fitted.b])
    reference = _mle(ll, [1.0, 1.0, 1.0, 1.0], cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert ours == pytest.approx(reference, rel=2e-3)
    assert ll(ours, cdnow["x"], cdnow["t_x"], cdnow["T"]) == pytest.approx(
        ll(reference, cdnow["x"], cdnow["t_x"], cdnow["T"]), abs=1e-3
    )


def test_gamma_gamma_fit_matches_published_and_independent_estimates(cdnow_spend: dict[str, Any]) -> None:
    x, m = cdnow_spend["x"], cdnow_spend["m"]
    data = FitInput(x=[0] * len(x), t_x=[0.0] * len(x), T=[1.0] * len(x), orders=list(x), revenue=list(x * m))
    fitted = fit_spend(data)
    assert (fitted.p, fitted.q, fitted.v) == pytest.approx((6.25, 3.74, 15.44), abs=1e-2)  # Fader & Hardie (2013)
    reference = _mle(_gg_ll, [1.0, 2.0, 10.0], x, m)
    assert np.array([fitted.p, fitted.q, fitted.v]) == pytest.approx(reference, rel=2e-3)


def test_fit_on_simulated_customers_recovers_the_parameters() -> None:
    """MBG/NBD simulated with known parameters (4,000 customers, up to 2 years, days)."""
    rng = np.random.default_rng(7)
    r, alpha, a, b = 0.8, 20.0, 0.6, 3.0
    n = 4000
    lam, p, T = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n), rng.uniform(60, 730, n)
    x, t_x = np.zeros(n, dtype=int), np.zeros(n)
    for i in range(n):
        if rng.random() < p[i]:
            continue  # MBG/NBD: may drop out right after the first purchase
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T[i]:
                break
            x[i] += 1
            t_x[i] = t
            if rng.random() < p[i]:
                break
    fitted = fit_purchases(FitInput(list(x), list(t_x), list(T), list(x + 1), [1.0] * n), Variant.MBGNBD)
    assert fitted.r == pytest.approx(r, rel=0.25)
    assert fitted.alpha == pytest.approx(alpha, rel=0.35)
    assert fitted.a == pytest.approx(a, rel=0.35)
    assert fitted.b == pytest.approx(b, rel=0.5)


def test_too_small_a_base_is_not_fitted() -> None:
    data = FitInput(x=[0, 1, 0], t_x=[0.0, 3.0, 0.0], T=[5.0, 9.0, 2.0], orders=[1, 2, 1], revenue=[5.0, 9.0, 1.0])
    with pytest.raises(ModelFitError, match=r"at least 20 purchasing customers .* has 3 \(1 repeat buyers\)"):
        check_enough(data, min_customers=20, min_repeaters=5)
    with pytest.raises(ModelFitError, match="age 0 days"):
        fit_purchases(FitInput([0, 0], [0.0, 0.0], [0.0, 0.0], [1, 1], [1.0, 1.0]), Variant.BGNBD)
    with pytest.raises(ModelFitError, match="positive order value"):
        fit_spend(FitInput([0], [0.0], [1.0], [1], [0.0]))


# ----- closed forms -----

CDNOW_BG = PurchaseParams(Variant.BGNBD, r=0.242593, alpha=4.413532, a=0.792886, b=2.425752)


def test_published_worked_example() -> None:
    """Fader, Hardie & Lee (2005), section 5: x=2, t_x=30.43, T=38.86 weeks buys 1.226 times in the next 39 weeks."""
    h = History(x=2, t_x=30.43, T=38.86)
    assert expected_purchases(CDNOW_BG, h, 39.0) == pytest.approx(1.226, abs=5e-4)


def _hyp2f1_series(a: float, b: float, c: float, z: float) -> float:
    total, term, n = 1.0, 1.0, 0
    while abs(term) > 1e-16 * abs(total):
        term *= (a + n) * (b + n) / ((c + n) * (n + 1)) * z
        total += term
        n += 1
    return total


def _by_hand(p: PurchaseParams, x: int, t_x: float, T: float, t: float) -> tuple[float, float]:
    """P(alive) and E[purchases in t] straight from the papers' formulas."""
    r, alpha, a, b = p.r, p.alpha, p.a, p.b
    if p.variant is Variant.BGNBD:
        odds = 0.0 if x == 0 else a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x)
        head, hyp = (a + b + x - 1) / (a - 1), _hyp2f1_series(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
    else:
        odds = a / (b + x) * ((alpha + T) / (alpha + t_x)) ** (r + x)
        head, hyp = (a + b + x) / (a - 1), _hyp2f1_series(r + x, b + x + 1, a + b + x, t / (alpha + T + t))
    alive = 1 / (1 + odds)
    return alive, head * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp) * alive


@pytest.mark.parametrize("variant", list(Variant))
@pytest.mark.parametrize(("x", "t_x", "T", "t"), [(0, 0.0, 20.0, 10.0), (2, 30.43, 38.86, 39.0), (7, 5.0, 60.0, 30.0)])
def test_closed_forms_match_the_formulas_by_hand(variant: Variant, x: int, t_x: float, T: float, t: float) -> None:
    params = PurchaseParams(variant, r=0.5, alpha=6.0, a=0.9, b=1.6)
    alive, expected = _by_hand(params, x, t_x, T, t)
    h = History(x, t_x, T)
    assert p_alive(params, h) == pytest.approx(alive, rel=1e-12)
    assert expected_purchases(params, h, t) == pytest.approx(expected, rel=1e-9)


def test_bgnbd_says_a_customer_without_repeat_purchase_is_alive_and_mbgnbd_does_not() -> None:
    h = History(x=0, t_x=0.0, T=300.0)
    assert p_alive(CDNOW_BG, h) == 1.0
    assert p_alive(PurchaseParams(Variant.MBGNBD, 0.5, 6.0, 0.9, 1.6), h) < 0.5


@pytest.mark.parametrize(
    ("variant", "fitter_class"), [(Variant.BGNBD, BetaGeoFitter), (Variant.MBGNBD, ModifiedBetaGeoFitter)]
)
def test_closed_forms_match_lifetimes_on_every_cdnow_customer(
    cdnow: dict[str, Any], cdnow_spend: dict[str, Any], variant: Variant, fitter_class: Any
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitter = fitter_class().fit(cdnow["x"], cdnow["t_x"], cdnow["T"])
        gg = GammaGammaFitter().fit(cdnow_spend["x"], cdnow_spend["m"])
        ref_alive = np.ravel(fitter.conditional_probability_alive(cdnow["x"], cdnow["t_x"], cdnow["T"]))
        ref_n = np.ravel(
            fitter.conditional_expected_number_of_purchases_up_to_time(52, cdnow["x"], cdnow["t_x"], cdnow["T"])
        )
    params = PurchaseParams(variant, *(float(fitter.params_[k]) for k in ("r", "alpha", "a", "b")))
    histories = [
        History(int(x), float(tx), float(T)) for x, tx, T in zip(cdnow["x"], cdnow["t_x"], cdnow["T"], strict=True)
    ]
    assert np.allclose([p_alive(params, h) for h in histories], ref_alive, rtol=1e-10, atol=1e-12)
    assert np.allclose([expected_purchases(params, h, 52) for h in histories], ref_n, rtol=1e-9, atol=1e-12)
    spend = SpendParams(*(float(gg.params_[k]) for k in ("p", "q", "v")))
    ref_value = np.ravel(gg.conditional_expected_average_profit(cdnow_spend["x"], cdnow_spend["m"]))
    ours = [
        expected_order_value(spend, int(x), float(m)) for x, m in zip(cdnow_spend["x"], cdnow_spend["m"], strict=True)
    ]
    assert np.allclose(ours, ref_value, rtol=1e-12)


def test_forecast_is_expected_orders_times_expected_value() -> None:
    spend = SpendParams(6.25, 3.74, 15.44)
    h = History.of(orders=3, first_purchase_ms=0, last_purchase_ms=20 * 86_400_000, now_ms=40 * 86_400_000)
    assert (h.x, h.t_x, h.T) == (2, 20.0, 40.0)
    fc = forecast(CDNOW_BG, spend, h, orders=3, revenue=90.0, horizon_days=365)
    assert fc.lifetime_value == pytest.approx(
        expected_purchases(CDNOW_BG, h, 365) * expected_order_value(spend, 3, 30.0)
    )
    assert fc.churn_risk == pytest.approx(1 - p_alive(CDNOW_BG, h))
    assert 0 < fc.churn_risk < 1


def test_extreme_histories_do_not_overflow() -> None:
    h = History(x=400, t_x=1.0, T=5000.0)  # odds of having dropped out beyond any float
    assert p_alive(CDNOW_BG, h) == 0.0
    assert expected_purchases(CDNOW_BG, h, 365) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ForecastError):
        forecast(CDNOW_BG, SpendParams(6.25, 3.74, 15.44), History(1, 1.0, math.inf), 2, 10.0, 365)
