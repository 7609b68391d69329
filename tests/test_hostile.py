"""Hostile folders: bad inputs among good files. The run finishes, every input file is in the
documents or the rejects with a reason naming it, nothing outside the folder is opened, and
a 200 MB single-line file costs hundreds of megabytes, not gigabytes."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.workspace import env_with_venv, make_workspace

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
MB = 1_000_000
WORDS = ("the star mass collapse neutron pressure core gravity light orbit planet dust cloud "
         "spin field wave heat").split()


def words(n_chars: int, seed: int, sep: str = " ") -> str:
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + len(sep)
    return sep.join(out)


def plant_hostile(folder: Path, outside: Path) -> None:
    """One of each bad input the README's fault table names, at sizes a test can encode."""
    folder.mkdir(parents=True)
    raw = {
        "invalid-utf8.txt": b"starts well \xff\xfe then is not UTF-8",
        "nul-bytes.txt": b"text\x00with\x00NULs",
        "binary-renamed.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        "empty.txt": b"",
        "whitespace-only.md": b" \n\t\n   \n",
        "truncated.parquet": b"PAR1\x15\x04\x15",
        "malformed.jsonl": b'{"id": "a", "text": "a good record about stars"}\n{"id": "b", '
                           b'"text": \n[1, 2]\n{"id": "c", "text": "another good record"}\n'
                           b'{"id": "d", "text": "a byte that is not UTF-8: \xff"}\n',
        "malformed.csv": b'id,text\n1,"a good row about orbits"\n2,"extra","fields"\n'
                         b'3,"another good row"\n',
    }
    for name, data in raw.items():
        (folder / name).write_bytes(data)
    pq.write_table(__import__("pyarrow").table({"id": ["x"], "body_text": ["no text column"]}),
                   folder / "no-text-column.parquet")
    (folder / "big-field.csv").write_text(f"id,text\n1,{words(10 * MB, 1)}\n2,short row\n")
    (folder / "long-line.txt").write_text(words(int(1.2 * MB), 2))
    (folder / "no-punctuation.txt").write_text(words(300_000, 3))
    (folder / "tiny-sentences.txt").write_text(". ".join(["Go"] * 20_000) + ".")
    (folder / "nested.html").write_text("<div>" * 50_000 + "deep words" + "</div>" * 50_000)
    (folder / "self-loop").symlink_to("self-loop")
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to("..")
    (folder / "out-file.txt").symlink_to(outside / "secret.txt")
    (folder / "out-dir").symlink_to(outside)
    (folder / "out-fifo.txt").symlink_to(outside / "fifo")  # opening it would block
    os.mkfifo(folder / "fifo.txt")
    (folder / "line\nbreak.txt").write_text("a file whose name holds a newline")
    with open(os.fsencode(folder) + b"/latin1-\xe9.txt", "w") as f:
        f.write("a file whose name is not UTF-8")


