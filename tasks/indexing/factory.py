"""Which FAISS index a set of vectors gets: the factory string, nlist and the rule of
`index.factory: auto` (n, d, a memory budget and a fixed cost model; never a timing)."""

from __future__ import annotations

import math

import faiss

from tasks.core.config import IndexConfig
from tasks.core.vectors import MIN_POINTS_PER_LIST, max_lists

# The cost model of `factory: auto`: one exact query scans n x d float32 values, bound by
# memory bandwidth; at about 8 GB/s on one core that is 2e6 values per millisecond. A constant
# of the code, never a measurement of this machine: the same n and d give the same index on
# a loaded machine and an idle one. (Measured here idle: 499 x 384 in 0.014 ms, far faster.)
SCAN_VALUES_PER_MS = 2e6


PQ_BITS = 8  # one byte per sub-quantizer code


def auto_nlist(n: int) -> int:
    """~4*sqrt(n) lists (FAISS guidance: 4-16 sqrt(n)), with >= 39 training points each."""
    return max(1, min(int(round(4 * math.sqrt(n))), max_lists(n)))


def pq_subquantizers(d: int, bytes_per_vector: float) -> int:
    """The most PQ sub-quantizers (one byte each) that divide `d` and fit `bytes_per_vector`."""
    fits = [m for m in range(1, d + 1) if d % m == 0 and m * PQ_BITS / 8 <= bytes_per_vector]
    if not fits:
        raise ValueError(f"index.max_memory_mb: {bytes_per_vector:.2f} bytes per vector is "
                         "below the smallest product-quantizer code (1 byte); raise it")
    return fits[-1]


def auto_factory(cfg: IndexConfig, n: int, d: int) -> tuple[str, str]:
    """(factory template, why) of `factory: auto` from `n`, `d`, `max_memory_mb` and the
    cost model (`SCAN_VALUES_PER_MS`) alone: exact search (Flat) while its estimated time
    per query stays within `max_query_ms`, else IVF-Flat; IVF-PQ when float vectors would not
    fit `max_memory_mb`."""
    flat_mb, est_ms = n * d * 4 / 2**20, n * d / SCAN_VALUES_PER_MS
    if cfg.max_memory_mb is not None and flat_mb > cfg.max_memory_mb:
        m = pq_subquantizers(d, cfg.max_memory_mb * 2**20 / max(n, 1))
        return f"IVF{{nlist}},PQ{m}", (f"{n} x {d} float vectors take {flat_mb:.1f} MB > "
                                       f"index.max_memory_mb={cfg.max_memory_mb}: "
                                       f"{m}-byte codes")
    within = est_ms <= cfg.max_query_ms
    why = (f"an exact query over {n} x {d} is estimated at {est_ms:.3g} ms "
           f"({SCAN_VALUES_PER_MS:.0e} values/ms), {'within' if within else 'over'} "
           f"index.max_query_ms={cfg.max_query_ms}")
    return ("Flat" if within else "IVF{nlist},Flat"), why


def resolve_factory(cfg: IndexConfig, n: int, d: int | None = None) -> tuple[str, int | None]:
    """The concrete factory string and nlist (None for non-IVF) for `n` `d`-d vectors
    (`auto_factory` decides `factory: auto`, which needs `d`)."""
    factory = cfg.factory
    if factory == "auto":
        if d is None:
            raise ValueError("index.factory 'auto' needs the vectors' dimension")
        factory = auto_factory(cfg, n, d)[0]
    if not factory.startswith("IVF"):
        return factory, None
    nlist = auto_nlist(n) if cfg.nlist == "auto" else cfg.nlist
    if "{nlist}" not in factory:
        nlist = int(factory[3:].split(",")[0].split("_")[0])
    if nlist > n:
        raise ValueError(
            f"index.nlist: {nlist} lists for {n} vectors; nlist must be <= the vector count "
            f"(FAISS wants >= {MIN_POINTS_PER_LIST} per list: <= {max(1, max_lists(n))} here)"
        )
    return factory.replace("{nlist}", str(nlist)), nlist


def check_factory(cfg: IndexConfig, d: int, n: int | None = None) -> None:
    """Refuse, before any stage runs, a factory string FAISS cannot parse for `d`-d vectors,
    and (when the vector count `n` of the previous run is known) more lists than vectors."""
    if cfg.factory == "auto":
        return
    new_index(d, cfg.factory.replace("{nlist}", "1"), cfg.factory)
    if n is not None and cfg.factory.startswith("IVF"):
        resolve_factory(cfg, n)  # raises when nlist exceeds the vectors


def new_index(d: int, factory: str, asked: str | None = None) -> faiss.Index:
    """An empty inner-product index from a FAISS factory string; ValueError in FAISS's own
    words, naming the string as the user wrote it (`asked`) when it is refused."""
    try:
        return faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        reason = str(err).strip().rsplit(": ", 1)[-1] or "cannot parse"
        raise ValueError(f"index.factory: FAISS cannot build {asked or factory!r} for {d}-d "
                         f"vectors ({reason}); e.g. 'Flat', 'IVF{{nlist}},Flat', "
                         "'IVF{nlist},PQ16', 'HNSW32'") from None
