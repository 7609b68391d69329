"""The query side: load an index folder and apply exactly its chain to query text.

dense: query -> prefix -> encoder -> transform (PCA, whitening, L2) -> FAISS with the tuned
search parameter -> rows of chunks.parquet. lexical: query -> tokens -> BM25. hybrid: both
sides' top candidates fused (tasks/query/fusion.py) as the index chose at build
(tasks/query/fusion_choice.py) or the params say, each query's weight moved by its own
evidence (tasks/query/weights.py). Each hit carries the chunks deduplicated onto
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
from tasks.indexing.ids import IdMap
from tasks.indexing.ondisk import read_index_file
from tasks.indexing.recall import set_search_param
from tasks.query.fusion import Ranked, SearchPlan, fuse_plan, resolve_plan
from tasks.query.lexical import LexicalIndex
from tasks.query.transform import VectorTransform
from tasks.query.weights import QueryEvidence, evidence_alphas, query_evidences

CARD_CHOICE = "search_choice"  # the index card's key for the fusion chosen at build


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


def encode_texts(model: dict[str, Any], transform: VectorTransform, texts: list[str],
                 where: str = "index", side: int = 1, models: Path | None = None,
                 cache: Path | None = None) -> np.ndarray:
    """Embed texts exactly as the index expects: model, prefix (`side` 1: the query prefix,
    0: the passage prefix), transform; a tuned model is read from its folder in `models`.
    With a vector `cache` (the encode stage's), a text found there under the model's
    fingerprint is read, not embedded again (the model is loaded only for the others).

    Raises ValueError when the model found here is not the one `model` was stamped with.
    """
    from tasks.encoders.loading import encoder_for  # noqa: PLC0415
    from tasks.encoders.model import model_fingerprint, prefixes  # noqa: PLC0415
    from tasks.encoders.vector_cache import lookup, text_keys  # noqa: PLC0415

    cfg = query_encode_config(model, models)
    now = model_fingerprint(cfg, model.get("tuned"))["fingerprint"]
    if now != model["fingerprint"]:
        raise ValueError(
            f"{where}: built with model {model['name']} fingerprint {model['fingerprint'][:12]}"
            f", but the model here is {now[:12]}; queries would land in another embedding space"
        )
    if not texts:
        return np.zeros((0, transform.d_out), dtype="float32")
    prefix = prefixes(cfg)[side]
    found, x = (lookup(cache, now, text_keys(texts, prefix), model["dim"]) if cache is not None
                else (np.zeros(len(texts), bool), np.zeros((len(texts), model["dim"]), "float32")))
    if not found.all():
        x[~found] = encoder_for(cfg).encode(
            [prefix + t for t, hit in zip(texts, found, strict=True) if not hit],
            normalize_embeddings=cfg.normalize, convert_to_numpy=True, show_progress_bar=False)
    return transform.apply(x)


def encode_queries(model: dict[str, Any], transform: VectorTransform, texts: list[str],
                   where: str = "index", models: Path | None = None,
                   cache: Path | None = None) -> np.ndarray:
    """Queries embedded as the index expects them (`encode_texts` with the query prefix)."""
    return encode_texts(model, transform, texts, where, side=1, models=models, cache=cache)


def encode_passages(model: dict[str, Any], transform: VectorTransform, texts: list[str],
                    where: str = "index", models: Path | None = None,
                    cache: Path | None = None) -> np.ndarray:
    """Passages embedded as the encode stage embeds chunks (with the passage prefix)."""
    return encode_texts(model, transform, texts, where, side=0, models=models, cache=cache)


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
class Sides:
    """Both sides' candidate lists of one set of queries (`IndexFolder.side_lists`), to
    rank them in several plans without searching again; the queries' weighting evidence is
    kept once found (`plan_alphas`)."""

    dense: Ranked
    lexical: Ranked | None
    evidence: list[QueryEvidence] | None = None


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
    # the encode stage's vector cache, read first by the stages that embed queries
    vector_cache: Path | None = None

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
                              models=self.path, cache=self.vector_cache)

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        """Passages embedded as the encode stage embeds chunks, with the index's transform."""
        return encode_passages(self.model, self.transform, texts, where=str(self.path),
                               models=self.path, cache=self.vector_cache)

    @property
    def plan(self) -> SearchPlan:
        """The plan `embedpipe search` runs with by default (see `resolve_plan`)."""
        return resolve_plan(self.search, self.card.get(CARD_CHOICE))

    def rank(self, queries: list[str], depth: int, mode: str | None = None,
             xq: np.ndarray | None = None, fusion: str | None = None,
             alpha: float | None = None, weighting: bool | None = None,
             sides: Sides | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, chunk rows), (nq, depth), -1 past the end, as `resolve_plan` says from
        the arguments and the folder's settings. A query with no lexical match (only
        stopwords, say) is answered dense. `xq`: the queries already embedded
        (`encode_queries`), `sides`: their candidate lists (`side_lists` at this depth), to
        rank in several modes without searching again."""
        plan = resolve_plan(self.search, self.card.get(CARD_CHOICE), mode, fusion, alpha,
                            weighting)
        depth = min(depth, self.index.ntotal)
        if plan.mode == "dense" or self.lexical is None or not queries:
            return (self.search_vectors(self._embedded(queries, xq), depth) if sides is None
                    else (sides.dense[0][:, :depth], sides.dense[1][:, :depth]))
        dense, lexical = (sides.dense, sides.lexical) if sides else (
            None, self.lexical.search(queries, self._wide(depth)))
        if plan.mode == "lexical":
            return self._lexical_alone(queries, depth, lexical, dense, xq)
        if dense is None:
            dense = self.search_vectors(self._embedded(queries, xq), self._wide(depth))
        return fuse_plan(plan, dense, lexical, self.plan_alphas(plan, queries, lexical[0], sides),
                         self.search, depth)

    def _lexical_alone(self, queries: list[str], depth: int, lexical: Ranked,
                       dense: Ranked | None, xq: np.ndarray | None) -> Ranked:
        """BM25's top `depth`; a query with no lexical match answered dense (from `dense`,
        the dense candidates, where given)."""
        scores, rows = lexical[0][:, :depth].copy(), lexical[1][:, :depth].copy()
        empty = np.flatnonzero(rows[:, 0] < 0)
        if len(empty) and dense is not None:
            scores[empty], rows[empty] = dense[0][empty, :depth], dense[1][empty, :depth]
        elif len(empty):
            xe = self.encode_queries([queries[i] for i in empty]) if xq is None else xq[empty]
            scores[empty], rows[empty] = self.search_vectors(xe, depth)
        return scores, rows

    def side_lists(self, queries: list[str], depth: int, xq: np.ndarray | None = None
                   ) -> Sides:
        """Each side's candidates for `queries` as `rank` searches them at `depth`: dense and
        (where the folder has a lexical index) BM25, each `max(depth, candidates)` deep. A
        dense-only rank takes the first `depth` of the dense list: the rows a search at
        `depth` gives where the index searches exactly (or IVF ties aside)."""
        wide = self._wide(min(depth, self.index.ntotal))
        lexical = self.lexical.search(queries, wide) if self.lexical is not None else None
        return Sides(self.search_vectors(self._embedded(queries, xq), wide), lexical)

    def _wide(self, depth: int) -> int:
        """How deep each side is searched before fusion: `search.candidates` at least."""
        return max(depth, self.search.candidates)

    def plan_alphas(self, plan: SearchPlan, queries: list[str], lex_scores: np.ndarray,
                    sides: Sides | None = None) -> np.ndarray:
        """Each query's dense weight under `plan`: its alpha, moved by the query's own
        evidence when the plan weights per query (found once per `sides`, where given)."""
        alpha = float(plan.alpha if plan.alpha is not None else 0.5)
        if not plan.weighting or self.lexical is None:
            return np.full(len(queries), alpha)
        if sides is not None and sides.evidence is not None:
            return evidence_alphas(sides.evidence, alpha)
        tokens = self.lexical.tokens(queries)
        evidence = query_evidences(queries, tokens, [self.lexical.doc_freqs(t) for t in tokens],
                                   self.lexical.docs, lex_scores)
        if sides is not None:
            sides.evidence = evidence
        return evidence_alphas(evidence, alpha)

    def _embedded(self, queries: list[str], xq: np.ndarray | None) -> np.ndarray:
        return self.encode_queries(queries) if xq is None else xq

    def search_text(self, queries: list[str], k: int = 5, mode: str | None = None,
                    expand: str | None = None, fusion: str | None = None,
                    alpha: float | None = None) -> list[list[dict[str, Any]]]:
        """Top-k chunk rows (with `score`) for each query text, ranked as `rank` says;
        `expand` (default: the folder's `expand_duplicates`) adds each hit's group as
        `members` or as rows."""
        expand = expand or self.search.expand_duplicates
        scores, ids = self.rank(queries, k, mode, fusion=fusion, alpha=alpha)
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


REPAIR = ("A published version is written again from the workspace's index by `embedpipe "
          "stage publish` (or `embedpipe run`); the workspace's own index folder by `embedpipe "
          "stage index`.")


def check_index_folder(path: Path, fast: bool = True) -> None:
    """Refuse a folder whose files are not those its manifest lists (sizes always, sha256
    once per change: `tasks.core.integrity`), naming the file and the fix."""
    from tasks.core.config import cache_root  # noqa: PLC0415
    from tasks.core.integrity import folder_problems  # noqa: PLC0415

    problems = folder_problems(path, cache_root() / "verified", fast)
    if problems:
        raise ValueError("; ".join(f"{path / name}: {why}" for name, why in problems)
                         + f". The folder is not used. {REPAIR}")


def load_index_folder(path: Path | str, verify: bool = True, fast: bool = True
                      ) -> IndexFolder:
    """Load an index folder written by the index stage, checked first against its manifest
    (`check_index_folder`; `fast=False` hashes every file); ValueError names what is missing
    or damaged and the fix."""
    path = Path(path)
    missing = [f.name for f in (INDEX, INDEX_CHUNKS, INDEX_MODEL, INDEX_CARD, INDEX_TRANSFORM,
                                INDEX_SEARCH, INDEX_MEMBERS) if not (path / f.name).is_file()]
    if missing:
        raise ValueError(f"{path}: not an index folder (missing {', '.join(missing)}); "
                         "run the pipeline first")
    if verify:
        check_index_folder(path, fast)
    index = read_index_file(path / INDEX.name)  # on-disk lists: memory-mapped
    card = json.loads((path / INDEX_CARD.name).read_text(encoding="utf-8"))
    set_search_param(index, card.get("search_param"), card.get("search_value"))
    return assemble_folder(path, index, card)


def assemble_folder(path: Path, index: faiss.Index, card: dict[str, Any]) -> IndexFolder:
    """An index folder from its FAISS index and card (in memory: the index stage uses this
    before the card is written) and its other files under `path`."""
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


def search_summary(path: Path) -> str | None:
    """One line: how the index folder at `path` answers queries by default and, when it was
    chosen at build, why; None when there is no index there."""
    if not (path / INDEX_CARD.name).is_file() or not (path / INDEX_SEARCH.name).is_file():
        return None
    card = json.loads((path / INDEX_CARD.name).read_text(encoding="utf-8"))
    cfg = SearchConfig.model_validate_json((path / INDEX_SEARCH.name).read_text("utf-8"))
    choice = card.get(CARD_CHOICE)
    line = f"search: {resolve_plan(cfg, choice).describe()}"
    return line + (f" (chosen on {chosen_on(choice)}: {choice['reason']})" if choice
                   else " (as search params fix it)")


def chosen_on(choice: dict[str, Any]) -> str:
    """What the index's search was chosen on: labelled queries (labels outrank probes) or
    label-free probes."""
    if choice.get("basis") == "labels":
        return (f"{choice['labeled_queries']} labelled queries of "
                f"{', '.join(choice['label_sets'])}")
    return f"{choice['probes']} probes"
