"""The query side: load an index folder and apply exactly its chain to query text.

query -> prefix -> encoder -> transform (PCA, whitening, L2) -> FAISS with the tuned
search parameter -> rows of chunks.parquet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.catalog import INDEX, INDEX_CARD, INDEX_CHUNKS, INDEX_MODEL, INDEX_TRANSFORM
from tasks.core.config import EncodeConfig
from tasks.query.ids import IdMap
from tasks.query.transform import VectorTransform


def set_search_param(index: faiss.Index, name: str | None, value: int | None) -> None:
    """Set nprobe / efSearch through FAISS's ParameterSpace (works on wrapped indexes too)."""
    if name is not None and value is not None:
        faiss.ParameterSpace().set_index_parameter(index, name, value)


def encode_queries(model: dict[str, Any], transform: VectorTransform, texts: list[str],
                   where: str = "index") -> np.ndarray:
    """Embed query texts exactly as the index expects: model, query prefix, transform.

    Raises ValueError when the model found here is not the one `model` was stamped with.
    """
    from tasks.encoders.loading import encoder_for  # noqa: PLC0415
    from tasks.encoders.model import model_fingerprint  # noqa: PLC0415

    cfg = EncodeConfig(model=model["name"], revision=model["revision"],
                       normalize=model["normalize"], query_prefix=model["query_prefix"],
                       passage_prefix=model["passage_prefix"],
                       max_seq_length=model["max_seq_length"])
    now = model_fingerprint(cfg)["fingerprint"]
    if now != model["fingerprint"]:
        raise ValueError(
            f"{where}: built with model {model['name']} fingerprint {model['fingerprint'][:12]}"
            f", but the model here is {now[:12]}; queries would land in another embedding space"
        )
    if not texts:
        return np.zeros((0, transform.d_out), dtype="float32")
    x = encoder_for(cfg).encode([cfg.query_prefix + t for t in texts],
                                normalize_embeddings=cfg.normalize, convert_to_numpy=True,
                                show_progress_bar=False)
    return transform.apply(np.asarray(x, dtype="float32"))


@dataclass
class IndexFolder:
    """Everything `embedpipe search` needs, loaded from one index folder."""

    path: Path
    index: faiss.Index
    chunks: pa.Table
    transform: VectorTransform
    model: dict[str, Any]
    card: dict[str, Any]
    id_map: IdMap

    def search_vectors(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, chunk table rows) for already-transformed query vectors."""
        xq = np.ascontiguousarray(xq, dtype="float32")
        if xq.shape[1] != self.index.d:
            raise ValueError(
                f"{self.path}: index holds {self.index.d}-d vectors, queries are {xq.shape[1]}-d"
            )
        scores, ids = self.index.search(xq, min(k, self.index.ntotal))
        return scores, self.id_map.rows(ids)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Queries embedded with the index's own model, prefix and transform."""
        return encode_queries(self.model, self.transform, texts, where=str(self.path))

    def search_text(self, queries: list[str], k: int = 5) -> list[list[dict[str, Any]]]:
        """Top-k chunk rows (with `score`) for each query text."""
        scores, ids = self.search_vectors(self.encode_queries(queries), k)
        rows = self.chunks.to_pylist()
        return [[{**rows[i], "score": float(s)} for s, i in zip(srow, irow, strict=True)
                 if i >= 0] for srow, irow in zip(scores, ids, strict=True)]


def load_index_folder(path: Path | str) -> IndexFolder:
    """Load an index folder written by the index stage; ValueError names what is missing."""
    path = Path(path)
    missing = [f.name for f in (INDEX, INDEX_CHUNKS, INDEX_MODEL, INDEX_CARD, INDEX_TRANSFORM)
               if not (path / f.name).is_file()]
    if missing:
        raise ValueError(f"{path}: not an index folder (missing {', '.join(missing)}); "
                         "run the pipeline first")
    index = faiss.read_index(str(path / INDEX.name))
    card = json.loads((path / INDEX_CARD.name).read_text(encoding="utf-8"))
    set_search_param(index, card.get("search_param"), card.get("search_value"))
    chunks = pq.read_table(path / INDEX_CHUNKS.name)
    if chunks.num_rows != index.ntotal:
        raise ValueError(f"{path}: {chunks.num_rows} chunk rows for {index.ntotal} vectors")
    return IndexFolder(path, index, chunks, VectorTransform.load(path / INDEX_TRANSFORM.name),
                       json.loads((path / INDEX_MODEL.name).read_text(encoding="utf-8")), card,
                       IdMap(chunks.column("int_id").to_numpy()))
