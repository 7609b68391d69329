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


# How far a normalised vector's length may stray from 1: fp16 and int8 encoders round, a
# flipped byte in a stored float does far worse (norm 1.295, 1e38, NaN).
UNIT_NORM_TOLERANCE = 1e-2


# Elements of `x` checked at a time: the float64 copy a length needs is taken per block
# (8 MB), not of the whole matrix (a 59k x 384 matrix cost 360 MB of float64 temporaries).
CHECK_BLOCK_ELEMS = 1 << 20


def vector_problem(x: np.ndarray, unit: bool) -> str | None:
    """Why the rows of `x` cannot be used (the first bad row: a NaN or infinite value, or a
    length other than 1 when `unit`), or None when they can."""
    finite = np.concatenate([np.ones(0, bool), *(
        np.isfinite(x[s:s + step]).all(axis=1) for s, step in _blocks(x))])
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        return f"row {row} holds a NaN or infinite value ({(~finite).sum()} rows in all)"
    if unit and len(x):
        norms = np.concatenate([np.linalg.norm(x[s:s + step].astype("float64"), axis=1)
                                for s, step in _blocks(x)])
        off = np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE
        if off.any():
            row = int(np.flatnonzero(off)[0])
            return (f"row {row} has length {norms[row]:.4g}, expected 1 (normalised vectors; "
                    f"{off.sum()} rows off)")
    return None


def _blocks(x: np.ndarray) -> list[tuple[int, int]]:
    """(start, rows) of the row blocks of `x` that `CHECK_BLOCK_ELEMS` elements hold."""
    step = max(1, CHECK_BLOCK_ELEMS // max(x.shape[1] if x.ndim == 2 else 1, 1))
    return [(s, step) for s in range(0, len(x), step)]


def checked_vectors(column: pa.ChunkedArray | pa.Array, where: str, unit: bool) -> np.ndarray:
    """`arrow_to_vectors`, refused (ValueError naming `where` and the row) when a vector is
    not finite or, for normalised vectors (`unit`), not of length 1."""
    x = arrow_to_vectors(column)
    problem = vector_problem(x, unit)
    if problem:
        raise ValueError(f"{where}: {problem}; rerun the stage that wrote it")
    return x
