"""What a nightly rerun costs after a small change to the corpus, against a full build.

    python -m benchmarks.nightly --docs 50000            # 1% churn by default
    python -m benchmarks.nightly --docs 10000 --churn 0.01

A plain-text corpus of `--docs` files (one `.txt` per document, in topic folders) is
recombined from the sentences of `data/sample` (`benchmarks.corpus`). Workspace A gets a
full build (ingest -> evaluate, each stage in-process, timed); then `--churn` of the
documents change: 40% of them new files, 30% deleted, 30% edited (a sentence added); A is
built again (the rerun, timed). Workspace B then gets a full build of the churned corpus
with empty result caches; its vector cache is a copy of A's as it stood before the rerun,
so B encodes only what A's rerun encoded (a vector from the cache is the contract of the
vector cache, tested on its own; encoding everything again would double the benchmark).
Every output file of A after the rerun is compared with B's (sha256; JSON files less the
keys that report on one build, `catalog.REPORTED_KEYS`), as `tests/conftest.stage_outputs`
compares two builds. Last, an IVF index over dedup's kept vectors before the churn is
brought to those after it, updated in place and built again (`ivf_update_vs_rebuild`).
Writes benchmarks/out/nightly-<docs>.json and .md. Run it from a copy of the code that does
not change while it runs: the result caches' space includes the stage code's hashes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "clean", "chunk", "finetune", "encode", "reduce", "dedup", "index",
          "evaluate")
SHARES = {"new": 0.4, "deleted": 0.3, "edited": 0.3}  # of the churned documents


def timed_stages(ws: Path, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Run stages in-process in `ws`, in order: wall and CPU seconds of each (this process,
    all its threads: on a shared machine the CPU seconds are what a ratio can trust)."""
    import time

    from flows.pipeline import STAGE_TASKS

    out = {}
    for name in names:
        wall, cpu = time.perf_counter(), time.process_time()
        STAGE_TASKS[name].fn(root=str(ws))
        out[name] = {"wall": round(time.perf_counter() - wall, 2),
                     "cpu": round(time.process_time() - cpu, 2)}
    return out


def _total(times: dict[str, dict[str, float]], kind: str) -> float:
    return round(sum(t[kind] for t in times.values()), 1)


def write_corpus(folder: Path, n_docs: int, seed: int = 0) -> dict[str, list[str]]:
    """`n_docs` plain-text files under `folder/<topic>/`; returns the sentence pools."""
    from benchmarks.corpus import _perturb, sample_sentences

    rng = random.Random(seed)
    pools = sample_sentences(REPO / "data" / "sample")
    for i in range(n_docs):
        _write_doc(folder, f"d{i:07d}", pools, rng, _perturb)
    return pools


def _write_doc(folder: Path, name: str, pools: dict[str, list[str]], rng: random.Random,
               perturb: Any) -> Path:
    topic = rng.choice(sorted(pools))
    length = int(rng.lognormvariate(2.0, 0.6)) + 2  # 3 .. ~40 sentences, long tail
    body = [perturb(rng.choice(pools[topic]), rng) for _ in range(length)]
    path = folder / topic / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(" ".join(body) + "\n", encoding="utf-8")
    return path


def churn(folder: Path, share: float, pools: dict[str, list[str]], seed: int = 1
          ) -> dict[str, int]:
    """Change `share` of the documents under `folder`: new files, deleted ones, edited ones
    (a sentence appended), in the proportions of `SHARES`."""
    from benchmarks.corpus import _perturb

    rng = random.Random(seed)
    files = sorted(folder.rglob("*.txt"))
    n = max(3, round(len(files) * share))
    counts = {k: max(1, round(n * v)) for k, v in SHARES.items()}
    picked = rng.sample(files, counts["deleted"] + counts["edited"])
    for path in picked[:counts["deleted"]]:
        path.unlink()
    for path in picked[counts["deleted"]:]:
        topic = path.parent.name
        extra = _perturb(rng.choice(pools[topic]), rng)
        path.write_text(path.read_text(encoding="utf-8").rstrip("\n") + f" {extra}\n",
                        encoding="utf-8")
    for i in range(counts["new"]):
        _write_doc(folder, f"n{i:07d}", pools, rng, _perturb)
    return counts


