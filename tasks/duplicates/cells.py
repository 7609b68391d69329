"""k-means cells for near-duplicate search (SemDeDup-style), as pure functions.

Each row lives in its nearest cell and is compared with the rows living in its `nprobe`
nearest cells, one matrix product per cell. One process and the sharded search
(`tasks.duplicates.sharded`) call these same functions on the same row sets in the same
order, so they find the same pairs with the same float32 similarities.
"""

from __future__ import annotations

from collections.abc import Callable

import faiss
import numpy as np

from tasks.core.vectors import MIN_POINTS_PER_LIST, max_lists, sample_rows

ASSIGN_BATCH = 65_536  # rows per quantizer search: fixed, so float results never depend on it
BLOCK_ELEMS = 1 << 22  # similarity floats per matrix product (16 MB)
SIM_MARGIN = 1e-3  # float32 products of unit vectors err by < d * 2**-24 (6e-5 at d=1024)


def cell_count(n: int) -> int:
    """~2 sqrt(n) cells: the per-cell products cost ~n^2 nprobe d / nlist, assigning costs
    n nlist d and k-means ~400 nlist^2 d, so their sum is smallest near there."""
    return max(1, min(int(2 * np.sqrt(n)), max_lists(n)))


def training_rows(n: int, seed: int) -> np.ndarray:
    """The sorted rows the cells are trained on: a seeded sample, bounded by the cell count
    (`MIN_POINTS_PER_LIST` a cell), so ~78 sqrt(n) rows however large n grows."""
    return sample_rows(n, cell_count(n) * MIN_POINTS_PER_LIST, seed)


def train_cells(xt: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """Spherical k-means centroids (nlist, d) of the training rows `xt` (FAISS)."""
    xt = np.ascontiguousarray(xt, dtype="float32")
    kmeans = faiss.Kmeans(xt.shape[1], nlist, niter=10, spherical=True, seed=seed)
    kmeans.train(xt)
    return kmeans.centroids


def assign_cells(x: np.ndarray, centroids: np.ndarray, nprobe: int) -> np.ndarray:
    """Each row's `nprobe` nearest cells, nearest first: (len(x), nprobe) int64.

    Searched `ASSIGN_BATCH` rows at a time from the first row of `x`; a caller that splits
    the rows starts each part at a multiple of `ASSIGN_BATCH` to get the same floats.
    """
    quantizer = faiss.IndexFlatIP(centroids.shape[1])
    quantizer.add(np.ascontiguousarray(centroids, dtype="float32"))
    cells = np.empty((len(x), nprobe), dtype="int64")
    for start in range(0, len(x), ASSIGN_BATCH):
        xb = np.ascontiguousarray(x[start : start + ASSIGN_BATCH], dtype="float32")
        cells[start : start + len(xb)] = quantizer.search(xb, nprobe)[1]
    return cells


def group_rows(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions sorted by label and where each label's run starts (CSR layout)."""
    order = np.argsort(labels, kind="stable")
    return order, np.searchsorted(labels[order], np.arange(labels.max() + 2))


def cell_pairs(
    x: np.ndarray, members: np.ndarray, probers: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prober, member, similarity) at or above threshold, prober != member; blocks of
    probers keep the similarity matrix under BLOCK_ELEMS floats. `x` may be a memory map:
    only the rows named are read.

    The float32 products only nominate candidates (within SIM_MARGIN below threshold): BLAS
    rounds differently with its thread count (one process vs a one-thread worker), so each
    candidate's similarity is recomputed in float64 and judged on that.
    """
    xm = x[members].T
    src, dst = [], []
    step = max(1, BLOCK_ELEMS // len(members))
    for start in range(0, len(probers), step):
        q = probers[start : start + step]
        qi, mi = np.nonzero(x[q] @ xm >= threshold - SIM_MARGIN)
        src.append(q[qi])
        dst.append(members[mi])
    i, j = np.concatenate(src), np.concatenate(dst)
    i, j = i[i != j], j[i != j]
    sim = exact_similarity(x, i, j)
    hit = sim >= threshold
    return i[hit], j[hit], sim[hit].astype("float32")


def exact_similarity(x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Inner products of rows i and j in float64: the same value whatever BLAS does.

    Taken `BLOCK_ELEMS` floats of pairs at a time: a cell of near-copies nominates many
    candidates, and two float64 copies of all their rows cost hundreds of MB at once."""
    step = max(1, BLOCK_ELEMS // 4 // max(x.shape[1], 1))
    return np.concatenate([np.zeros(0, "float64"), *(
        np.einsum("ij,ij->i", x[i[s:s + step]].astype("float64"),
                  x[j[s:s + step]].astype("float64")) for s in range(0, len(i), step))])


def cell_hits(
    cells: np.ndarray, lo: int, hi: int, block: int = 1 << 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, slot, cell) of every entry of `cells` in lo..hi-1, in row then slot order;
    `cells` (n, nprobe) may be a memory map: it is read `block` rows at a time."""
    rows, slots, labels = [np.zeros(0, "int64")], [np.zeros(0, "int64")], [np.zeros(0, "int64")]
    for start in range(0, len(cells), block):
        part = np.asarray(cells[start : start + block])
        r, k = np.nonzero((part >= lo) & (part < hi))
        rows.append(r + start)
        slots.append(k)
        labels.append(part[r, k].astype("int64"))
    return np.concatenate(rows), np.concatenate(slots), np.concatenate(labels)


def pairs_in_cells(
    x: np.ndarray,
    cells: np.ndarray,
    lo: int,
    hi: int,
    threshold: float,
    advance: Callable[[int], None] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pair keys and similarities found in cells lo..hi-1, cell by cell: each cell's
    members (rows living there, ascending) against its probers (rows whose `nprobe`
    nearest cells hold it, ascending). `advance(members)` reports progress."""
    rows, slots, labels = cell_hits(cells, lo, hi)
    keys: list[np.ndarray] = []
    sims: list[np.ndarray] = []
    home = slots == 0
    if not home.any():  # only probers here: no cell in the range has members
        return keys, sims
    by_home, home_ptr = group_rows(labels[home] - lo)
    by_probe, probe_ptr = group_rows(labels - lo)
    home_rows = rows[home]
    for c in range(len(home_ptr) - 1):
        members = home_rows[by_home[home_ptr[c] : home_ptr[c + 1]]]
        if len(members):
            i, j, s = cell_pairs(
                x, members, rows[by_probe[probe_ptr[c] : probe_ptr[c + 1]]], threshold
            )
            keys.append(pair_keys(i, j, len(cells)))
            sims.append(s)
            if advance is not None:
                advance(len(members))
    return keys, sims


def pair_keys(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """One int64 per unordered pair (n < 3e9): min * n + max."""
    return np.minimum(i, j) * n + np.maximum(i, j)


def unique_pairs(
    keys: list[np.ndarray], sims: list[np.ndarray], n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, similarity), i < j, each pair once, from pairs found in cell order (a pair
    can be found from both rows: the first finding's similarity is kept)."""
    key, first = np.unique(np.concatenate([np.zeros(0, "int64"), *keys]), return_index=True)
    sim = np.concatenate([np.zeros(0, "float32"), *sims])[first].astype("float32")
    return key // n, key % n, sim
