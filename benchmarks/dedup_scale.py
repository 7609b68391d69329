"""Near-duplicate removal at scale: embedpipe's `dedup_vectors` vs the naive recipe's
AgglomerativeClustering, on the same seeded synthetic unit vectors with planted duplicates.

    python -m benchmarks.dedup_scale --n 1000000
    python -m benchmarks.dedup_scale --n 200000 --naive-sizes 2000,5000 --memory-gb 8

Data: a clustered Gaussian mixture in `--dim` dimensions (Zipf-sized clusters of varying
spread), normalised; 1% of the rows are overwritten by perturbed copies of other rows at
cosine in [threshold + 0.01, 0.995] (planted duplicates: the later row of each pair should be
dropped), and 1% by near misses at cosine in [0.85, threshold - 0.02] (both rows should stay).
Each measurement runs in its own process, so peak RSS is per measurement; the naive side
runs under a memory cap (RLIMIT_AS) and a time limit, at growing n, until the first failure.
Writes benchmarks/out/dedup_scale-<n>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]
_BLOCK = 65_536


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _normalise_rows(x: np.ndarray) -> None:
    """L2-normalise in place, block by block (no full-size temporaries)."""
    for start in range(0, len(x), _BLOCK):
        block = x[start:start + _BLOCK]
        block /= np.linalg.norm(block, axis=1, keepdims=True)


def clustered_unit_vectors(n: int, d: int, seed: int, n_clusters: int | None = None
                           ) -> np.ndarray:
    """Seeded Gaussian mixture on the unit sphere: Zipf-like cluster sizes, spreads that
    vary per cluster (within-cluster cosine ~0.35-0.75), float32 (n, d)."""
    rng = np.random.default_rng(seed)
    k = n_clusters or max(8, min(4096, n // 200))
    centres = rng.standard_normal((k, d), dtype=np.float32)
    _normalise_rows(centres)
    weights = 1.0 / (np.arange(k) + 10.0)
    labels = rng.choice(k, size=n, p=weights / weights.sum())
    # noise of norm `spread` around a unit centre: within-cluster cosine ~ 1 / (1 + spread^2)
    spread = rng.uniform(0.6, 1.4, size=k).astype("float32") / np.sqrt(d, dtype="float32")
    x = np.empty((n, d), dtype="float32")
    for start in range(0, n, _BLOCK):
        lab = labels[start:start + _BLOCK]
        noise = rng.standard_normal((len(lab), d), dtype=np.float32)
        x[start:start + len(lab)] = centres[lab] + noise * spread[lab, None]
    _normalise_rows(x)
    return x


def _at_cosine(x: np.ndarray, cos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at exactly cosine `cos` to each (unit) row of `x`, random direction."""
    g = rng.standard_normal(x.shape, dtype=np.float32)
    g -= np.sum(g * x, axis=1, keepdims=True) * x
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    y = cos[:, None] * x + np.sqrt(1.0 - cos**2)[:, None] * g
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype("float32")


def planted_duplicates(n: int, d: int, seed: int, threshold: float, dup_frac: float = 0.01,
                       miss_frac: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, planted, near_miss): x (n, d) unit float32; `planted` the rows that duplicate an
    earlier row (cosine >= threshold + 0.01); `near_miss` rows of pairs just below threshold."""
    x = clustered_unit_vectors(n, d, seed)
    rng = np.random.default_rng(seed + 1)
    m_dup, m_miss = int(n * dup_frac), int(n * miss_frac)
    rows = rng.choice(n, size=2 * (m_dup + m_miss), replace=False)
    src, dst = rows[:m_dup + m_miss], rows[m_dup + m_miss:]
    cos = np.concatenate([rng.uniform(threshold + 0.01, 0.995, m_dup),
                          rng.uniform(0.85, threshold - 0.02, m_miss)])
    for start in range(0, len(src), _BLOCK):
        s, t = src[start:start + _BLOCK], dst[start:start + _BLOCK]
        x[t] = _at_cosine(x[s], cos[start:start + _BLOCK], rng)
    planted = np.sort(np.maximum(src[:m_dup], dst[:m_dup]))
    near_miss = np.sort(np.concatenate([src[m_dup:], dst[m_dup:]]))
    return x, planted, near_miss


def measure_embedpipe(n: int, d: int, seed: int, threshold: float,
                      exact_search_below: int | None) -> dict[str, Any]:
    """Run `dedup_vectors` (near-duplicate path) once; seconds, RSS and planted recall."""
    from tasks.core.config import DedupConfig
    from tasks.dedup import dedup_vectors

    x, planted, near_miss = planted_duplicates(n, d, seed, threshold)
    rss_data = _rss_mb()
    extra = {} if exact_search_below is None else {"exact_search_below": exact_search_below}
    cfg = DedupConfig(threshold=threshold, exact=False, seed=seed, **extra)
    started, cpu = time.perf_counter(), time.process_time()
    keep, _ = dedup_vectors(x, [""] * n, cfg)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    dropped = np.flatnonzero(~keep)
    hit = np.isin(dropped, planted)
    return {"n": n, "d": d, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "peak_rss_mb": _rss_mb(),
            "rss_after_data_mb": rss_data, "data_mb": round(x.nbytes / 2**20, 1),
            "path": "flat" if n < cfg.exact_search_below else "ivf",
            "planted": len(planted), "dropped": len(dropped),
            "planted_recall": round(float(hit.sum()) / max(1, len(planted)), 5),
            "false_drops": int((~hit).sum()),
            "near_misses_dropped": int(np.isin(dropped, near_miss).sum())}


def measure_naive(n: int, d: int, seed: int, threshold: float) -> dict[str, Any]:
    """benchmarks.naive's dedup, without its memory-budget guard."""
    from sklearn.cluster import AgglomerativeClustering

    x, planted, _ = planted_duplicates(n, d, seed, threshold)
    started, cpu = time.perf_counter(), time.process_time()
    labels = AgglomerativeClustering(n_clusters=None, distance_threshold=1 - threshold,
                                     metric="cosine", linkage="average").fit_predict(x)
    _, first = np.unique(labels, return_index=True)
    keep = np.zeros(n, dtype=bool)
    keep[first] = True
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    dropped = np.flatnonzero(~keep)
    hit = np.isin(dropped, planted)
    return {"n": n, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "peak_rss_mb": _rss_mb(),
            "planted_recall": round(float(hit.sum()) / max(1, len(planted)), 5),
            "false_drops": int((~hit).sum())}


