"""Peak memory of the build stages as the corpus grows.

    python -m benchmarks.memory --chunks 10000 100000
    python -m benchmarks.memory --chunks 1000 4000 --stages ingest clean chunk
    python -m benchmarks.memory --chunks 6600 --one-process   # as a build runs them

For each size: a corpus from `benchmarks.corpus.generate`, a workspace whose params.yaml
points at it (vector cache off, so encode encodes every text), and each stage run alone in
its own process (`<stage>_task.fn(root=...)`, no Prefect server). The child reports its
peak RSS (VmHWM: `ru_maxrss` would carry the forking parent's over), its RSS once the stage
module is imported (what any corpus costs), and the stage's seconds. Ratios are largest
size / smallest size, per stage.
With `--one-process`, the stages run one after the other in one process, as `embedpipe run`
and `benchmarks.run` run them: each stage's peak is its own (the peak is reset before it
starts, /proc/self/clear_refs), on top of what the stages before it left behind, and the
build's peak is the largest of them.
Writes benchmarks/out/memory-<sizes>.json and .md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "clean", "chunk", "finetune", "encode", "reduce", "dedup", "index",
          "evaluate")


def _status_mb(key: str) -> float:
    """VmRSS or VmHWM (the peak) of this process, in MB."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith(f"{key}:"))
    return round(kb / 1024, 1)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5": VmHWM back to the current RSS
        f.write("5")


def run_stage(stage: str, root: Path) -> dict[str, Any]:
    """Run one stage in this process; its seconds, RSS before and after, peak and rows."""
    from tasks.core.registry import get_stage

    module = importlib.import_module(f"tasks.{stage}")
    task = getattr(module, f"{stage}_task")
    imported = _status_mb("VmRSS")
    _reset_peak()
    started = time.perf_counter()
    task.fn(root=str(root))
    seconds = time.perf_counter() - started
    manifest = json.loads((root / "data" / get_stage(stage).folder / "_manifest.json"
                           ).read_text())
    return {"stage": stage, "seconds": round(seconds, 2), "import_rss_mb": imported,
            "peak_rss_mb": _status_mb("VmHWM"), "after_rss_mb": _status_mb("VmRSS"),
            "rows": manifest.get("rows", {})}


def child_main(stages: list[str], root: Path, result: Path) -> None:
    """Run `stages` one after the other in this (fresh) process and report each."""
    rows = []
    for stage in stages:
        rows.append(run_stage(stage, root))
        print(f"  {stage:<8} peak {rows[-1]['peak_rss_mb']:>8} MB  after "
              f"{rows[-1]['after_rss_mb']} MB  {rows[-1]['seconds']} s", flush=True)
    result.write_text(json.dumps(rows))


def run_size(n_chunks: int, tmp: Path, stages: list[str], device: str, one_process: bool
             ) -> dict[str, Any]:
    from benchmarks.corpus import generate
    from tasks.core.params_file import write_overrides

    corpus, ws = tmp / f"corpus-{n_chunks}", tmp / f"ws-{n_chunks}"
    info = generate(corpus, n_chunks, REPO / "data" / "sample")
    ws.mkdir()
    (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
    write_overrides(ws / "params.yaml", {
        "ingest.source": str(corpus), "encode.cache": False, "encode.device": device,
        "paths.vector_cache": str(ws / "cache")})
    corpus_mb = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file()) / 2**20
    rows = []
    for group in [stages] if one_process else [[stage] for stage in stages]:
        result = tmp / f"{group[0]}-{n_chunks}.json"
        subprocess.run([sys.executable, "-m", "benchmarks.memory", "--child", *group,
                        "--root", str(ws), "--result", str(result)], cwd=REPO, check=True)
        for row in json.loads(result.read_text()):
            row["data_rss_mb"] = round(row["peak_rss_mb"] - row["import_rss_mb"], 1)
            rows.append(row)
            print(f"{n_chunks:>8} {row['stage']:<8} peak {row['peak_rss_mb']:>8} MB  "
                  f"(imports {row['import_rss_mb']} MB)  {row['seconds']} s  {row['rows']}",
                  flush=True)
    return {"target_chunks": n_chunks, "corpus": info, "corpus_mb": round(corpus_mb, 1),
            "stages": rows}


