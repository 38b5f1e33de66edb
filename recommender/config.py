"""The recommender's configuration: one small, validated, frozen model.

The engine scores a user as a blend of two parts, each normalised per user to a maximum of 1:

* the *collaborative* part, from the configured ``algorithm``: ALS or BPR matrix factorisation (the user vector
  is folded in from the whole current history) or item-item neighbours (cosine or BM25) weighted by recency;
* the *sequential* part: item -> next-item transition counts within a window, decayed by distance, summed over
  the history with exponentially more weight on the most recent items.

The defaults are the configuration tuned on a validation split of the Amazon Beauty data (see
``docs/recommender.md``); they are what the API serves and what ``ecrm evaluate`` measures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Algorithm = Literal["als", "bpr", "cosine", "bm25"]
ALGORITHMS: tuple[Algorithm, ...] = ("als", "bpr", "cosine", "bm25")
FACTOR_ALGORITHMS: frozenset[str] = frozenset({"als", "bpr"})


class RecommenderConfig(BaseModel):
    """How a model is trained and how a request is scored. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- collaborative part ---
    algorithm: Algorithm = Field("als", description="als, bpr, cosine or bm25 (item-item)")
    factors: int = Field(64, ge=1, le=1024, description="latent factors (als, bpr)")
    regularization: float = Field(0.1, ge=0, description="L2 regularisation (als, bpr)")
    alpha: float = Field(40.0, gt=0, description="ALS confidence scale: c = alpha * weight")
    iterations: int = Field(15, ge=1, le=10_000, description="ALS iterations or BPR epochs")
    learning_rate: float = Field(0.01, gt=0, description="BPR learning rate")
    neighbours: int = Field(100, ge=1, description="neighbours kept per item (cosine, bm25)")
    bm25_k1: float = Field(1.2, ge=0)
    bm25_b: float = Field(0.75, ge=0, le=1)
    half_life_days: float | None = Field(
        30.0, gt=0, description="confidence halves per this age relative to the user's latest event"
    )

    # --- blend ---
    collaborative_weight: float = Field(0.5, ge=0, description="weight of the collaborative part")
    sequence_weight: float = Field(1.0, ge=0, description="weight of the sequential (transition) part")
    popularity_weight: float = Field(1e-6, ge=0, description="popularity tie-break / fallback weight")

    # --- sequence awareness ---
    recency_decay: float = Field(0.5, gt=0, le=1, description="history weight factor per step back in time")
    max_history: int = Field(50, ge=1, description="most recent distinct items of a history that are used")
    transition_window: int = Field(20, ge=1, le=100, description="items ahead counted as following an item")
    transition_decay: float = Field(0.8, gt=0, le=1, description="transition weight factor per step apart")
    transition_backward: float = Field(0.0, ge=0, description="weight of reversed transitions")
    transition_norm: float = Field(0.5, ge=0, le=1, description="exponent of the row-sum normalisation")
    transition_neighbours: int = Field(200, ge=1, description="transitions kept per item")
    transition_max_gap_hours: float | None = Field(
        None, gt=0, description="ignore pairs of events further apart than this (None: no limit)"
    )

    # --- candidate retrieval (large catalogues; see recommender/candidates.py) ---
    candidates_min_items: int = Field(
        20_000, ge=0, description="score only retrieved candidates from this catalogue size on (0: always)"
    )
    ann_candidates: int = Field(
        100, ge=1, le=10_000, description="items taken from the nearest-neighbour index per request (als, bpr)"
    )
    ann_probe: int = Field(8, ge=1, le=100_000, description="index lists scanned per request (als, bpr)")
    ann_lists: int | None = Field(None, ge=1, description="index lists (None: about the square root of items)")

    # --- the learned ranking stage (recommender/ranker.py, docs/recommender.md "Ranking stage") ---
    ranker: bool = Field(True, description="learn a LambdaMART ranking stage at every fit when the log allows it")
    ranker_candidates: int = Field(100, ge=1, le=1000, description="the blend's best items re-ranked per request")
    ranker_trending: int = Field(20, ge=0, le=1000, description="the most trending items added as candidates")
    ranker_window: float = Field(
        0.2, gt=0, lt=1, description="share of the log (the newest interactions) whose items label the cut-off"
    )
    ranker_cutoffs: int = Field(
        3, ge=1, le=10, description="past cut-offs the ranker learns from (each labelled by the window after it)"
    )
    ranker_min_queries: int = Field(
        100, ge=1, description="users with a labelled future needed to learn a ranker (fewer: the blend alone)"
    )
    ranker_max_queries: int = Field(
        5_000, ge=1, description="users (queries) per cut-off the ranker learns from at most"
    )
    ranker_train_users: int = Field(
        10_000, ge=0, description="users of the past log the ranker's base model learns from (0: all)"
    )
    ranker_trees: int = Field(100, ge=1, le=5000, description="boosting rounds")
    ranker_leaves: int = Field(15, ge=2, le=1024, description="leaves per tree")
    ranker_learning_rate: float = Field(0.05, gt=0, le=1)
    ranker_time_share: float = Field(
        0.5, ge=0, description="the ranking stage may take this share of the base fit's time (ECRM_RANKER_TIME_SHARE)"
    )
    ranker_gate: bool = Field(
        True, description="use the ranker only where it beats the blend on validation users (false: everywhere)"
    )
    ranker_min_seconds: float = Field(4.0, ge=0, description="... but at least this many (CPU) seconds")

    # --- resources ---
    num_threads: int = Field(1, ge=0, description="threads of implicit's fit (0: all cores)")
    blas_threads: int = Field(1, ge=1, description="BLAS threads while training and evaluating")
    random_state: int | None = Field(0, description="seed of the factor initialisation")

    @property
    def uses_factors(self) -> bool:
        return self.algorithm in FACTOR_ALGORITHMS

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> RecommenderConfig:
        """Parse a JSON object; raises ValueError on bad input."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise ValueError(f"invalid recommender configuration: {exc}") from exc

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> RecommenderConfig:
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ValueError(f"invalid recommender configuration: {exc}") from exc

    @classmethod
    def from_file(cls, path: Path) -> RecommenderConfig:
        """Read a YAML or JSON file holding one mapping of fields (a missing field keeps its default)."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read configuration {path}: {exc}") from exc
        values = _parse_mapping(text, path)
        return cls.from_mapping(values)


def _parse_mapping(text: str, path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot parse configuration {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"configuration {path} must hold a mapping of fields, got {type(data).__name__}")
    return data
