"""Fitting the buy-till-you-die models with ``lifetimes`` (maximum likelihood), behind a small typed boundary.

``lifetimes`` is imported lazily (it pulls in pandas), so readers of fitted parameters (the API) never load it.
Its errors, warnings and console output are contained here: a failed fit is a :class:`ModelFitError` with the
reason, and the caller keeps serving without a model ("not enough data").
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from analytics.btyd import History, PurchaseParams, SpendParams, Variant, expected_purchases, p_alive

_PENALIZERS = (0.0, 0.001, 0.01)  # tried in turn: a small L2 penalty helps degenerate bases converge
_PARAM_RANGE = (1e-4, 1e6)  # usable purchase-model parameters (days); beyond, the fit sits on a boundary
_PROBE_DAYS = 365.0


class ModelFitError(ValueError):
    """The model could not be fitted; the message says why."""


@dataclass(frozen=True, slots=True)
class FitInput:
    """Per purchasing customer: repeat purchases ``x``, recency ``t_x`` and age ``T`` (days), orders, revenue."""

    x: Sequence[int]
    t_x: Sequence[float]
    T: Sequence[float]
    orders: Sequence[int]
    revenue: Sequence[float]


def check_enough(data: FitInput, min_customers: int, min_repeaters: int) -> None:
    """Raise :class:`ModelFitError` when the base is too small to fit."""
    n = len(data.x)
    repeaters = sum(1 for x in data.x if x > 0)
    if n < min_customers or repeaters < min_repeaters:
        raise ModelFitError(
            f"not enough data: the model needs at least {min_customers} purchasing customers of whom "
            f"{min_repeaters} bought more than once; the base has {n} ({repeaters} repeat buyers)"
        )


def fit_purchases(data: FitInput, variant: Variant) -> PurchaseParams:
    """Fit BG/NBD or MBG/NBD to the base (days)."""
    with _contained():
        from lifetimes import BetaGeoFitter, ModifiedBetaGeoFitter

    fitter_class = BetaGeoFitter if variant is Variant.BGNBD else ModifiedBetaGeoFitter
    x = np.asarray(data.x, dtype=float)
    t_x = np.asarray(data.t_x, dtype=float)
    T = np.asarray(data.T, dtype=float)
    if float(T.max(initial=0.0)) <= 0.0:
        raise ModelFitError("not enough data: every customer bought for the first time just now (age 0 days)")
    last_error = ""
    for penalizer in _PENALIZERS:
        try:
            with _contained():
                fitted = fitter_class(penalizer_coef=penalizer).fit(x, t_x, T)
            params = {k: float(v) for k, v in fitted.params_.items()}
        except Exception as exc:  # a third-party fit: any failure means "no model"
            last_error = f"{type(exc).__name__}: {str(exc).strip()}"
            continue
        result = PurchaseParams(variant, params["r"], params["alpha"], params["a"], params["b"])
        problem = _degenerate(result, data)
        if problem is None:
            return result
        last_error = problem
    raise ModelFitError(f"the {variant.value} purchase model could not be fitted to this base: {last_error}")


def fit_spend(data: FitInput) -> SpendParams:
    """Fit Gamma-Gamma to the mean order value of every customer with positive revenue."""
    with _contained():
        from lifetimes import GammaGammaFitter

    pairs = [(o, r / o) for o, r in zip(data.orders, data.revenue, strict=True) if o > 0 and r > 0]
    if len(pairs) < 2:
        raise ModelFitError("not enough data: fewer than 2 customers with a positive order value")
    orders = np.asarray([o for o, _ in pairs], dtype=float)
    means = np.asarray([m for _, m in pairs], dtype=float)
    last_error = ""
    for penalizer in _PENALIZERS:
        try:
            with _contained():
                fitted = GammaGammaFitter(penalizer_coef=penalizer).fit(orders, means)
            params = {k: float(v) for k, v in fitted.params_.items()}
        except Exception as exc:  # a third-party fit: any failure means "no model"
            last_error = f"{type(exc).__name__}: {str(exc).strip()}"
            continue
        result = SpendParams(params["p"], params["q"], params["v"])
        if _finite_positive(result.p, result.q, result.v) and result.q > 1:
            return result
        last_error = f"parameters without a finite mean {result.as_dict()} (q must exceed 1)"
    raise ModelFitError(f"the Gamma-Gamma spend model did not converge ({last_error})")


def _degenerate(params: PurchaseParams, data: FitInput) -> str | None:
    """Why fitted parameters cannot be used (None when they can).

    A base in which hardly anyone seems to have stopped buying drives the dropout parameters ``a``, ``b`` to the
    edge of their range, where the closed forms lose all precision; such a fit is refused rather than served.
    """
    values = {"r": params.r, "alpha": params.alpha, "a": params.a, "b": params.b}
    if not all(math.isfinite(v) and _PARAM_RANGE[0] <= v <= _PARAM_RANGE[1] for v in values.values()):
        shown = ", ".join(f"{k}={v:.3g}" for k, v in values.items())
        return (
            f"the fit ends at the edge of the parameter range ({shown}): too few customers seem to have stopped buying"
        )
    for x, t_x, T in zip(data.x, data.t_x, data.T, strict=True):
        h = History(x, t_x, T)
        n, alive = expected_purchases(params, h, _PROBE_DAYS), p_alive(params, h)
        if not (math.isfinite(n) and math.isfinite(alive) and n >= 0):
            return f"the fitted model gives no finite forecast for a history x={x} t_x={t_x:.3f} T={T:.3f}"
    return None


def _finite_positive(*values: float) -> bool:
    return all(math.isfinite(v) and v > 0 for v in values)


@contextlib.contextmanager
def _contained() -> Iterator[None]:
    """Keep the library's warnings filters and console output to itself."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        np_err = np.seterr(all="ignore")
        try:
            yield
        finally:
            np.seterr(**np_err)