def ratios(sizes: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage: largest / smallest size for peak RSS, RSS above imports, and seconds."""
    small, large = sizes[0], sizes[-1]
    out = {}
    for a, b in zip(small["stages"], large["stages"], strict=True):
        out[a["stage"]] = {
            "peak_rss": round(b["peak_rss_mb"] / a["peak_rss_mb"], 3),
            "data_rss": round(b["data_rss_mb"] / max(a["data_rss_mb"], 1.0), 3),
            "seconds": round(b["seconds"] / max(a["seconds"], 1e-3), 2)}
    return out


def markdown(report: dict[str, Any]) -> str:
    sizes = report["sizes"]
    head = " | ".join(f"{s['target_chunks']} chunks: peak MB (above imports) / s"
                      for s in sizes)
    how = ("all stages in one process (each stage's peak on top of what the stages before "
           "it left; RSS before it in the 'above imports' column's place)"
           if report["one_process"] else "each stage in its own process")
    lines = [f"Peak RSS per stage, {how}; {report['cpu']}; device {report['device']}.", "",
             f"| stage | {head} | peak RSS ratio | above-imports ratio | time ratio |",
             "|---|" + "---|" * (len(sizes) + 3)]
    for i, stage in enumerate(r["stage"] for r in sizes[0]["stages"]):
        cells = " | ".join(f"{s['stages'][i]['peak_rss_mb']} ({s['stages'][i]['data_rss_mb']})"
                           f" / {s['stages'][i]['seconds']}" for s in sizes)
        r = report["ratios"][stage]
        lines.append(f"| {stage} | {cells} | {r['peak_rss']:.2f}x | {r['data_rss']:.2f}x | "
                     f"{r['seconds']:.1f}x |")
    if report["one_process"]:
        lines += ["", "Build peak RSS (the largest stage peak): " + ", ".join(
            f"{s['target_chunks']} chunks {p:,.0f} MB"
            for s, p in zip(sizes, report["build_peak_rss_mb"], strict=True))]
    lines += ["", "| size | docs | chunks | corpus MB |", "|---|---|---|---|"]
    for s in sizes:
        chunks = next((r["rows"].get("chunks") for r in s["stages"] if r["stage"] == "chunk"),
                      "-")
        lines.append(f"| {s['target_chunks']} | {s['corpus']['docs']} | {chunks} | "
                     f"{s['corpus_mb']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, nargs="+", default=[10_000, 100_000],
                        help="target chunk counts, smallest first")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument("--one-process", action="store_true",
                        help="run the stages one after the other in one process")
    parser.add_argument("--child", nargs="+", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        child_main(args.child, args.root, args.result)
        return
    if "encode" in args.stages:  # export the ONNX model once, outside the measured runs
        subprocess.run([sys.executable, "-c", "from tasks.core.config import EncodeConfig; "
                        "from tasks.encoders.loading import encoder_for; "
                        f"encoder_for(EncodeConfig(device={args.device!r}))"],
                       cwd=REPO, check=True)
    sizes = sorted(args.chunks)
    with tempfile.TemporaryDirectory(prefix="embedpipe-memory-") as tmp:
        results = [run_size(n, Path(tmp), args.stages, args.device, args.one_process)
                   for n in sizes]
    report = {"cpu": cpu_label(), "device": args.device, "one_process": args.one_process,
              "sizes": results, "ratios": ratios(results),
              "build_peak_rss_mb": [max(r["peak_rss_mb"] for r in s["stages"])
                                    for s in results]}
    name = ("memory-" + "-".join(str(n) for n in sizes)
            + ("-one-process" if args.one_process else ""))
    save(args.out, name, report, markdown(report))


if __name__ == "__main__":
    main()
