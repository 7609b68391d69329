"""Vector conventions every stage keeps: float32 matrices stored as `fixed_size_list<float32>`,
seeded row samples, and the k-means sizing rule of FAISS."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# FAISS warns that k-means is under-trained below 39 points per centroid.
MIN_POINTS_PER_LIST = 39


def vectors_to_arrow(x: np.ndarray) -> pa.FixedSizeListArray:
    """(n, d) float32 matrix -> `fixed_size_list<float32>[d]` without copying rows one by one."""
    x = np.ascontiguousarray(x, dtype="float32")
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-D (n, d) array, got shape {x.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def arrow_to_vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """`fixed_size_list<float32>[d]` column -> contiguous (n, d) float32 matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array(
            [], type=column.type
        )
    if not pa.types.is_fixed_size_list(column.type):
        raise TypeError(f"expected fixed_size_list<float32> vectors, got {column.type}")
    d = column.type.list_size
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(len(column), d), dtype="float32")


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted seeded sample of at most `size` of `n` row numbers, without repeats."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(n, size), replace=False))


def max_lists(n: int) -> int:
    """The most k-means lists `n` training points support (`MIN_POINTS_PER_LIST` each)."""
    return n // MIN_POINTS_PER_LIST
