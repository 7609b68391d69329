"""Stable FAISS ids of chunks, and the map back from FAISS ids to chunk-table rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tasks.core.fingerprint import sha256_text


def chunk_int_ids(chunk_ids: Sequence[str]) -> np.ndarray:
    """Stable 60-bit FAISS ids from chunk ids (the same chunk always gets the same id)."""
    return np.array([int(sha256_text(c)[:15], 16) for c in chunk_ids], dtype="int64")


class IdMap:
    """FAISS ids -> row positions of the chunk table (-1 stays -1)."""

    def __init__(self, int_ids: np.ndarray) -> None:
        self.order = np.argsort(int_ids, kind="stable")
        self.sorted = int_ids[self.order]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        if not len(self.sorted):
            return np.full(ids.shape, -1, dtype="int64")
        pos = np.clip(np.searchsorted(self.sorted, ids), 0, len(self.sorted) - 1)
        return np.where((ids >= 0) & (self.sorted[pos] == ids), self.order[pos], -1)