def workspace(ws: Path, corpus: Path, cache: Path) -> Path:
    """A workspace whose params read `corpus`, with its vector cache at `cache`."""
    from tasks.core.params_file import write_overrides

    ws.mkdir(parents=True)
    (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
    write_overrides(ws / "params.yaml", {
        "ingest.source": str(corpus), "paths.vector_cache": str(cache),
        # the gate judges a corpus's quality; recombined sentences are not meant to pass it
        "evaluate.min_probe_recall_at_10": None, "evaluate.min_dense_probe_recall_at_10": None,
        "evaluate.min_index_recall": None})
    return ws


def _unreported(obj: Any) -> Any:
    from tasks.core.catalog import REPORTED_KEYS

    if isinstance(obj, dict):
        return {k: _unreported(v) for k, v in obj.items() if k not in REPORTED_KEYS}
    if isinstance(obj, list):
        return [_unreported(v) for v in obj]
    return obj


def stage_files(data: Path) -> dict[str, dict[str, Any]]:
    """Stage -> fingerprint and each output file's sha256 (a JSON file: its content less
    the keys that report on one build)."""
    out = {}
    for path in sorted(data.glob("[0-9][0-9]_*/_manifest.json")):
        m = json.loads(path.read_text())
        out[m["stage"]] = {"fingerprint": m["fingerprint"], **{
            f: _unreported(json.loads((path.parent / f).read_text())) if f.endswith(".json")
            else h for f, h in m["files"].items()}}
    return out


def differences(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]
                ) -> dict[str, list[str]]:
    """Stage -> the files (or `fingerprint`) that differ between two builds."""
    out = {}
    for stage in sorted(set(a) | set(b)):
        fa, fb = a.get(stage, {}), b.get(stage, {})
        diff = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
        if diff:
            out[stage] = diff
    return out


def manifest_rows(ws: Path) -> dict[str, Any]:
    """Stage -> the rows (and changes) its manifest records."""
    out = {}
    for path in sorted((ws / "data").glob("[0-9][0-9]_*/_manifest.json")):
        m = json.loads(path.read_text())
        out[m["stage"]] = {"rows": m.get("rows"), "changes": m.get("changes"),
                           "reuse": m.get("reuse")}
    return out


