"""Search quality by corpus and query style, side by side in one run: dense alone, BM25 alone,
each fusion at fixed weights, and the default (the fusion chosen at index build on
label-free probes, weights moved per query), all through the real query path.

Corpora: `python-docs`, `debian-docs` and `manpages` (real public text,
benchmarks/python_docs.py and benchmarks/debian_corpora.py, fetched with `apt-get
download`) and the generated families corpus (benchmarks/families.py). Each is built
ingest -> index with the project's params.

    python -m benchmarks.search_corpora [--families 300 --filler 600] [--corpora ...]
        [--keep DIR] [--set search.normalization=zscore ...]

Reports hit@1, hit@10 and nDCG@10 (the target document's first chunk or duplicate-group
member in the ranking) per corpus, query kind and variant; the probe choice the index made;
the probe scoring's share of the index stage; query p50 of the default against dense alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.debian_corpora import build_all
from benchmarks.families import generate
from benchmarks.python_docs import write_python_docs
from benchmarks.report import cpu_label, save
from benchmarks.search_quality import REPO, build

ALPHAS = (0.3, 0.5, 0.7, 0.85)
CORPORA = ("python-docs", "debian-docs", "manpages", "families")


def variants() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, rank() arguments, search settings overridden) of every variant compared."""
    fixed = {"query_weighting": False}
    out = [("dense", {"mode": "dense"}, {}), ("lexical", {"mode": "lexical"}, {}),
           ("rrf", {"mode": "hybrid", "fusion": "rrf"}, fixed)]
    for norm in ("minmax", "zscore"):
        out += [(f"convex@{a:g} {norm}", {"mode": "hybrid", "fusion": "convex", "alpha": a},
                 fixed | {"normalization": norm}) for a in ALPHAS]
    out += [("convex@0.5 zscore, per-query weights",
             {"mode": "hybrid", "fusion": "convex", "alpha": 0.5},
             {"query_weighting": True, "normalization": "zscore"})]
    out += [("default, fixed weights", {}, fixed), ("default", {}, {})]
    return out


def target_ranks(folder: Any, rows: np.ndarray, targets: list[str]) -> np.ndarray:
    """Per query, the rank (from 1) at which its target source first appears among the
    hits and their duplicate-group members; 0 when not in the top 10."""
    sources = folder.chunks.column("source").to_pylist()
    out = np.zeros(len(targets), dtype="int64")
    for q, target in enumerate(targets):
        for rank, r in enumerate(rows[q, :10].tolist(), 1):
            if r >= 0 and (sources[r] == target or any(
                    m["source"] == target for m in folder.members[r])):
                out[q] = rank
                break
    return out


def metrics(ranks: np.ndarray) -> dict[str, float]:
    gain = np.where(ranks > 0, 1.0 / np.log2(1.0 + np.maximum(ranks, 1)), 0.0)
    return {"hit_at_1": round(float((ranks == 1).mean()), 4),
            "hit_at_10": round(float((ranks > 0).mean()), 4),
            "ndcg_at_10": round(float(gain.mean()), 4)}


def score_variants(folder: Any, queries: list[dict[str, str]]) -> dict[str, Any]:
    """Every variant's metrics, overall and per query kind, queries embedded once."""
    texts = [q["query"] for q in queries]
    xq = folder.encode_queries(texts)
    base, out = folder.search, {}
    kinds = sorted({q["kind"] for q in queries})
    for name, args, settings in variants():
        folder.search = base.model_copy(update=settings)
        _, rows = folder.rank(texts, 10, xq=xq, **args)
        ranks = target_ranks(folder, rows, [q["source"] for q in queries])
        out[name] = {"all": metrics(ranks)} | {
            k: metrics(ranks[[i for i, q in enumerate(queries) if q["kind"] == k]])
            for k in kinds}
    folder.search = base
    return out


def latency_ms(folder: Any, queries: list[str]) -> dict[str, float]:
    """p50 milliseconds of one query end to end (embed, search, fuse), one at a time, dense
    alone and the default taking turns query by query, so both see the same machine load."""
    times: dict[str, list[float]] = {"dense": [], "default": []}
    folder.search_text(queries[:1], k=10, mode="dense")
    folder.search_text(queries[:1], k=10)
    for q in queries:
        for name, mode in (("dense", "dense"), ("default", None)):
            started = time.perf_counter()
            folder.search_text([q], k=10, mode=mode)
            times[name].append(1e3 * (time.perf_counter() - started))
    return {name: round(statistics.median(t), 3) for name, t in times.items()}


