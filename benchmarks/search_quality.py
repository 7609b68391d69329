"""Search quality side by side, in one run: embedpipe's defaults (dedup with duplicate
expansion, hybrid BM25 + dense, index chosen by latency) against exact dense search over the
undeduplicated chunks (what a flat vector store gives), on the families corpus
(benchmarks/families.py) with queries aimed at single members.

    python -m benchmarks.search_quality [--families 800 --filler 1500]

Reports hit@10 per configuration and query kind, the lexical build time against encode
time, and per-query latency (p50, one query at a time, encoding included) of hybrid vs dense.
Both builds share one vector cache, so the chunks are encoded once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.families import generate
from benchmarks.report import cpu_label, save, timed_stages

REPO = Path(__file__).resolve().parents[1]
BUILD = ("ingest", "clean", "chunk", "finetune", "encode", "reduce", "dedup", "index")


def build(ws: Path, corpus: Path, cache: Path, overrides: dict[str, Any]) -> dict[str, float]:
    """Run ingest -> index in `ws`; seconds per stage."""
    from tasks.core.params_file import write_overrides

    ws.mkdir(parents=True)
    (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
    write_overrides(ws / "params.yaml", {"ingest.source": str(corpus), "encode.device": "cpu",
                                         "paths.vector_cache": str(cache), **overrides})
    return timed_stages(ws, BUILD)


def hit_at_10(folder: Any, queries: list[dict[str, str]], mode: str, expand: str
              ) -> dict[str, float]:
    """hit@10 (the target source among the top 10, members counted when expanded), per
    query kind and overall."""
    hits = folder.search_text([q["query"] for q in queries], k=10, mode=mode, expand=expand)
    found = [q["source"] in ({h["source"] for h in hs}
                             | {m["source"] for h in hs for m in h.get("members", [])})
             for q, hs in zip(queries, hits, strict=True)]
    out = {"all": round(sum(found) / len(found), 4)}
    for kind in sorted({q["kind"] for q in queries}):
        mine = [f for f, q in zip(found, queries, strict=True) if q["kind"] == kind]
        out[kind] = round(sum(mine) / len(mine), 4)
    return out


def latency_ms(folder: Any, queries: list[str], mode: str) -> float:
    """p50 milliseconds of one query end to end (embed, search, fuse), one at a time."""
    folder.search_text(queries[:1], k=10, mode=mode)
    times = []
    for q in queries:
        started = time.perf_counter()
        folder.search_text([q], k=10, mode=mode)
        times.append(1e3 * (time.perf_counter() - started))
    return round(statistics.median(times), 3)


def run(families: int, filler: int, seed: int) -> dict[str, Any]:
    from tasks.query.search import load_index_folder

    with tempfile.TemporaryDirectory(prefix="embedpipe-search-") as tmp:
        base = Path(tmp)
        corpus_info = generate(base, families, filler, REPO / "data/sample", seed)
        queries = [json.loads(x) for x in (base / "queries.jsonl").read_text().splitlines()]
        default_s = build(base / "default", base / "corpus", base / "cache", {})
        flat_s = build(base / "flat", base / "corpus", base / "cache", {
            "dedup.exact": False, "dedup.near": False, "index.factory": "Flat"})
        default = load_index_folder(base / "default/data/07_index")
        flat = load_index_folder(base / "flat/data/07_index")
        quality = {"exact dense, no dedup (flat store)": hit_at_10(flat, queries, "dense", "off"),
                   "exact dense + BM25, no dedup": hit_at_10(flat, queries, "hybrid", "off")}
        for mode in ("dense", "lexical", "hybrid"):
            for expand in ("group", "off"):
                quality[f"embedpipe {mode}, expansion {expand}"] = hit_at_10(
                    default, queries, mode, expand)
        sample = [q["query"] for q in queries[:: max(1, len(queries) // 300)]]
        latency = {m: latency_ms(default, sample, m) for m in ("dense", "hybrid")}
        card = default.card
    return {"corpus": corpus_info, "chunks": flat.index.ntotal, "indexed": default.index.ntotal,
            "card": {k: card.get(k) for k in ("factory", "factory_reason", "search_param",
                                              "search_value", "lexical_seconds")},
            "seconds": {"default": default_s, "flat": flat_s}, "quality": quality,
            "latency_p50_ms": latency, "cpu": cpu_label()}


def markdown(r: dict[str, Any]) -> str:
    kinds = sorted(next(iter(r["quality"].values())))
    lines = [f"families corpus: {r['corpus']['docs']} docs, {r['chunks']} chunks "
             f"({r['indexed']} indexed after dedup), {r['corpus']['queries']} queries; "
             f"{r['cpu']}", "", "| configuration | " + " | ".join(
                 f"hit@10 {k}" for k in kinds) + " |", "|---|" + "---|" * len(kinds)]
    lines += [f"| {name} | " + " | ".join(f"{q[k]:.4f}" for k in kinds) + " |"
              for name, q in r["quality"].items()]
    enc, lex = r["seconds"]["default"]["encode"], r["card"]["lexical_seconds"]
    lat = r["latency_p50_ms"]
    lines += ["", f"index: {r['card']['factory']} ({r['card']['factory_reason']}); "
              f"lexical build {lex} s vs encode {enc} s ({lex / enc:.1%}); query p50 hybrid "
              f"{lat['hybrid']} ms vs dense {lat['dense']} ms "
              f"({lat['hybrid'] / lat['dense']:.2f}x)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--families", type=int, default=800)
    parser.add_argument("--filler", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out")
    args = parser.parse_args()
    report = run(args.families, args.filler, args.seed)
    save(args.out, "search_quality", report, markdown(report))


if __name__ == "__main__":
    main()
