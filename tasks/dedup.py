"""dedup: reduced vectors + chunk texts -> kept `vectors.parquet` + audit `dropped.parquet`.

Schema out: chunk_id, doc_id, source, title, text, vector; dropped: dropped_chunk_id,
kept_chunk_id, similarity, kind ('exact' | 'near'), doc_id, source, group_chunk_id, text.
Invariant: every input chunk is kept or dropped with the kept chunk standing for its group
(which the index carries, so search still reaches it). Of a duplicate group the chunk with
the shortest source path is kept, then the lexicographically first, then the first in corpus
order (`keep_order`); the choice only moves when that member changes or goes. Rows stay in
corpus order. Memory is O(n*d), never O(n^2).
"""

from __future__ import annotations

import re
import unicodedata

import faiss
import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.core.catalog import CHUNKS, DROPPED, KEPT, REDUCED, VECTOR_COLUMN
from tasks.core.config import DedupConfig
from tasks.core.fingerprint import sha256_text
from tasks.core.progress import Progress, task_logger
from tasks.core.runtime import main, start_stage
from tasks.core.vectors import (
    MIN_POINTS_PER_LIST,
    max_lists,
    sample_rows,
    vectors_to_arrow,
)

_QUERY_BATCH = 4096
_ASSIGN_BATCH = 65_536
_BLOCK_ELEMS = 1 << 22  # similarity floats per matrix product (16 MB)


def text_key(text: str) -> str:
    """Hash of the text with case, Unicode form and whitespace normalised away."""
    return sha256_text(re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold())


def exact_duplicates(texts: list[str]) -> np.ndarray:
    """For each row, the index of the first row with the same normalised text (self if none)."""
    first: dict[str, int] = {}
    return np.array([first.setdefault(text_key(t), i) for i, t in enumerate(texts)],
                    dtype="int64")


def _flat_pairs(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact range search; each pair is kept from its earlier row's query (symmetric)."""
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    src, dst, sim = [], [], []
    for start in range(0, len(x), _QUERY_BATCH):
        lims, dist, ids = index.range_search(x[start:start + _QUERY_BATCH], threshold)
        rows = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims).astype("int64"))
        keep = ids > rows
        src.append(rows[keep])
        dst.append(ids[keep])
        sim.append(dist[keep])
    return np.concatenate(src), np.concatenate(dst), np.concatenate(sim).astype("float32")


def _cells(x: np.ndarray, cfg: DedupConfig) -> np.ndarray:
    """k-means cells (FAISS, on a sample) and each row's `nprobe` nearest: (n, nprobe) int64.

    ~2 sqrt(n) cells: the per-cell products cost ~n^2 nprobe d / nlist, assigning costs
    n nlist d and k-means ~400 nlist^2 d, so their sum is smallest near there.
    """
    n, d = x.shape
    nlist = max(1, min(int(2 * np.sqrt(n)), max_lists(n)))
    xt = x[sample_rows(n, nlist * MIN_POINTS_PER_LIST, cfg.seed)]
    kmeans = faiss.Kmeans(d, nlist, niter=10, spherical=True, seed=cfg.seed)
    kmeans.train(xt)
    quantizer = faiss.IndexFlatIP(d)
    quantizer.add(kmeans.centroids)
    nprobe = min(cfg.nprobe, nlist)
    cells = np.empty((n, nprobe), dtype="int64")
    for start in range(0, n, _ASSIGN_BATCH):
        cells[start:start + _ASSIGN_BATCH] = quantizer.search(x[start:start + _ASSIGN_BATCH],
                                                              nprobe)[1]
    return cells


