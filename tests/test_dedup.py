from __future__ import annotations

import numpy as np
import pytest

from tasks.core.config import DedupConfig
from tasks.dedup import choose_kept, dedup_vectors
from tasks.duplicates.pairs import exact_duplicates


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")


def planted(n: int = 3000, d: int = 64, n_dup: int = 150, seed: int = 0):
    """Random unit vectors + near-copies (cos ~0.97-0.995) + hard negatives (cos ~0.85)."""
    rng = np.random.default_rng(seed)
    base = _unit(rng.normal(size=(n, d)))
    src = rng.choice(n, size=2 * n_dup, replace=False)
    dup_src, neg_src = src[:n_dup], src[n_dup:]
    dups = _unit(base[dup_src] + rng.normal(size=(n_dup, d)) * rng.uniform(0.012, 0.03,
                                                                          (n_dup, 1)))
    negs = _unit(base[neg_src] + rng.normal(size=(n_dup, d)) * 0.08)
    x = np.vstack([base, dups, negs])
    truth = set(range(n, n + n_dup))
    return x, truth


@pytest.mark.parametrize("exact_below", [50_000, 100])  # flat range search, then IVF cells
def test_planted_near_duplicates_found(exact_below):
    x, truth = planted()
    cfg = DedupConfig(threshold=0.95, exact=False, exact_search_below=exact_below)
    keep, drops = dedup_vectors(x, [""] * len(x), cfg)
    dropped = {d[0] for d in drops}
    tp = len(dropped & truth)
    assert tp / max(1, len(dropped)) >= 0.95 and tp / len(truth) >= 0.95
    assert all(kept < dropped_ for dropped_, kept, _, _ in drops)  # first in order is kept
    assert keep.sum() == len(x) - len(drops)


def test_exact_duplicates_by_normalised_text():
    first = exact_duplicates(["Hello  World", "other", "hello world", "OTHER\n"])
    assert first.tolist() == [0, 1, 0, 1]


def test_choice_is_deterministic_chain():
    # 0~1 and 1~2 but not 0~2: 0 kept drops 1; 2 survives because 1 is gone.
    keep, drops = choose_kept(3, np.array([0, 1]), np.array([1, 2]), np.array([0.97, 0.97]))
    assert keep.tolist() == [True, False, True] and drops == [(1, 0, pytest.approx(0.97))]


def test_audit_lists_exact_and_near():
    x = _unit(np.array([[1, 0, 0], [1, 0.01, 0], [0, 1, 0], [0, 0, 1]], dtype="float32"))
    keep, drops = dedup_vectors(x, ["a", "b", "c", "C"], DedupConfig(threshold=0.99))
    assert keep.tolist() == [True, False, True, False]
    assert sorted((d[0], d[1], d[3]) for d in drops) == [(1, 0, "near"), (3, 2, "exact")]


def test_ivf_cells_find_planted_duplicates_in_clustered_data():
    # Uneven clusters (cells of very different sizes); copies at cosine ~0.99 of a random
    # row, everything else at cosine < 0.6 to its neighbours.
    rng = np.random.default_rng(3)
    n, d, n_dup = 6000, 48, 200
    centres = _unit(rng.normal(size=(40, d)))
    sizes = 1.0 / (np.arange(40) + 2.0)
    x = _unit(centres[rng.choice(40, size=n, p=sizes / sizes.sum())]
              + rng.normal(size=(n, d)) * 0.25)
    rows = rng.choice(n, size=2 * n_dup, replace=False)
    src, dst = rows[:n_dup], rows[n_dup:]
    x[dst] = _unit(x[src] + rng.normal(size=(n_dup, d)) * 0.02)
    truth = dict(zip(np.maximum(src, dst).tolist(), np.minimum(src, dst).tolist(),
                     strict=True))
    cfg = DedupConfig(threshold=0.95, exact=False, exact_search_below=1000)
    keep, drops = dedup_vectors(x, [""] * n, cfg)
    found = {dropped: kept for dropped, kept, _, _ in drops}
    assert set(found) <= set(truth)  # the rest is kept
    assert len(found) >= 0.99 * len(truth)
    assert all(truth[dropped] == kept for dropped, kept in found.items())
    assert all(abs(s - float(x[a] @ x[b])) < 1e-5 for a, b, s, _ in drops)
    flat_keep, _ = dedup_vectors(x, [""] * n, cfg.model_copy(update={"exact_search_below": n + 1}))
    assert (keep == flat_keep).mean() >= 0.999
