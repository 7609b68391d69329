"""The label-free search choice made again on built workspaces' index folders, checked against
the choice their cards recorded, and its CPU seconds alone (no stage around it).

    python -m benchmarks.choice_again WS [WS ...] [--repeat 3]

Each workspace must have run through the index stage with `search.fusion: auto` and no
labels choosing. The choice reads what the index stage reads: the folder written, dedup's
dropped rows, the probes the encode stage kept and the vectors it embedded ahead (else it
draws and embeds them itself). Exit 1 when a choice differs from its card (timings aside):
a change meant to be a speed-up only must leave it the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any


def choose_again(ws: Path, repeat: int) -> dict[str, Any]:
    """The choice made `repeat` times on `ws`'s index folder: same as the card, CPU seconds."""
    from tasks.core.catalog import DROPPED  # noqa: PLC0415
    from tasks.core.runtime import start_stage  # noqa: PLC0415
    from tasks.evaluation.build_choice import search_chooser  # noqa: PLC0415
    from tasks.query.search import load_index_folder  # noqa: PLC0415

    run = start_stage("index", ws)
    dropped = run.read(DROPPED)
    card = json.loads((ws / "data/07_index/card.json").read_text())["search_choice"]
    seconds, got = [], None
    for _ in range(repeat):
        folder = load_index_folder(ws / "data/07_index")
        started = time.process_time()
        got = search_chooser(run, dropped, None)(folder)
        seconds.append(time.process_time() - started)
    same = {k: v for k, v in got.items() if k != "probe_seconds"} == {
        k: v for k, v in card.items() if k != "probe_seconds"}
    return {"workspace": str(ws), "same_as_card": same, "winner": got["winner"],
            "probes": got["probes"], "cpu_seconds_median": round(statistics.median(seconds), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workspaces", nargs="+", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = [choose_again(ws.resolve(), args.repeat) for ws in args.workspaces]
    for r in results:
        print(json.dumps(r))  # noqa: T201
    raise SystemExit(0 if all(r["same_as_card"] for r in results) else 1)


if __name__ == "__main__":
    main()
