"""The vector transform fitted by `reduce` and applied again to every query.

Centre, project onto the PCA basis, optionally whiten, optionally L2-normalise. Stored as
plain arrays in `transform.npz` (no pickle).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.core.config import ReduceConfig
from tasks.core.vectors import sample_rows


@dataclass(frozen=True)
class VectorTransform:
    """x -> normalize(((x - mean) @ components.T) * scale)."""

    d_in: int
    mean: np.ndarray | None = None
    components: np.ndarray | None = None
    scale: np.ndarray | None = None
    explained_variance_ratio: np.ndarray | None = None
    l2_normalize: bool = True

    @property
    def d_out(self) -> int:
        return self.d_in if self.components is None else self.components.shape[0]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Transformed copy of `x` (n, d_in) as contiguous float32 (n, d_out)."""
        x = np.ascontiguousarray(x, dtype="float32")
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"transform expects (n, {self.d_in}) vectors, got {x.shape}")
        if self.components is not None:
            x = (x - self.mean) @ self.components.T
            if self.scale is not None:
                x = x * self.scale
        if self.l2_normalize:
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(x, dtype="float32")

    def digest(self) -> str:
        """sha256 of the arrays and flags: equal digests, identical transform."""
        h = hashlib.sha256(f"{self.d_in}:{self.l2_normalize}".encode())
        for name in ("mean", "components", "scale"):
            value = getattr(self, name)
            h.update(name.encode() + (b"-" if value is None else value.tobytes()))
        return h.hexdigest()

    def save(self, path: Path) -> None:
        arrays = {"d_in": np.array(self.d_in), "l2_normalize": np.array(self.l2_normalize)}
        for name in ("mean", "components", "scale", "explained_variance_ratio"):
            if (value := getattr(self, name)) is not None:
                arrays[name] = value
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: Path) -> VectorTransform:
        with np.load(path, allow_pickle=False) as z:
            get = {k: z[k] for k in z.files}
        return cls(
            d_in=int(get["d_in"]), l2_normalize=bool(get["l2_normalize"]),
            **{k: get.get(k) for k in ("mean", "components", "scale",
                                       "explained_variance_ratio")},
        )


def fit_transform(x: np.ndarray, cfg: ReduceConfig) -> VectorTransform:
    """Fit PCA (and whitening) on at most `cfg.fit_sample` rows of `x`."""
    n, d = x.shape
    if cfg.pca_dims is None:
        return VectorTransform(d_in=d, l2_normalize=cfg.l2_normalize)
    if cfg.pca_dims > d:
        raise ValueError(f"reduce.pca_dims: {cfg.pca_dims} exceeds the vector dimension {d}")
    if cfg.pca_dims > n:
        raise ValueError(f"reduce.pca_dims: {cfg.pca_dims} exceeds the {n} vectors to fit on")
    xt = x[sample_rows(n, cfg.fit_sample, cfg.seed)]
    xt = xt.astype("float64")
    mean = xt.mean(axis=0)
    # SVD of the centred sample: rows of vt are the principal axes, largest first.
    _, s, vt = np.linalg.svd(xt - mean, full_matrices=False)
    var = s**2 / max(len(xt) - 1, 1)
    k = cfg.pca_dims
    scale = 1.0 / np.sqrt(np.maximum(var[:k], 1e-12)) if cfg.whiten else None
    return VectorTransform(
        d_in=d, mean=mean.astype("float32"),
        components=np.ascontiguousarray(vt[:k], dtype="float32"),
        scale=None if scale is None else scale.astype("float32"),
        explained_variance_ratio=(var[:k] / var.sum()).astype("float32"),
        l2_normalize=cfg.l2_normalize,
    )