def run_side(side: str, n: int, args: argparse.Namespace, memory_gb: float | None = None,
             time_limit_s: float | None = None) -> dict[str, Any]:
    """One measurement in a child process (optionally capped); its result or how it failed."""
    result = args.out / f".{side}-{n}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.dedup_scale", "--side", side, "--n", str(n),
           "--dim", str(args.dim), "--seed", str(args.seed), "--threshold", str(args.threshold),
           "--result", str(result)]
    if args.exact_search_below is not None:
        cmd += ["--exact-search-below", str(args.exact_search_below)]
    if memory_gb is not None:
        cmd += ["--cap-gb", str(memory_gb)]
    proc = subprocess.Popen(cmd, cwd=REPO)
    deadline = None if time_limit_s is None else time.perf_counter() + time_limit_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.perf_counter() > deadline:
            proc.send_signal(signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            return {"n": n, "failure": f"timeout after {time_limit_s:.0f} s",
                    "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = round(usage.ru_maxrss / 1024, 1)
    if result.exists():
        out = json.loads(result.read_text())
        result.unlink()
        return out
    how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
           else f"exit code {proc.returncode}")
    return {"n": n, "failure": how, "peak_rss_mb": peak}


def side_main(args: argparse.Namespace) -> None:
    if args.cap_gb is not None:  # before the data exists: the cap covers everything it does
        limit = int(args.cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        if args.side == "naive":
            out = measure_naive(args.n, args.dim, args.seed, args.threshold)
        else:
            out = measure_embedpipe(args.n, args.dim, args.seed, args.threshold,
                                    args.exact_search_below)
    except MemoryError as err:
        out = {"n": args.n, "failure": f"MemoryError: {err}".strip(), "peak_rss_mb": _rss_mb()}
    args.result.write_text(json.dumps(out))


def markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [f"dedup at scale, d={cfg['dim']}, threshold {cfg['threshold']}, 1% planted "
             f"duplicates + 1% near misses; naive capped at {cfg['memory_gb']} GB address "
             f"space and {cfg['time_limit_s']:.0f} s; {report['cpu']}", "",
             "| n | embedpipe s | embedpipe path | embedpipe peak RSS MB | planted recall |"
             " false drops | naive s / failure | naive peak RSS MB | naive planted recall |",
             "|---|---|---|---|---|---|---|---|---|"]
    naive = {r["n"]: r for r in report["naive"]}
    for e in report["embedpipe"]:
        nv = naive.get(e["n"], {})
        nv_s = nv.get("failure") or nv.get("seconds", "not run")
        lines.append(f"| {e['n']:,} | {e.get('seconds', e.get('failure'))} | {e.get('path')} |"
                     f" {e['peak_rss_mb']} | {e.get('planted_recall')} | {e.get('false_drops')}"
                     f" | {nv_s} | {nv.get('peak_rss_mb', '-')} |"
                     f" {nv.get('planted_recall', '-')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="embedpipe's largest size")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--naive-sizes", default="2000,5000,10000,20000,40000,80000,160000",
                        help="comma-separated n for the naive side; stops at its first failure")
    parser.add_argument("--memory-gb", type=float, default=16.0,
                        help="address-space cap (RLIMIT_AS) of each naive run")
    parser.add_argument("--time-limit", type=float, default=300.0,
                        help="seconds before a naive run is killed")
    parser.add_argument("--exact-search-below", type=int, default=None,
                        help="override DedupConfig.exact_search_below (default: the config's)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument("--side", choices=["naive", "embedpipe"], help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cap-gb", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side_main(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)  # the sides write their results there
    sizes = [int(s) for s in args.naive_sizes.split(",") if s]
    report: dict[str, Any] = {"cpu": cpu_label(), "load_avg_start": os.getloadavg(),
                              "config": {"n": args.n, "dim": args.dim, "seed": args.seed,
                                         "threshold": args.threshold,
                                         "memory_gb": args.memory_gb,
                                         "time_limit_s": args.time_limit,
                                         "exact_search_below": args.exact_search_below},
                              "naive": [], "embedpipe": []}
    for n in sizes:
        report["naive"].append(run_side("naive", n, args, args.memory_gb, args.time_limit))
        print(json.dumps(report["naive"][-1]), flush=True)
        if "failure" in report["naive"][-1]:
            break
    for n in sorted({*(r["n"] for r in report["naive"]), args.n}):
        report["embedpipe"].append(run_side("embedpipe", n, args))
        print(json.dumps(report["embedpipe"][-1]), flush=True)
    report["load_avg_end"] = os.getloadavg()
    name = f"dedup_scale-{args.n}"
    save(args.out, name, report, markdown(report))


if __name__ == "__main__":
    main()