def run_corpus(ws: Path, corpus: Path, queries_path: Path, overrides: dict[str, Any]
               ) -> dict[str, Any]:
    """Build one corpus's index with the project's params (and `overrides`) and score every
    variant."""
    from tasks.query.search import load_index_folder, search_summary

    shutil.rmtree(ws, ignore_errors=True)  # a kept build is redone; its vector cache is kept
    seconds = build(ws, corpus, ws.parent / f"{ws.name}-cache", overrides)
    folder = load_index_folder(ws / "data/07_index")
    queries = [json.loads(x) for x in queries_path.read_text().splitlines()]
    choice = folder.card.get("search_choice") or {}
    sample = [q["query"] for q in queries[:: max(1, len(queries) // 200)]]
    return {"docs": len(set(folder.chunks.column("doc_id").to_pylist())),
            "chunks": folder.index.ntotal, "queries": len(queries),
            "kinds": {k: sum(q["kind"] == k for q in queries)
                      for k in sorted({q["kind"] for q in queries})},
            "seconds": seconds, "choice": {k: choice.get(k) for k in (
                "winner", "mode", "fusion", "alpha", "probes", "probe_kinds", "probe_seconds",
                "reason")}, "summary": search_summary(ws / "data/07_index"),
            "probe_share_of_index": round((choice.get("probe_seconds") or 0)
                                          / seconds["index"], 4),
            "quality": score_variants(folder, queries),
            "latency_p50_ms": latency_ms(folder, sample)}


def run(corpora: list[str], families: int, filler: int, seed: int, keep: Path | None,
        overrides: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="embedpipe-corpora-") as tmp:
        base = keep or Path(tmp)
        sets: dict[str, tuple[Path, Path]] = {}
        if {"debian-docs", "manpages"} & set(corpora):
            build_all(base / "debian")
            sets |= {n: (base / "debian" / n / "corpus", base / "debian" / n / "queries.jsonl")
                     for n in ("debian-docs", "manpages") if n in corpora}
        if "python-docs" in corpora and not (base / "debian/python-docs/queries.jsonl").exists():
            write_python_docs(base / "debian" / "debs", base / "debian" / "python-docs")
        if "python-docs" in corpora:
            sets["python-docs"] = (base / "debian/python-docs/corpus",
                                   base / "debian/python-docs/queries.jsonl")
        if "families" in corpora:
            generate(base / "families", families, filler, REPO / "data/sample", seed)
            sets["families"] = (base / "families/corpus", base / "families/queries.jsonl")
        results = {name: run_corpus(base / "ws" / name, corpus, queries, overrides)
                   for name, (corpus, queries) in sets.items()}
    return {"corpora": results, "overrides": overrides, "cpu": cpu_label()}


def verdict(r: dict[str, Any]) -> str:
    """The targets, in one line: default vs the best single side, latency, probe cost."""
    q = r["quality"]
    best = max(("dense", "lexical"), key=lambda n: q[n]["all"]["hit_at_10"])
    d10 = 100 * (q["default"]["all"]["hit_at_10"] - q[best]["all"]["hit_at_10"])
    d1 = 100 * (q["default"]["all"]["hit_at_1"] - q[best]["all"]["hit_at_1"])
    lat = r["latency_p50_ms"]
    return (f"default vs best single side ({best}): hit@10 {d10:+.1f} points, hit@1 "
            f"{d1:+.1f} points; query p50 default {lat['default']} ms vs dense "
            f"{lat['dense']} ms ({lat['default'] / lat['dense']:.2f}x); probe scoring "
            f"{r['choice']['probe_seconds']} s = {r['probe_share_of_index']:.1%} of the index "
            f"stage ({r['seconds']['index']} s)")


def markdown(report: dict[str, Any]) -> str:
    lines = [f"search quality by corpus and query style; {report['cpu']}; params overridden: "
             f"{report.get('overrides') or 'none'}"]
    for name, r in report["corpora"].items():
        kinds = list(r["kinds"])
        counts = ", ".join(f"{k} {n}" for k, n in r["kinds"].items())
        lines += ["", f"### {name}: {r['docs']} documents, {r['chunks']} chunks indexed, "
                  f"{r['queries']} queries ({counts})",
                  "", f"{r['summary']}", "",
                  "| variant | hit@1 | hit@10 | nDCG@10 | " + " | ".join(
                      f"{k} hit@1 | {k} hit@10" for k in kinds) + " |",
                  "|---|---|---|---|" + "---|---|" * len(kinds)]
        for v, m in r["quality"].items():
            a = m["all"]
            lines.append(f"| {v} | {a['hit_at_1']:.4f} | {a['hit_at_10']:.4f} | "
                         f"{a['ndcg_at_10']:.4f} | " + " | ".join(
                             f"{m[k]['hit_at_1']:.4f} | {m[k]['hit_at_10']:.4f}"
                             for k in kinds) + " |")
        lines += ["", verdict(r)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=CORPORA)
    parser.add_argument("--families", type=int, default=300)
    parser.add_argument("--filler", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="build here and keep it (default: a "
                        "temporary folder)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a params override for every build, e.g. search.alpha=0.7")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out")
    args = parser.parse_args()
    from tasks.core.config import parse_override

    report = run(args.corpora, args.families, args.filler, args.seed, args.keep,
                 dict(parse_override(s) for s in args.set))
    save(args.out, "search_corpora", report, markdown(report))


if __name__ == "__main__":
    main()
