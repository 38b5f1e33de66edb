"""The recommender's exceptions.

``ValueError`` (built in) is raised at every public boundary for bad input: unknown configuration fields,
malformed interaction arrays, a corrupt model blob, a negative ``n``.

* :class:`ModelFitError` (``RuntimeError``): training produced unusable factors (NaN or infinite).
* :class:`NotFittedError` (``ValueError``): a model was used before :meth:`fit` or loading.
"""

from __future__ import annotations


class ModelFitError(RuntimeError):
    """Training produced NaN or infinite factors (try more regularisation or a smaller learning rate)."""


class NotFittedError(ValueError):
    """The model has not been fitted or loaded."""