def _groups(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions sorted by label and where each label's run starts (CSR layout)."""
    order = np.argsort(labels, kind="stable")
    return order, np.searchsorted(labels[order], np.arange(labels.max() + 2))


def _cell_pairs(x: np.ndarray, members: np.ndarray, probers: np.ndarray, threshold: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prober, member, similarity) at or above threshold, prober != member; blocks of
    probers keep the similarity matrix under _BLOCK_ELEMS floats."""
    xm = x[members].T
    src, dst, sim = [], [], []
    step = max(1, _BLOCK_ELEMS // len(members))
    for start in range(0, len(probers), step):
        q = probers[start:start + step]
        s = x[q] @ xm
        qi, mi = np.nonzero(s >= threshold)
        src.append(q[qi])
        dst.append(members[mi])
        sim.append(s[qi, mi])
    i, j, s = np.concatenate(src), np.concatenate(dst), np.concatenate(sim)
    other = i != j
    return i[other], j[other], s[other]


def _ivf_pairs(x: np.ndarray, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SemDeDup-style: each row lives in its nearest k-means cell and is compared with the
    rows living in its `nprobe` nearest cells, one matrix product per cell (BLAS).

    A pair is found when either row's nearest cells hold the other.
    """
    n = len(x)
    cells = _cells(x, cfg)
    by_home, home_ptr = _groups(cells[:, 0])
    by_probe, probe_ptr = _groups(cells.ravel())
    by_probe //= cells.shape[1]  # flat position -> row
    keys, sims = [np.zeros(0, "int64")], [np.zeros(0, "float32")]
    with Progress("dedup", n, "chunks") as bar:
        for c in range(len(home_ptr) - 1):
            members = by_home[home_ptr[c]:home_ptr[c + 1]]
            if len(members):
                i, j, s = _cell_pairs(x, members, by_probe[probe_ptr[c]:probe_ptr[c + 1]],
                                      cfg.threshold)
                keys.append(np.minimum(i, j) * n + np.maximum(i, j))
                sims.append(s)
                bar.advance(len(members))
    # a pair can be found from both rows: keep one (an int64 key per pair, n < 3e9)
    key, first = np.unique(np.concatenate(keys), return_index=True)
    return key // n, key % n, np.concatenate(sims)[first].astype("float32")


def near_duplicate_pairs(x: np.ndarray, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray]:
    """(i, j, similarity) for every pair i < j with cosine >= threshold (unit vectors).

    Exact below `exact_search_below` rows; above, a pair is missed only when neither row's
    `nprobe` nearest cells hold the other. Memory O(n*d) plus the pairs found.
    """
    x = np.ascontiguousarray(x, dtype="float32")
    if len(x) < 2:
        return np.zeros(0, "int64"), np.zeros(0, "int64"), np.zeros(0, "float32")
    if len(x) < cfg.exact_search_below:
        return _flat_pairs(x, cfg.threshold)
    return _ivf_pairs(x, cfg)


def choose_kept(n: int, i: np.ndarray, j: np.ndarray, sim: np.ndarray
                ) -> tuple[np.ndarray, list[tuple[int, int, float]]]:
    """Walk rows in order; a kept row drops its later neighbours. Returns (keep mask, drops)."""
    order = np.lexsort((j, i))
    i, j, sim = i[order], j[order], sim[order]
    starts = np.searchsorted(i, np.arange(n + 1))
    keep = np.ones(n, dtype=bool)
    drops: list[tuple[int, int, float]] = []
    for row in np.unique(i).tolist():  # rows without neighbours change nothing
        if not keep[row]:
            continue
        for k in range(starts[row], starts[row + 1]):
            if keep[j[k]]:
                keep[j[k]] = False
                drops.append((int(j[k]), row, float(sim[k])))
    return keep, drops


def dedup_vectors(x: np.ndarray, texts: list[str], cfg: DedupConfig
                  ) -> tuple[np.ndarray, list[tuple[int, int, float, str]]]:
    """Keep mask over rows and the (dropped, kept, similarity, kind) audit list."""
    n = len(x)
    keep = np.ones(n, dtype=bool)
    drops: list[tuple[int, int, float, str]] = []
    if cfg.exact:
        first = exact_duplicates(texts)
        for row in np.flatnonzero(first != np.arange(n)):
            keep[row] = False
            drops.append((int(row), int(first[row]), 1.0, "exact"))
    if cfg.near and keep.sum() > 1:
        rows = np.flatnonzero(keep)
        i, j, sim = near_duplicate_pairs(x if len(rows) == n else x[rows], cfg)
        sub_keep, near = choose_kept(len(rows), i, j, sim)
        keep[rows[~sub_keep]] = False
        drops += [(int(rows[a]), int(rows[b]), s, "near") for a, b, s in near]
    return keep, drops


def keep_order(sources: list[str]) -> np.ndarray:
    """Rows in the order they claim to be kept: shortest source path first (an original
    before its `-copy`, `-v2` or `/archive/` twin), then lexicographic, then corpus order
    (records in file order, chunks in text order)."""
    return np.array(sorted(range(len(sources)), key=lambda r: (len(sources[r]), sources[r], r)),
                    dtype="int64")


def dedup_by_priority(x: np.ndarray, texts: list[str], order: np.ndarray, cfg: DedupConfig
                      ) -> tuple[np.ndarray, list[tuple[int, int, float, str]]]:
    """`dedup_vectors` with rows taken in `order` (the first of a group in it is kept);
    the keep mask and the audit are in the input's row numbers."""
    keep, drops = dedup_vectors(np.ascontiguousarray(x[order]), [texts[i] for i in order], cfg)
    out = np.zeros(len(x), dtype=bool)
    out[order] = keep
    return out, [(int(order[a]), int(order[b]), s, k) for a, b, s, k in drops]


def group_of(drops: list[tuple[int, int, float, str]]) -> dict[int, int]:
    """Dropped row -> the kept row standing for its duplicate group.

    A row dropped as an exact copy of a row that the near pass drops in turn belongs to the
    group of the row that survived: twins are followed until a kept row.
    """
    twin = {a: b for a, b, _, _ in drops}
    out = {}
    for row, first in twin.items():
        head = first
        while head in twin:
            head = twin[head]
        out[row] = head
    return out


def dedup_tables(chunks: pa.Table, x: np.ndarray, keep: np.ndarray,
                 drops: list[tuple[int, int, float, str]]) -> tuple[pa.Table, pa.Table]:
    """The kept rows (chunk columns + vector) and the audit table, in row order. Only the
    dropped rows are taken from the chunk table (Arrow `take`), never whole columns."""
    kept = chunks.select([c for c in KEPT.columns if c != VECTOR_COLUMN]).filter(pa.array(keep))
    kept = kept.append_column(VECTOR_COLUMN, vectors_to_arrow(x[keep]))
    audit, group = sorted(drops), group_of(drops)
    dropped_rows = chunks.take(pa.array([a for a, _, _, _ in audit], pa.int64()))
    ids = chunks.column("chunk_id")
    dropped = pa.table({
        "dropped_chunk_id": dropped_rows.column("chunk_id"),
        "kept_chunk_id": ids.take(pa.array([b for _, b, _, _ in audit], pa.int64())),
        "similarity": pa.array([s for _, _, s, _ in audit], pa.float32()),
        "kind": pa.array([k for _, _, _, k in audit], pa.string()),
        **{c: dropped_rows.column(c) for c in ("doc_id", "source")},
        "group_chunk_id": ids.take(pa.array([group[a] for a, _, _, _ in audit], pa.int64())),
        "text": dropped_rows.column("text")}, schema=DROPPED.schema())
    return kept, dropped


def dedup_counts(keep: np.ndarray, drops: list[tuple[int, int, float, str]]) -> dict[str, int]:
    """Rows in, kept, and dropped by kind."""
    return {"in": len(keep), "kept": int(keep.sum()),
            "exact": sum(d[3] == "exact" for d in drops),
            "near": sum(d[3] == "near" for d in drops)}


@task(name="dedup", cache_policy=NO_CACHE)
def dedup_task(root: str = ".") -> str:
    """Drop exact and near-duplicate chunks; write the kept rows and the audit table."""
    run = start_stage("dedup", root)
    cfg = run.params.dedup
    (vec, x), chunks = run.read_vectors(REDUCED), run.read(CHUNKS)
    if vec.column("chunk_id") != chunks.column("chunk_id"):
        raise ValueError("dedup: reduce vectors and chunk rows are not the same chunk_ids")
    keep, drops = dedup_by_priority(x, chunks.column("text").to_pylist(),
                                    keep_order(chunks.column("source").to_pylist()), cfg)
    kept, dropped = dedup_tables(chunks, x, keep, drops)
    counts = dedup_counts(keep, drops)
    fp = run.fingerprint()
    with run.output(fp, cfg) as out:
        out.write_table(KEPT, kept)
        out.write_table(DROPPED, dropped)
        out.record(model=run.inputs["reduce"]["model"], space=run.inputs["reduce"]["space"],
                   rows=counts, unit_vectors=run.inputs["reduce"].get("unit_vectors", False))
    task_logger().info("dedup: %d chunks -> %d kept (%d exact, %d near dropped) in %.1f s",
                       counts["in"], counts["kept"], counts["exact"], counts["near"],
                       run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(dedup_task)
