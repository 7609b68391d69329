"""The query side: load an index folder and apply exactly its chain to query text.

dense: query -> prefix -> encoder -> transform (PCA, whitening, L2) -> FAISS with the tuned
search parameter -> rows of chunks.parquet. lexical: query -> tokens -> BM25. hybrid: both
sides' top candidates fused by reciprocal rank. Each hit carries the chunks deduplicated onto
it (its group), so dedup shrinks the index, never what a query can reach.
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

from tasks.core.catalog import (
    INDEX,
    INDEX_CARD,
    INDEX_CHUNKS,
    INDEX_MEMBERS,
    INDEX_MODEL,
    INDEX_SEARCH,
    INDEX_TRANSFORM,
)
from tasks.core.config import EncodeConfig, SearchConfig
from tasks.encoders.tuned import model_folder, tuned_config
from tasks.query.ids import IdMap
from tasks.query.lexical import LexicalIndex, fuse_rrf
from tasks.query.transform import VectorTransform

MODES = ("dense", "lexical", "hybrid")


def set_search_param(index: faiss.Index, name: str | None, value: int | None) -> None:
    """Set nprobe / efSearch through FAISS's ParameterSpace (works on wrapped indexes too)."""
    if name is not None and value is not None:
        faiss.ParameterSpace().set_index_parameter(index, name, value)


def query_encode_config(model: dict[str, Any], models: Path | None = None) -> EncodeConfig:
    """The encode config that reproduces a stamped model fingerprint (`model`): the same
    backend and precision (an index built with torch fp32 is queried with torch fp32, not
    this machine's default), for backend openai the same server, served model and key
    variable; a tuned model read from its folder in `models` (the index folder)."""
    api: dict[str, Any] = {}
    if model.get("backend") in ("torch", "onnx"):  # the numbers the index was built with
        api = {"backend": model["backend"], "precision": model["precision"]}
    if model.get("backend") == "openai":
        where = model["numerics"]
        api = {"backend": "openai", "api_base_url": where["api_host"] + where["api_path"],
               "api_model": where["served_model"],
               "api_key_env": model.get("client", {}).get("api_key_env", "OPENAI_API_KEY")}
    cfg = EncodeConfig(model=model["name"], revision=model["revision"],
                       normalize=model["normalize"], query_prefix=model["query_prefix"],
                       passage_prefix=model["passage_prefix"],
                       max_seq_length=model["max_seq_length"], **api)
    if model.get("tuned") is None:
        return cfg
    if models is None:
        raise ValueError(f"model {model['name']} is a tuned model: its folder is needed")
    return tuned_config(cfg, model_folder(model["tuned"], models))


def encode_queries(model: dict[str, Any], transform: VectorTransform, texts: list[str],
                   where: str = "index", models: Path | None = None) -> np.ndarray:
    """Embed query texts exactly as the index expects: model, query prefix, transform; a
    tuned model is read from its folder in `models`.

    Raises ValueError when the model found here is not the one `model` was stamped with.
    """
    from tasks.encoders.loading import encoder_for  # noqa: PLC0415
    from tasks.encoders.model import model_fingerprint, prefixes  # noqa: PLC0415

    cfg = query_encode_config(model, models)
    now = model_fingerprint(cfg, model.get("tuned"))["fingerprint"]
    if now != model["fingerprint"]:
        raise ValueError(
            f"{where}: built with model {model['name']} fingerprint {model['fingerprint'][:12]}"
            f", but the model here is {now[:12]}; queries would land in another embedding space"
        )
    if not texts:
        return np.zeros((0, transform.d_out), dtype="float32")
    x = encoder_for(cfg).encode([prefixes(cfg)[1] + t for t in texts],
                                normalize_embeddings=cfg.normalize, convert_to_numpy=True,
                                show_progress_bar=False)
    return transform.apply(np.asarray(x, dtype="float32"))


def lexical_rows(members: pa.Table, row: dict[str, int]) -> np.ndarray:
    """The indexed row each lexical document stands for: the chunks (`row`: chunk_id -> row),
    then each group member (in `members` order) as its group's row."""
    groups = [row[g] for g in members.column("group_chunk_id").to_pylist()]
    return np.array([*range(len(row)), *groups], dtype="int64")


