"""Item-item neighbour parts (cosine, BM25) on implicit's ``all_pairs_knn``.

The similarity matrix (items x items, the item itself left out) is applied to a recency-weighted history:
a request's collaborative score is a sparse row lookup and weighted sum, like the sequential part.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.nearest_neighbours import all_pairs_knn, bm25_weight, normalize

from recommender.config import RecommenderConfig
from recommender.weighting import drop_diagonal


def _weighted_items(matrix: sp.csr_matrix, config: RecommenderConfig) -> sp.csr_matrix:
    """Users x items matrix weighted for the similarity the configuration asks for."""
    if config.algorithm == "bm25":
        return sp.csr_matrix(bm25_weight(matrix.T, config.bm25_k1, config.bm25_b).T, dtype=np.float64)
    if config.algorithm == "cosine":
        return sp.csr_matrix(normalize(matrix.T).T, dtype=np.float64)
    raise ValueError(f"not an item-item algorithm: {config.algorithm}")


def fit_similarity(matrix: sp.csr_matrix, config: RecommenderConfig) -> sp.csr_matrix:
    """Items x items similarity with ``neighbours`` entries per row (besides the item itself)."""
    weighted = _weighted_items(sp.csr_matrix(matrix, dtype=np.float64), config)  # all_pairs_knn takes doubles
    knn = all_pairs_knn(weighted, config.neighbours + 1, show_progress=False, num_threads=config.num_threads)
    return sp.csr_matrix(drop_diagonal(sp.csr_matrix(knn)), dtype=np.float32)
