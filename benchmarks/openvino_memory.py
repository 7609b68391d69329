"""What the OpenVINO encoder's inference requests hold: RSS growth and CPU seconds of encoding
the same chunks with and without the per-request token budget.

    python -m benchmarks.openvino_memory --chunks 2048

Each variant runs in a fresh process: the cached int8 export is loaded, then the chunks of a
generated corpus (`benchmarks.corpus`, default chunking) are encoded twice; reported are the
RSS growth over the loaded encoder, the CPU seconds of the second pass, and whether the
vectors equal the budgeted variant's bit for bit. `off` lifts the budget
(`openvino.TOKENS_PER_REQUEST`), so batches are `encode.batch_size` rows at any width.
Writes benchmarks/out/openvino_memory.json and .md.
"""

from __future__ import annotations

import argparse
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
VARIANTS = {"budget 2,048 tokens (default)": None, "off (32 rows at any width)": 1 << 30}


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmRSS:"))) / 1024


def child(chunks: Path, budget: int | None, out: Path) -> None:
    """Encode the texts in `chunks` twice in this process and write what it measured."""
    import numpy as np

    from tasks.core.config import EncodeConfig
    from tasks.encoders import openvino
    from tasks.encoders.loading import encoder_for

    if budget is not None:
        openvino.TOKENS_PER_REQUEST = budget
    texts = json.loads(chunks.read_text())
    model = encoder_for(EncodeConfig(device="cpu", backend="openvino", precision="int8"))
    loaded = _rss_mb()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
    cpu = time.process_time()
    x = model.encode(texts, batch_size=32, normalize_embeddings=True)
    np.save(out.with_suffix(".npy"), x)
    out.write_text(json.dumps({"loaded_rss_mb": round(loaded), "growth_mb": round(_rss_mb()
                               - loaded), "cpu_s": round(time.process_time() - cpu, 2)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        budget = None if args.child[1] == "default" else int(args.child[1])
        child(Path(args.child[0]), budget, Path(args.child[2]))
        return
    import numpy as np
    import pyarrow as pa

    from benchmarks.corpus import generate
    from tasks.chunk import chunk_documents
    from tasks.core.config import ChunkConfig, EncodeConfig
    from tasks.encoders.model import load_tokenizer

    with tempfile.TemporaryDirectory(prefix="embedpipe-ov-memory-") as tmp:
        generate(Path(tmp), args.chunks, REPO / "data" / "sample")
        rows = [json.loads(line) for line in (Path(tmp) / "corpus.jsonl").open()]
        docs = pa.table({"doc_id": [r["_id"] for r in rows], "source": ["s"] * len(rows),
                         "format": ["text"] * len(rows), "title": [r["title"] for r in rows],
                         "text": [r["text"] for r in rows]})
        texts = chunk_documents(docs, ChunkConfig(), 200, load_tokenizer(EncodeConfig().model)
                                ).column("text").to_pylist()[:args.chunks]
        (Path(tmp) / "chunks.json").write_text(json.dumps(texts))
        measured: dict[str, Any] = {}
        for i, (name, budget) in enumerate(VARIANTS.items()):
            out = Path(tmp) / f"v{i}.json"
            subprocess.run([sys.executable, "-m", "benchmarks.openvino_memory", "--child",
                            str(Path(tmp) / "chunks.json"), str(budget or "default"), str(out)],
                           cwd=REPO, check=True)
            measured[name] = json.loads(out.read_text())
        same = np.array_equal(np.load(Path(tmp) / "v0.npy"), np.load(Path(tmp) / "v1.npy"))
    report = {"cpu": cpu_label(), "load_average": os.getloadavg(), "chunks": len(texts),
              "measured": measured, "vectors_identical": bool(same)}
    lines = [f"OpenVINO int8 encoder, {len(texts)} generated chunks encoded twice in a fresh "
             f"process per variant; {report['cpu']}:", "",
             "| request size | RSS growth over the loaded encoder MB | CPU s (second pass) |",
             "|---|---|---|"]
    lines += [f"| {name} | {m['growth_mb']} | {m['cpu_s']} |" for name, m in measured.items()]
    lines.append(f"\nvectors identical bit for bit: {'yes' if same else 'no'}")
    save(args.out, "openvino_memory", report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
