"""The recommender library: models on implicit (ALS, BPR, cosine, BM25) blended with sequential transitions.

The API and the offline evaluation use the same objects::

    model = Engine(RecommenderConfig()).fit(interactions)       # trainer
    blob = model.to_bytes()                                     # stored as a model version in Redis
    model = Engine.from_bytes(blob)                             # every API replica
    model.recommend(history, n=10, exclude={...}, allowed=model.mask(category_items))
    model.similar_items(item_id, n=10)
    model.cart_items(cart_item_ids, n=10)

See ``docs/recommender.md``.
"""

from recommender.base import ItemMask, Recommendation, RecommenderBase, Scored
from recommender.config import ALGORITHMS, Algorithm, RecommenderConfig
from recommender.data import HistoryBatch, HistoryEntry, Interactions, aggregate, encode, interactions_batch
from recommender.errors import ModelFitError, NotFittedError
from recommender.model import Engine, TrainingInfo
from recommender.popularity import Popularity
from recommender.threads import blas_threads, pin_blas_threads

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Engine",
    "HistoryBatch",
    "HistoryEntry",
    "Interactions",
    "ItemMask",
    "ModelFitError",
    "NotFittedError",
    "Popularity",
    "Recommendation",
    "RecommenderBase",
    "RecommenderConfig",
    "Scored",
    "TrainingInfo",
    "aggregate",
    "blas_threads",
    "encode",
    "interactions_batch",
    "pin_blas_threads",
]
