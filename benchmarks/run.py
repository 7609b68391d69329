"""Run embedpipe and the naive recipe on the same generated corpus, side by side.

    python -m benchmarks.run --size small        # ~10k chunks
    python -m benchmarks.run --chunks 3000       # any size

Each side runs in its own process (peak RSS is per side); per stage: wall seconds,
throughput (chunks/s; tokens/s for encode), peak RSS so far; quality: document recall@10
and MRR@10 of the planted queries through each side's own query path.
Writes benchmarks/out/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]
SIZES = {"tiny": 300, "small": 10_000, "medium": 100_000, "large": 1_000_000}
PCA_DIMS = 128
SIDES = ("embedpipe", "naive", "langchain")
CUDA_BATCH = 256  # large batches on a GPU (fp16 there is encode.precision auto)


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Timer:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def stage(self, name: str, fn, n_items: int | None = None, **extra):
        started = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - started
        row = {"stage": name, "seconds": round(seconds, 3), "peak_rss_mb": _rss_mb(), **extra}
        if n_items:
            row["items_per_s"] = round(n_items / max(seconds, 1e-9), 1)
        self.rows.append(row)
        return result


def _queries(corpus: Path) -> tuple[list[str], dict[str, dict[str, int]]]:
    texts = {}
    for line in (corpus / "queries.jsonl").read_text().splitlines():
        obj = json.loads(line)
        texts[obj["_id"]] = obj["text"]
    qrels: dict[str, dict[str, int]] = {}
    for line in (corpus / "qrels/test.tsv").read_text().splitlines()[1:]:
        q, d, _ = line.split("\t")
        qrels.setdefault(q, {})[d] = 1
    return [texts[q] for q in sorted(texts)], {q: qrels[q] for q in sorted(texts)}


def run_naive(corpus: Path, threshold: float, memory_gb: float, share: Path,
              device: str) -> dict[str, Any]:
    from benchmarks import naive
    from tasks.core.config import EncodeConfig
    from tasks.encoders.loading import encoder_for
    from tasks.encoders.model import load_tokenizer
    from tasks.evaluation.metrics import retrieval_metrics

    t = Timer()
    docs = t.stage("ingest", lambda: naive.ingest(corpus))
    texts, owners = t.stage("chunk", lambda: naive.chunk(docs), len(docs))
    tok = load_tokenizer(EncodeConfig().model)
    tokens = sum(len(ids) for ids in tok(texts, add_special_tokens=True, truncation=True,
                                         max_length=256)["input_ids"])
    holder: dict[str, Any] = {}

    def load_and_encode():  # the stage includes loading the model, as embedpipe's does
        # the article's recipe: sentence-transformers on PyTorch, fp32
        holder["model"] = encoder_for(EncodeConfig(device=device, backend="torch",
                                                   precision="fp32"))
        return naive.encode(holder["model"], texts)

    x = t.stage("encode", load_and_encode, len(texts), tokens=tokens)
    model = holder["model"]
    t.rows[-1]["tokens_per_s"] = round(tokens / t.rows[-1]["seconds"], 1)
    y, pca = t.stage("reduce", lambda: naive.reduce(x, PCA_DIMS), len(texts))
    keep = t.stage("dedup", lambda: naive.dedup(y, threshold, memory_gb), len(texts))
    if isinstance(keep, str):
        t.rows[-1]["note"] = keep
        keep = None
    kept = y if keep is None else y[keep]
    kept_owner = owners if keep is None else [o for o, k in zip(owners, keep, strict=True) if k]
    index = t.stage("index", lambda: naive.index(kept), len(kept))
    queries, qrels = _queries(corpus)
    xq = pca.transform(model.encode(queries, convert_to_numpy=True)).astype("float32")
    _, ids = index.search(xq, 30)
    run = {}
    for q, row in zip(sorted(qrels), ids, strict=True):
        ranked: dict[str, float] = {}
        for rank, i in enumerate(row):
            if i >= 0:
                ranked.setdefault(kept_owner[i], -float(rank))
        run[q] = ranked
    return {"stages": t.rows, "chunks": len(texts), "tokens": tokens,
            "quality": retrieval_metrics(qrels, run),
            "same_chunks": same_chunks(model, share, corpus)}


def run_langchain(corpus: Path, device: str) -> dict[str, Any]:
    from benchmarks import langchain_side as lc
    from tasks.core.config import EncodeConfig
    from tasks.encoders.model import load_tokenizer, resolve_model_path
    from tasks.evaluation.metrics import retrieval_metrics

    t = Timer()
    docs = t.stage("ingest", lambda: lc.ingest(corpus))
    chunks = t.stage("chunk", lambda: lc.chunk(docs), len(docs))
    texts = [c.page_content for c in chunks]
    tok = load_tokenizer(EncodeConfig().model)
    tokens = sum(len(ids) for ids in tok(texts, add_special_tokens=True, truncation=True,
                                         max_length=256)["input_ids"])
    holder: dict[str, Any] = {}

    def load_and_encode():  # the stage includes loading the model, as embedpipe's does
        holder["emb"] = lc.embeddings(str(resolve_model_path(EncodeConfig().model)), device)
        return holder["emb"].embed_documents(texts)

    vectors = t.stage("encode", load_and_encode, len(texts), tokens=tokens)
    t.rows[-1]["tokens_per_s"] = round(tokens / t.rows[-1]["seconds"], 1)
    db = t.stage("index", lambda: lc.store(chunks, vectors, holder["emb"]), len(texts))
    queries, qrels = _queries(corpus)
    ranked = lc.search(db, holder["emb"], queries)
    run = {q: {d: -float(r) for r, d in enumerate(ids)}
           for q, ids in zip(sorted(qrels), ranked, strict=True)}
    return {"stages": t.rows, "chunks": len(texts), "tokens": tokens,
            "quality": retrieval_metrics(qrels, run)}


def same_chunks(model: Any, share: Path, corpus: Path) -> dict[str, Any]:
    """The naive encode loop on embedpipe's own chunks, and both sides' vectors searched
    exactly: the encode speed-up and quality difference with chunking taken out."""
    import numpy as np
    import pyarrow.parquet as pq

    from benchmarks import naive
    from tasks.core.vectors import arrow_to_vectors
    from tasks.evaluation.beir import find_beir_sets, read_beir
    from tasks.evaluation.metrics import retrieval_metrics

    rel, _, query_file, qrels_file = find_beir_sets(corpus)[0]
    query_text, qrels = read_beir(rel, query_file, qrels_file)  # keyed by embedpipe doc_id
    queries = [query_text[q] for q in sorted(query_text)]
    table = pq.read_table(share / "chunks.parquet")
    texts = table.column("text").to_pylist()
    started = time.perf_counter()
    x_naive = naive.encode(model, texts)
    seconds = time.perf_counter() - started
    sides = {"naive": (x_naive, model.encode(queries, convert_to_numpy=True)),
             "embedpipe": (arrow_to_vectors(table.column("vector")),
                           np.load(share / "queries.npy"))}
    docs = table.column("doc_id").to_pylist()
    quality = {}
    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    for side, (x, xq) in sides.items():
        quality[side] = retrieval_metrics(qrels, exact_doc_run(unit(xq), unit(x),
                                                               sorted(query_text), docs))
    cos = (unit(x_naive) * unit(sides["embedpipe"][0])).sum(axis=1)
    return {"chunks": len(texts), "naive_encode_s": round(seconds, 3),
            "cosine_min": round(float(cos.min()), 4), "cosine_mean": round(float(cos.mean()), 4),
            "quality": quality}


def exact_doc_run(xq: Any, x: Any, qids: list[str], docs: list[str], depth: int = 50
                  ) -> dict[str, dict[str, float]]:
    """Each query's documents by its best chunk among the exact top `depth` (inner product
    of the rows of `xq` and `x`), as a run for `retrieval_metrics`."""
    import numpy as np

    top = np.argsort(-(xq @ x.T), axis=1)[:, :depth]
    run = {}
    for q, row in zip(qids, top, strict=True):
        ranked: dict[str, float] = {}
        for rank, i in enumerate(row):
            ranked.setdefault(docs[i], -float(rank))
        run[q] = ranked
    return run


def run_embedpipe(corpus: Path, threshold: float, share: Path, device: str) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flows.pipeline import STAGE_TASKS
    from tasks.core.config import load_params
    from tasks.core.params_file import write_overrides
    from tasks.evaluation.retrieval import headline_variant, labeled_metrics
    from tasks.query.search import load_index_folder

    t = Timer()
    with tempfile.TemporaryDirectory(prefix="embedpipe-bench-") as tmp:
        ws = Path(tmp)
        (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
        write_overrides(ws / "params.yaml", {
            "ingest.source": str(corpus), "reduce.pca_dims": PCA_DIMS,
            "dedup.threshold": threshold, "encode.cache": False, "encode.device": device,
            # the planted queries are the test set of both sides: nothing is chosen on them
            "search.labels_choose": False,
            **({"encode.batch_size": CUDA_BATCH} if device == "cuda" else {})})
        for name in ("ingest", "clean", "chunk", "finetune", "encode", "reduce", "dedup",
                     "index"):
            t.stage(name, lambda n=name: STAGE_TASKS[n].fn(root=str(ws)))
            manifest = json.loads((ws / "data" / next((ws / "data").glob(f"0*_{name}")).name
                                   / "_manifest.json").read_text())
            t.rows[-1]["rows"] = manifest.get("rows", {})
        chunks = pq.read_table(ws / "data/03_chunk/chunks.parquet")
        n_chunks, tokens = chunks.num_rows, int(sum(chunks.column("n_tokens").to_pylist()))
        for row in t.rows:
            if row["stage"] in ("chunk", "encode", "reduce", "dedup", "index"):
                row["items_per_s"] = round(n_chunks / max(row["seconds"], 1e-9), 1)
            if row["stage"] == "encode":
                row["tokens_per_s"] = round(tokens / row["seconds"], 1)
        vectors = pq.read_table(ws / "data/04_encode/vectors.parquet")
        pq.write_table(pa.table({"doc_id": chunks.column("doc_id"), "text": chunks.column("text"),
                                 "vector": vectors.column("vector")}), share / "chunks.parquet")
        from tasks.encoders.loading import encoder_for
        from tasks.encoders.model import model_fingerprint

        params = load_params(ws / "params.yaml")
        np.save(share / "queries.npy", encoder_for(params.encode).encode(
            _queries(corpus)[0], normalize_embeddings=True))
        folder = load_index_folder(ws / "data/07_index")
        quality = [s["variants"][headline_variant(folder)]
                   for s in labeled_metrics(folder, corpus).values()]
    return {"stages": t.rows, "chunks": n_chunks, "tokens": tokens,
            "encode": {k: model_fingerprint(params.encode)[k] for k in ("backend", "precision")},
            "quality": quality[0] if quality else {}}


def side_main(args: argparse.Namespace) -> None:
    if args.side == "naive":
        result = run_naive(args.corpus, args.threshold, args.memory_gb, args.share, args.device)
    elif args.side == "langchain":
        result = run_langchain(args.corpus, args.device)
    else:
        result = run_embedpipe(args.corpus, args.threshold, args.share, args.device)
    result["peak_rss_mb"] = _rss_mb()
    args.result.write_text(json.dumps(result, indent=2))


def markdown(report: dict[str, Any]) -> str:
    if "naive" not in report:  # `--sides embedpipe langchain`: the build table alone
        return "\n".join([f"corpus: {report['corpus']['docs']} docs; embedpipe "
                          f"{report['embedpipe']['chunks']} chunks; {report['cpu']}",
                          *build_table(report), *ceiling_lines(report)]) + "\n"
    lines = [f"corpus: {report['corpus']['docs']} docs; embedpipe {report['embedpipe']['chunks']}"
             f" chunks, naive {report['naive']['chunks']} chunks; {report['cpu']}", "",
             "| stage | embedpipe s | naive s | speed-up | embedpipe items/s | naive items/s |"
             " embedpipe peak RSS MB | naive peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    naive_rows = {r["stage"]: r for r in report["naive"]["stages"]}
    for r in report["embedpipe"]["stages"]:
        n = naive_rows.get(r["stage"], {})
        ratio = f"{n['seconds'] / r['seconds']:.2f}x" if n.get("seconds") and r["seconds"] else "-"
        lines.append(f"| {r['stage']} | {r['seconds']:.2f} | {n.get('seconds', '-')} | {ratio} |"
                     f" {r.get('items_per_s', '-')} | {n.get('items_per_s', '-')} |"
                     f" {r['peak_rss_mb']} | {n.get('peak_rss_mb', '-')} |")
    lines += build_table(report)
    e, nv = report["embedpipe"], report["naive"]
    enc_e = next(r for r in e["stages"] if r["stage"] == "encode")
    enc_n = next(r for r in nv["stages"] if r["stage"] == "encode")
    ratio = enc_e["tokens_per_s"] / enc_n["tokens_per_s"]
    lines += ["", f"encode tokens/s: embedpipe {enc_e['tokens_per_s']}, naive "
              f"{enc_n['tokens_per_s']} (ratio {ratio:.2f})",
              "", "| quality (planted queries) | embedpipe | naive |", "|---|---|---|"]
    for k in ("recall_at_1", "recall_at_10", "mrr_at_10", "ndcg_at_10"):
        lines.append(f"| {k} | {e['quality'].get(k)} | {nv['quality'].get(k)} |")
    same = nv.get("same_chunks")
    if same:
        enc = e.get("encode", {})
        lines += ["", f"Encode on the same {same['chunks']} chunks (embedpipe's), same model: "
                  f"embedpipe {enc.get('backend')}/{enc.get('precision')} stage "
                  f"{enc_e['seconds']:.1f} s (model load included) vs the naive loop "
                  f"{same['naive_encode_s']:.1f} s (model already loaded): "
                  f"**{same['naive_encode_s'] / enc_e['seconds']:.2f}x**; vector cosine to the "
                  f"naive fp32 vectors min {same['cosine_min']}, mean {same['cosine_mean']}.", "",
                  "| exact search, same chunks | embedpipe vectors | naive vectors | "
                  "difference (points) |", "|---|---|---|---|"]
        for k in ("recall_at_10", "ndcg_at_10", "mrr_at_10"):
            a, b = same["quality"]["embedpipe"][k], same["quality"]["naive"][k]
            lines.append(f"| {k} | {a:.4f} | {b:.4f} | {100 * (a - b):+.2f} |")
    return "\n".join(lines + ceiling_lines(report)) + "\n"


def ceiling_lines(report: dict[str, Any]) -> list[str]:
    """The encode ceiling table: each side's tokens/s as a fraction of the CPU's peaks."""
    lines: list[str] = []
    ceil = report.get("ceiling")
    if ceil:
        cpu, c = ceil["cpu"], ceil["ceiling_tokens_per_s"]
        lines += ["", f"Hardware ceiling ({ceil['mflops_per_token']} MFLOP/token at mean "
                  f"{ceil['mean_seq_len']} tokens; {cpu['cores']} cores x {cpu['ghz']} GHz x "
                  f"{cpu['fp32_flop_per_cycle']} fp32 FLOP/cycle = {cpu['fp32_peak_gflops']} "
                  f"GFLOP/s, int8 {cpu['int8_peak_gops']} GOP/s; measured fp32 GEMM "
                  f"{ceil['gemm_gflops']} GFLOP/s):", "",
                  "| encode tokens/s as a fraction of | ceiling tokens/s | embedpipe | naive |",
                  "|---|---|---|---|"]
        naive = ceil["fraction"].get("naive", {})
        for k, v in c.items():
            lines.append(f"| {k} | {v} | {ceil['fraction']['embedpipe'][k]:.1%} | "
                         + (f"{naive[k]:.1%} |" if k in naive else "- |"))
    return lines


def build_table(report: dict[str, Any]) -> list[str]:
    """Each side's build (ingest -> index), its stages, peak memory and quality, and
    embedpipe's time as a fraction of each other side's."""
    sides = [s for s in SIDES if s in report]
    stages = ("ingest", "clean", "chunk", "encode", "reduce", "dedup", "index")
    secs = {s: {r["stage"]: r["seconds"] for r in report[s]["stages"]} for s in sides}
    total = {s: sum(secs[s].values()) for s in sides}
    lines = ["", "Build, ingest -> index, each side in its own process on the same documents:",
             "", "| | " + " | ".join(sides) + " |", "|---" * (len(sides) + 1) + "|"]
    for stage in stages:
        if any(stage in secs[s] for s in sides):
            lines.append(f"| {stage} s | " + " | ".join(
                f"{secs[s][stage]:.2f}" if stage in secs[s] else "-" for s in sides) + " |")
    rows = {"**build s**": lambda s: f"**{total[s]:.2f}**",
            "embedpipe / side": lambda s: f"{total['embedpipe'] / total[s]:.2f}x",
            "chunks": lambda s: f"{report[s]['chunks']:,}",
            "chunks/s (chunk stage)": lambda s: f"{report[s]['chunks'] / secs[s]['chunk']:,.0f}",
            "peak RSS MB": lambda s: f"{report[s]['peak_rss_mb']:,.0f}",
            "recall@10": lambda s: f"{report[s]['quality'].get('recall_at_10', 0):.4f}",
            "nDCG@10": lambda s: f"{report[s]['quality'].get('ndcg_at_10', 0):.4f}"}
    lines += [f"| {k} | " + " | ".join(f(s) for s in sides) + " |" for k, f in rows.items()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--chunks", type=int, help="target chunk count (overrides --size)")
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--memory-gb", type=float, default=16.0,
                        help="budget the naive dedup's n x n matrix must fit")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--share", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where both sides encode (cuda: see benchmarks/cuda.py)")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES),
                        help="which sides run (default all; naive needs embedpipe's chunks)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.side:
        side_main(args)
        return
    from benchmarks.corpus import generate

    n = args.chunks or SIZES[args.size]
    name = f"{args.size if not args.chunks else 'chunks'}-{n}"
    with tempfile.TemporaryDirectory(prefix="embedpipe-corpus-") as tmp:
        corpus = Path(tmp) / "corpus"
        info = generate(corpus, n, REPO / "data" / "sample")
        report: dict[str, Any] = {"corpus": info, "target_chunks": n, "cpu": cpu_label(),
                                  "device": args.device, "warm_up_s": _warm_up(args.device)}
        from benchmarks.langchain_side import available

        # naive after embedpipe: it re-encodes embedpipe's chunks; langchain only where the
        # benchmark extra is installed (`pip install -e ".[bench]"`)
        for side in [s for s in SIDES if s in args.sides and (s != "langchain" or available())]:
            result = Path(tmp) / f"{side}.json"
            subprocess.run([sys.executable, "-m", "benchmarks.run", "--side", side, "--corpus",
                            str(corpus), "--result", str(result), "--threshold",
                            str(args.threshold), "--memory-gb", str(args.memory_gb),
                            "--share", tmp, "--device", args.device], cwd=REPO, check=True)
            report[side] = json.loads(result.read_text())
        report["ceiling"] = ceiling(report) if args.device == "cpu" else None
    save(args.out, name, report, markdown(report))


def _warm_up(device: str) -> float:
    """Load embedpipe's encoder once (exports the ONNX model if it is not cached yet), so
    the timed encode stage measures a scheduled run, not the one-off export."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from tasks.core.config import EncodeConfig; "
                    "from tasks.encoders.loading import encoder_for; "
                    f"encoder_for(EncodeConfig(device={device!r}))"], cwd=REPO, check=True)
    return round(time.perf_counter() - started, 1)


def ceiling(report: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.ceiling import encode_ceiling
    from tasks.core.config import EncodeConfig
    from tasks.encoders.model import resolve_model_path

    ep = report["embedpipe"]
    tokens_per_s = {side: next(r for r in report[side]["stages"] if r["stage"] == "encode")
                    ["tokens_per_s"] for side in ("embedpipe", "naive") if side in report}
    seq = ep["tokens"] / max(ep["chunks"], 1) + 2  # + [CLS] and [SEP]
    return encode_ceiling(resolve_model_path(EncodeConfig().model), seq, tokens_per_s)


if __name__ == "__main__":
    main()