# its runs' own timeouts (1800 s, then 1200 s) are the guards: the 10k tiny chunks' int8
# encode passed 900 s in the slow lane on a CPU without VNNI (AVX2 only)
@pytest.mark.timeout(3000)
def test_hostile_folder_runs_through_and_accounts_for_every_file(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("zebracorn outside words")
    os.mkfifo(outside / "fifo")
    plant_hostile(ws / "data/sample/hostile", outside)
    params = ws / "params.yaml"
    params.write_text(re.sub(r"(?m)^  max_doc_mb: .*$", "  max_doc_mb: 0.5",
                             params.read_text()))
    assert "max_doc_mb: 0.5" in params.read_text()
    env = env_with_venv()
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([str(BIN / "embedpipe"), "run"], cwd=ws, env=env, text=True,
                          capture_output=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=ws, env=env, text=True,
                            capture_output=True, check=False)
    assert "up to date" in status.stdout, status.stdout + status.stderr

    docs = pq.read_table(ws / "data/01_ingest/docs.parquet").to_pylist()
    rejects = pq.read_table(ws / "data/01_ingest/rejects.parquet").to_pylist()
    listed = {os.fsencode(p.relative_to(ws / "data/sample")).decode("utf-8", "backslashreplace")
              for p in (ws / "data/sample").rglob("*") if p.is_file() or p.is_symlink()
              or p.is_fifo()}
    listed -= {p for p in listed if p.endswith("queries.jsonl") or "/qrels/" in p}
    seen = {d["source"] for d in docs} | {r["source"] for r in rejects}
    assert listed <= seen, listed - seen
    why = {(r["source"], r["record_key"]): r["reason"] for r in rejects}
    for name, words_in_reason in {
        "invalid-utf8.txt": "not UTF-8", "nul-bytes.txt": "NUL", "binary-renamed.txt": "NUL",
        "empty.txt": "empty", "whitespace-only.md": "empty", "truncated.parquet": "Parquet",
        "no-text-column.parquet": "no text column", "self-loop": "loops",
        "sub/up": "folder", "out-file.txt": "outside", "out-dir": "outside",
        "out-fifo.txt": "outside", "fifo.txt": "not a regular file",
        "latin1-\\xe9.txt": "not valid UTF-8",
    }.items():
        reason = next(v for (s, _), v in why.items() if s == f"hostile/{name}")
        assert words_in_reason in reason, (name, reason)
    by_source: dict[str, list[dict]] = {}
    for d in docs:
        by_source.setdefault(d["source"].removeprefix("hostile/"), []).append(d)
    assert {d["record_key"] for d in by_source["malformed.jsonl"]} == {"a", "c"}
    assert {d["record_key"] for d in by_source["malformed.csv"]} == {"1", "3"}
    assert {d["record_key"] for d in by_source["big-field.csv"]} == {"1", "2"}
    parts = by_source["long-line.txt"]
    assert len(parts) == 3 and all(len(d["text"]) <= 500_000 for d in parts)
    original = (ws / "data/sample/hostile/long-line.txt").read_text()
    assert "".join(d["text"] for d in sorted(parts, key=lambda d: d["record_key"])) == original
    assert "line\nbreak.txt" in by_source and "nested.html" in by_source
    chunks = pq.read_table(ws / "data/03_chunk/chunks.parquet", columns=["text"])
    assert not any("zebracorn" in t for t in chunks.column("text").to_pylist())


def stage_peak_mb(ws: Path, stage: str) -> float:
    """Run one stage as `dvc repro` does (`python -m tasks.<stage>`) and return its peak RSS
    in MB."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (pytest)
    code = ("import runpy, sys; sys.argv = ['x']\n"
            f"try: runpy.run_module('tasks.{stage}', run_name='__main__')\n"
            "finally: print('PEAK', [line.split()[1] for line in open('/proc/self/status')\n"
            "                        if line.startswith('VmHWM:')][0])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ws, env=env_with_venv(),
                          text=True, capture_output=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return int(done.stdout.split("PEAK")[-1]) / 1024


@pytest.mark.timeout(3000)  # 900 s passed once in the slow lane beside the default lane
def test_a_200_mb_single_line_file_needs_no_gigabytes(tmp_path):
    """The 200 MB line (and a 5 MB sentence, 200,000 tiny sentences) through the stages that
    hold a document: ingest cuts it into `max_doc_mb` parts, clean and chunk stream them.
    Encoding its 40M tokens would take the better part of an hour on 2 cores: not here."""
    ws = make_workspace(tmp_path / "ws")
    big = ws / "data/sample/hostile"
    big.mkdir()
    with open(big / "200mb-line.txt", "w") as f:
        for seed in range(199):
            f.write(words(MB, seed) + " ")
    (big / "5mb-sentence.txt").write_text(words(5 * MB, 500))
    (big / "tiny-sentences.txt").write_text(". ".join(["Go"] * 200_000) + ".")
    peaks = {stage: stage_peak_mb(ws, stage) for stage in ("ingest", "clean", "chunk")}
    assert all(mb < 1024 for mb in peaks.values()), peaks
    manifest = json.loads((ws / "data/03_chunk/_manifest.json").read_text())
    assert manifest["rows"]["chunks"] > 150_000, manifest["rows"]
