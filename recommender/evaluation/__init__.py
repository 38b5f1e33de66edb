"""Offline evaluation: dataset loaders, split protocols, ranking metrics and the runner behind ``ecrm evaluate``.

Models are scored through :meth:`recommender.base.RecommenderBase.masked_scores`, the same code that serves
the API's requests, in batches of users.
"""

from recommender.evaluation.datasets import FORMATS, Dataset, load_dataset
from recommender.evaluation.metrics import METRIC_NAMES, MetricSums
from recommender.evaluation.protocols import PROTOCOLS, Split, leave_one_out, time_split
from recommender.evaluation.runner import EvaluationReport, ModelReport, evaluate, evaluate_model

__all__ = [
    "FORMATS",
    "METRIC_NAMES",
    "PROTOCOLS",
    "Dataset",
    "EvaluationReport",
    "MetricSums",
    "ModelReport",
    "Split",
    "evaluate",
    "evaluate_model",
    "leave_one_out",
    "load_dataset",
    "time_split",
]