def ivf_update_vs_rebuild(before: Path, after: Path) -> dict[str, Any]:
    """An IVF index (`index.factory: IVF{nlist},Flat`) over the kept vectors of dedup's
    output `before`, then brought to those of `after` in two ways: updated in place as the
    index stage plans it (`plan_update`, `apply_plan`), and built again; seconds of each
    and whether the two indexes are the same bytes (the update keeps the old cells)."""
    import time

    import faiss
    import pyarrow.parquet as pq

    from tasks.core.config import IndexConfig
    from tasks.indexing.updates import apply_plan, index_rows, plan_update

    cfg = IndexConfig(factory="IVF{nlist},Flat", nprobe=8)
    rows0, rows1 = (index_rows(pq.read_table(p / "vectors.parquet")) for p in (before, after))
    first = plan_update(None, {}, rows0[1], rows0[2], "s", cfg)
    built = apply_plan(first, None, None, rows0[0], rows0[1], cfg)
    prev = {"space": "s", "config": cfg.model_dump(mode="json"),
            "card": built.card_facts(first, rows0[0][:8]) | {"factory": built.factory,
                                                              "nlist": built.nlist}}
    started = time.perf_counter()
    plan = plan_update(prev, dict(zip(rows0[1].tolist(), rows0[2], strict=True)), rows1[1],
                       rows1[2], "s", cfg)
    updated = apply_plan(plan, prev, built.index, rows1[0], rows1[1], cfg)
    update_s = time.perf_counter() - started
    started = time.perf_counter()
    rebuilt = apply_plan(plan_update(None, {}, rows1[1], rows1[2], "s", cfg), None, None,
                         rows1[0], rows1[1], cfg)
    rebuild_s = time.perf_counter() - started
    same = bytes(faiss.serialize_index(updated.index)) == bytes(
        faiss.serialize_index(rebuilt.index))
    return {"vectors": len(rows1[0]), "nlist": built.nlist, "plan": plan.reason,
            "update_s": round(update_s, 2), "rebuild_s": round(rebuild_s, 2),
            "identical": same}


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    corpus = tmp / "corpus"
    pools = write_corpus(corpus, args.docs)
    a = workspace(tmp / "a", corpus, tmp / "a-cache")
    full = timed_stages(a, STAGES)
    print(f"full build: {_total(full, 'cpu')} CPU s {full}", flush=True)
    shutil.copytree(tmp / "a-cache", tmp / "b-cache")
    shutil.copytree(a / "data/06_dedup", tmp / "dedup-before")
    changed = churn(corpus, args.churn, pools)
    rerun = timed_stages(a, STAGES)
    print(f"rerun after {changed}: {_total(rerun, 'cpu')} CPU s {rerun}", flush=True)
    b = workspace(tmp / "b", corpus, tmp / "b-cache")
    reference = timed_stages(b, STAGES)
    diff = differences(stage_files(a / "data"), stage_files(b / "data"))
    ivf = ivf_update_vs_rebuild(tmp / "dedup-before", a / "data/06_dedup")
    return {"cpu": cpu_label(), "docs": args.docs, "churn": args.churn, "changed": changed,
            "full": full, "rerun": rerun, "reference": reference,
            "ratio": {k: round(_total(rerun, k) / _total(full, k), 3) for k in ("cpu", "wall")},
            "identical": not diff, "differences": diff, "rerun_rows": manifest_rows(a),
            "ivf": ivf}


def markdown(r: dict[str, Any]) -> str:
    lines = [f"Nightly rerun: {r['docs']} plain-text documents, {r['churn']:.1%} churn "
             f"({r['changed']}); {r['cpu']}. CPU seconds of the process (wall seconds in "
             "brackets: the machine is shared).", "",
             "| stage | full build | rerun | rerun / full (CPU) | full build of the churned "
             "corpus (vector cache warm) |", "|---|---|---|---|---|"]
    for s in STAGES:
        f, re_, ref = r["full"][s], r["rerun"][s], r["reference"][s]
        lines.append(f"| {s} | {f['cpu']} ({f['wall']}) | {re_['cpu']} ({re_['wall']}) | "
                     f"{re_['cpu'] / max(f['cpu'], 1e-3):.2f} | {ref['cpu']} ({ref['wall']}) |")
    t = {k: (_total(r[k], "cpu"), _total(r[k], "wall")) for k in ("full", "rerun", "reference")}
    lines += [f"| **all** | {t['full'][0]} ({t['full'][1]}) | {t['rerun'][0]} "
              f"({t['rerun'][1]}) | **{r['ratio']['cpu']:.3f}** (wall {r['ratio']['wall']:.3f})"
              f" | {t['reference'][0]} ({t['reference'][1]}) |", "",
              "Rerun outputs byte-identical to a full build of the churned corpus: "
              + ("**yes**, every stage file." if r["identical"] else
                 f"**no**: {r['differences']}"), "",
              "IVF index over the rerun's kept vectors ({vectors}, nlist {nlist}): updated in "
              "place {update_s} s ({plan}), built again {rebuild_s} s; the same bytes: "
              "{identical}.".format(**r["ivf"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--churn", type=float, default=0.01, help="share of documents changed")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
        report = run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="embedpipe-nightly-") as tmp:
            report = run(args, Path(tmp))
    save(args.out, f"nightly-{args.docs}", report, markdown(report))


if __name__ == "__main__":
    main()
