"""Base vs fine-tuned model, side by side where users look.

When the index was built with a fine-tuned model, the evaluation's own label-free probes are
searched by dense retrieval twice: with the base model (`encode.model`) and with the tuned
model the index carries, both on the runtime `encode` uses, both over the same chunks (every
chunk of the probes' documents, then a seeded sample of the others), exact search on the
unreduced vectors. The probes' documents were not held out of training, so this shows what
the tuned model changed for the user's own corpus; the finetune card's gate is the held-out
judgement. BEIR queries beside the corpus are compared the same way, set by set, against
their qrels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

from tasks.core.config import EncodeConfig
from tasks.encoders.model import prefixes
from tasks.encoders.tuned import model_folder, tuned_config
from tasks.evaluation.metrics import doc_rankings, retrieval_metrics

COMPARED = ("recall_at_1", "recall_at_10", "ndcg_at_10")
DEPTH = 100  # chunks searched per query before ranking documents
Encode = Callable[[list[str]], np.ndarray]


def compared_chunks(chunks: pa.Table, docs: set[str], limit: int, seed: int) -> pa.Table:
    """Every chunk of `docs`, then a seeded sample of the others, `limit` in all (the
    chunks of `docs` are all kept even past it)."""
    mine = np.array([d in docs for d in chunks.column("doc_id").to_pylist()])
    others = np.flatnonzero(~mine)
    room = max(0, limit - int(mine.sum()))
    if room < len(others):
        others = np.sort(np.random.default_rng(seed).choice(others, room, replace=False))
    return chunks.take(np.sort(np.concatenate([np.flatnonzero(mine), others])))


QuerySet = tuple[list[str], list[dict[str, int]]]  # query texts, each one's relevant docs


def dense_metrics(xb: np.ndarray, queries: Encode, docs: list[str], asked: QuerySet
                  ) -> dict[str, float]:
    """recall@1/@10 and nDCG@10 of the queries' relevant documents by exact dense search
    over the passage vectors `xb` (documents `docs`)."""
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    texts, rels = asked
    xq = np.ascontiguousarray(queries(texts), dtype="float32")
    scores, ids = index.search(xq, min(DEPTH, index.ntotal))
    qids = [f"q{i}" for i in range(len(texts))]
    ranked = dict(zip(qids, doc_rankings(scores, ids, [[d] for d in docs]), strict=True))
    m = retrieval_metrics(dict(zip(qids, rels, strict=True)), ranked)
    return {k: m[k] for k in COMPARED}


def _encoders(cfg: EncodeConfig, passage: str, query: str) -> tuple[Encode, Encode]:
    """(passages, queries) -> unit vectors with the model `cfg` names, on its runtime."""
    from tasks.encoders.loading import encoder_for  # noqa: PLC0415  (loads torch/OpenVINO)

    model = encoder_for(cfg)

    def run(prefix: str) -> Encode:
        return lambda texts: model.encode([prefix + t for t in texts], batch_size=cfg.batch_size,
                                          normalize_embeddings=True)

    return run(passage), run(query)


def base_vs_tuned(model: dict[str, Any], index_dir: Path, enc: EncodeConfig, chunks: pa.Table,
                  probes: list[tuple[str, str]], limit: int, seed: int,
                  labeled: dict[str, QuerySet] | None = None) -> dict[str, Any] | None:
    """Dense metrics of the probes (and of each BEIR set in `labeled`: its queries and
    qrels) with the base and the tuned model, and the gains; None when the index's model
    (`model`, its model.json) is not a tuned one or `limit` is 0."""
    tuned = model.get("tuned")
    if not tuned or limit == 0 or not probes:
        return None
    labeled = labeled or {}
    wanted = {d for _, d in probes} | {d for _, rels in labeled.values() for r in rels
                                       for d in r}
    sample = compared_chunks(chunks, wanted, limit, seed)
    texts = [t or "" for t in sample.column("text").to_pylist()]
    docs = sample.column("doc_id").to_pylist()
    passage, query = prefixes(enc)  # the prefixes the tuned model was trained with
    sides = {"base": enc, "tuned": tuned_config(enc, model_folder(tuned, index_dir))}
    sets = {"probes": ([q for q, _ in probes], [{d: 1} for _, d in probes])} | labeled
    found: dict[str, dict[str, Any]] = {name: {} for name in sets}
    for side, cfg in sides.items():
        passages, queries = _encoders(cfg, passage, query)
        xb = np.ascontiguousarray(passages(texts), dtype="float32")  # once a side
        for name, asked in sets.items():
            found[name][side] = dense_metrics(xb, queries, docs, asked)
    for name, m in found.items():
        m["gain"] = {k: round(m["tuned"][k] - m["base"][k], 6) for k in COMPARED}
        m["queries"] = len(sets[name][0])
    out: dict[str, Any] = {"base_model": enc.model, "tuned_model": tuned["name"],
                           "chunks": len(texts)} | found.pop("probes")
    if found:
        out["labeled"] = found
    return out


def markdown(compared: dict[str, Any]) -> list[str]:
    """The comparison as Markdown lines (a heading and a table)."""
    rows = [f"| {side} (`{compared[side + '_model']}`) | "
            + " | ".join(f"{compared[side][k]:.4f}" for k in COMPARED) + " |"
            for side in ("base", "tuned")]
    return ["", "## Base vs fine-tuned model (dense, exact search)", "",
            f"{compared['queries']} label-free probes over {compared['chunks']} chunks.", "",
            "| model | " + " | ".join(COMPARED) + " |", "|---|" + "---|" * len(COMPARED),
            *rows, "| gain | " + " | ".join(f"{compared['gain'][k]:+.4f}" for k in COMPARED)
            + " |", *_labeled_rows(compared.get("labeled", {}))]


def _labeled_rows(labeled: dict[str, dict[str, Any]]) -> list[str]:
    """Each BEIR set's base, tuned and gain rows, under a line naming it."""
    out = []
    for name, m in labeled.items():
        out += ["", f"BEIR `{name}`: {m['queries']} labelled queries.", "",
                "| model | " + " | ".join(COMPARED) + " |", "|---|" + "---|" * len(COMPARED)]
        out += [f"| {side} | " + " | ".join(f"{m[side][k]:+.4f}" if side == "gain"
                                            else f"{m[side][k]:.4f}" for k in COMPARED) + " |"
                for side in ("base", "tuned", "gain")]
    return out
