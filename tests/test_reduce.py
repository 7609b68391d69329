from __future__ import annotations

import numpy as np
import pytest

from tasks.core.config import ReduceConfig
from tasks.query.transform import VectorTransform
from tasks.reduce import reduce_vectors


def _data(n: int = 2000, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * np.geomspace(5, 0.05, d)
    return x.astype("float32")


def test_pca_keeps_top_variance_and_normalises():
    x = _data()
    y, t = reduce_vectors(x, ReduceConfig(pca_dims=8))
    assert y.shape == (2000, 8)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    assert t.explained_variance_ratio.sum() > 0.8


def test_whitening_gives_unit_variance():
    y, _ = reduce_vectors(_data(), ReduceConfig(pca_dims=4, whiten=True, l2_normalize=False))
    np.testing.assert_allclose(y.var(axis=0, ddof=1), 1.0, rtol=0.05)


def test_no_pca_is_l2_only_and_input_untouched():
    x = _data()
    before = x.copy()
    y, t = reduce_vectors(x, ReduceConfig())
    np.testing.assert_array_equal(x, before)
    assert t.components is None and y.shape == x.shape
    np.testing.assert_allclose(y, x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-5)


def test_transform_roundtrip_applies_identically(tmp_path):
    x = _data()
    y, t = reduce_vectors(x, ReduceConfig(pca_dims=6, whiten=True, fit_sample=500))
    t.save(tmp_path / "t.npz")
    np.testing.assert_allclose(VectorTransform.load(tmp_path / "t.npz").apply(x), y, atol=1e-6)


def test_pca_dims_above_dimension_fails():
    with pytest.raises(ValueError, match=r"reduce\.pca_dims: 64 exceeds the vector dimension 32"):
        reduce_vectors(_data(), ReduceConfig(pca_dims=64))


def test_l2_only_in_row_blocks_gives_the_whole_matrix_bytes(monkeypatch):
    """reduce normalises `APPLY_ROWS` rows at a time: the same float32 bytes as the
    transform over the whole matrix (a row's length is its own), last block short."""
    from tasks import reduce  # noqa: PLC0415

    monkeypatch.setattr(reduce, "APPLY_ROWS", 300)
    x = _data(n=1000)
    y, t = reduce.reduce_vectors(x, ReduceConfig())
    assert y.dtype == np.float32 and y.flags["C_CONTIGUOUS"]
    assert y.tobytes() == t.apply(x).tobytes()
