"""Embedding-space health on a bounded sample: clusters, labels, spectrum, neighbours."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    normalized_mutual_info_score,
    silhouette_score,
)

_BLOCK = 1024  # rows of similarities at a time (1024 x n float64)


def nearest_neighbour_similarity(x: np.ndarray) -> np.ndarray:
    """Each row's cosine to its nearest other row (unit vectors, exact), in float64: a float32
    dot product moves in its last bit with the BLAS kernel's path, and a metric rounded to 6
    decimals then differs between two builds of the same vectors."""
    x = np.asarray(x, dtype="float64")
    if len(x) < 2:
        return np.einsum("ij,ij->i", x, x)
    out = np.empty(len(x))
    for lo in range(0, len(x), _BLOCK):
        sims = x[lo:lo + _BLOCK] @ x.T
        sims[np.arange(len(sims)), np.arange(lo, lo + len(sims))] = -np.inf  # not itself
        out[lo:lo + len(sims)] = sims.max(axis=1)
    return out


def space_health(x: np.ndarray, labels: list[str] | None, seed: int, nn: np.ndarray
                 ) -> dict[str, float | int]:
    """Silhouette of k-means clusters, NMI/ARI against labels, PCA spectrum, NN similarity.

    Args:
        x: (n, d) unit vectors (already a bounded sample).
        labels: one label per row, or None.
        seed: k-means seed.
        nn: `nearest_neighbour_similarity(x)`, which the histogram plots too.
    """
    x = np.asarray(x, dtype="float64")  # every metric below is rounded to 6 decimals
    n = len(x)
    out: dict[str, float | int] = {"health_sample": n}
    n_labels = len(set(labels)) if labels else 0
    k = n_labels if n_labels >= 2 else int(np.clip(np.sqrt(n / 2), 2, 50))
    if n > k >= 2:
        clusters = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
        out["kmeans_k"] = k
        out["silhouette"] = round(float(silhouette_score(x, clusters, metric="cosine")), 6)
        if n_labels >= 2:
            out["nmi"] = round(float(normalized_mutual_info_score(labels, clusters)), 6)
            out["ari"] = round(float(adjusted_rand_score(labels, clusters)), 6)
    centred = x - x.mean(axis=0)
    var = np.linalg.svd(centred, compute_uv=False) ** 2
    ratio = np.cumsum(var) / var.sum()
    for c in (10, 50):
        if c < len(ratio):
            out[f"pca_variance_top_{c}"] = round(float(ratio[c - 1]), 6)
    for q in (5, 50, 95):
        out[f"nn_similarity_p{q}"] = round(float(np.percentile(nn, q)), 6)
    return out