def group_members(members: pa.Table, row: dict[str, int]) -> list[list[dict[str, Any]]]:
    """For each chunk row (`row`: chunk_id -> row), the dropped duplicates it stands for
    (chunk_id, doc_id, source)."""
    out: list[list[dict[str, Any]]] = [[] for _ in range(len(row))]
    for m in members.select(["group_chunk_id", "chunk_id", "doc_id", "source"]).to_pylist():
        if m["group_chunk_id"] in row:
            out[row[m.pop("group_chunk_id")]].append(m)
    return out


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
    search: SearchConfig
    members: list[list[dict[str, Any]]]
    lexical: LexicalIndex | None

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
        return encode_queries(self.model, self.transform, texts, where=str(self.path),
                              models=self.path)

    def rank(self, queries: list[str], depth: int, mode: str | None = None,
             xq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, chunk rows), (nq, depth), -1 past the end, in `mode` (default: the
        folder's). A query with no lexical match (only stopwords, say) is answered dense.
        `xq`: the queries already embedded (`encode_queries`), to rank in several modes."""
        mode = mode or self.search.mode
        if mode not in MODES:
            raise ValueError(f"search mode {mode!r}: expected one of {', '.join(MODES)}")
        depth = min(depth, self.index.ntotal)
        if mode == "dense" or self.lexical is None or not queries:
            return self.search_vectors(self._embedded(queries, xq), depth)
        wide = max(depth, self.search.candidates)
        lex_scores, lex_rows = self.lexical.search(queries, wide)
        if mode == "lexical":
            scores, rows = lex_scores[:, :depth].copy(), lex_rows[:, :depth].copy()
            empty = np.flatnonzero(rows[:, 0] < 0)
            if len(empty):
                xe = (self.encode_queries([queries[i] for i in empty]) if xq is None
                      else xq[empty])
                scores[empty], rows[empty] = self.search_vectors(xe, depth)
            return scores, rows
        _, dense_rows = self.search_vectors(self._embedded(queries, xq), wide)
        return fuse_rrf([(dense_rows, self.search.dense_weight),
                         (lex_rows, self.search.lexical_weight)], self.search.rrf_k, depth)

    def _embedded(self, queries: list[str], xq: np.ndarray | None) -> np.ndarray:
        return self.encode_queries(queries) if xq is None else xq

    def search_text(self, queries: list[str], k: int = 5, mode: str | None = None,
                    expand: str | None = None) -> list[list[dict[str, Any]]]:
        """Top-k chunk rows (with `score`) for each query text; `expand` (default: the
        folder's `expand_duplicates`) adds each hit's group as `members` or as rows."""
        expand = expand or self.search.expand_duplicates
        scores, ids = self.rank(queries, k, mode)
        hit_rows = sorted({int(i) for i in ids.ravel() if i >= 0})  # not the whole table
        rows = dict(zip(hit_rows, self.chunks.take(pa.array(hit_rows, pa.int64())).to_pylist(),
                        strict=True))
        out = []
        for srow, irow in zip(scores, ids, strict=True):
            hits: list[dict[str, Any]] = []
            for s, i in zip(srow.tolist(), irow.tolist(), strict=True):
                if i < 0:
                    continue
                hit = {**rows[i], "score": s}
                if expand == "group":
                    hit["members"] = self.members[i]
                hits.append(hit)
                if expand == "rows":
                    hits += [{**m, "score": s, "duplicate_of": hit["chunk_id"]}
                             for m in self.members[i]]
            out.append(hits[:k] if expand == "rows" else hits)
        return out


def load_index_folder(path: Path | str) -> IndexFolder:
    """Load an index folder written by the index stage; ValueError names what is missing."""
    path = Path(path)
    missing = [f.name for f in (INDEX, INDEX_CHUNKS, INDEX_MODEL, INDEX_CARD, INDEX_TRANSFORM,
                                INDEX_SEARCH, INDEX_MEMBERS) if not (path / f.name).is_file()]
    if missing:
        raise ValueError(f"{path}: not an index folder (missing {', '.join(missing)}); "
                         "run the pipeline first")
    index = faiss.read_index(str(path / INDEX.name))
    card = json.loads((path / INDEX_CARD.name).read_text(encoding="utf-8"))
    set_search_param(index, card.get("search_param"), card.get("search_value"))
    chunks = pq.read_table(path / INDEX_CHUNKS.name)
    if chunks.num_rows != index.ntotal:
        raise ValueError(f"{path}: {chunks.num_rows} chunk rows for {index.ntotal} vectors")
    search = SearchConfig.model_validate_json((path / INDEX_SEARCH.name).read_text("utf-8"))
    members = pq.read_table(path / INDEX_MEMBERS.name)
    row = {c: i for i, c in enumerate(chunks.column("chunk_id").to_pylist())}
    return IndexFolder(
        path, index, chunks, VectorTransform.load(path / INDEX_TRANSFORM.name),
        json.loads((path / INDEX_MODEL.name).read_text(encoding="utf-8")), card,
        IdMap(chunks.column("int_id").to_numpy()), search, group_members(members, row),
        LexicalIndex.load(path, search, lexical_rows(members, row)) if index.ntotal
        else None)
