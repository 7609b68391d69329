"""An `ingest.source` outside the workspace: DVC depends on ingest's own listing of it, so a
symlink loop, a FIFO, unreadable entries and names that are not UTF-8 are ingest's rejects
with reasons, never a run killed in DVC's hashing; and DVC still sees the source change."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks.core.config import IngestConfig
from tasks.documents.sources import source_listing
from tests.conftest import REPO, env_with_venv, make_workspace

BIN = Path(sys.executable).parent
# As root, permission bits bind only without these capabilities (setpriv is util-linux's).
AS_A_USER = (
    ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--"]
    if os.geteuid() == 0
    else []
)


def plant_outside(folder: Path) -> None:
    """Good documents beside every entry DVC's hashing cannot take."""
    shutil.copytree(REPO / "data/sample/astronomy", folder / "astronomy")
    shutil.copytree(REPO / "data/sample/baking", folder / "baking")
    (folder / "loop").symlink_to("loop")
    (folder / "astronomy" / "up").symlink_to("..")
    os.mkfifo(folder / "pipe.txt")
    (folder / "locked.txt").write_text("a file nobody may read")
    (folder / "locked.txt").chmod(0)
    (folder / "closed").mkdir()
    (folder / "closed" / "inside.txt").write_text("in a folder nobody may list")
    (folder / "closed").chmod(0)
    with open(os.fsencode(folder) + b"/latin1-\xe9.txt", "w") as f:
        f.write("a file whose name is not UTF-8")


def embedpipe(ws: Path, *args: str) -> subprocess.CompletedProcess:
    env = env_with_venv()
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [*AS_A_USER, str(BIN / "embedpipe"), *args],
        cwd=ws,
        env=env,
        text=True,
        capture_output=True,
        timeout=900,
        check=False,
    )


def test_listing_names_every_entry_and_opens_none(tmp_path):
    plant_outside(tmp_path / "docs")
    try:
        rows = {
            r["path"]: r
            for r in source_listing(IngestConfig(source=str(tmp_path / "docs")), tmp_path)
        }
    finally:
        (tmp_path / "docs/closed").chmod(0o755)
    assert rows["loop"]["kind"] == "link" and rows["loop"]["target"] == "loop"
    assert rows["pipe.txt"]["kind"] == "fifo" and rows["locked.txt"]["kind"] == "file"
    assert "latin1-\\xe9.txt" in rows and "astronomy/up" in rows
    assert all({"size", "mtime_ns"} <= set(r) for p, r in rows.items() if p != "closed")


@pytest.mark.slow
def test_outside_source_with_loops_and_locked_entries_runs_and_dvc_sees_changes(tmp_path):
    """On main the run died in DVC's hashing (`[Errno 40] Too many levels of symbolic
    links`) before any stage."""
    outside = tmp_path / "outside-docs"
    plant_outside(outside)
    ws = make_workspace(tmp_path / "ws")
    try:
        done = embedpipe(ws, "run", "--set", f"ingest.source={outside}")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        status = subprocess.run(
            [str(BIN / "dvc"), "status"],
            cwd=ws,
            env=env_with_venv(),
            text=True,
            capture_output=True,
            check=False,
        )
        assert "up to date" in status.stdout, status.stdout + status.stderr
        rejects = pq.read_table(ws / "data/01_ingest/rejects.parquet").to_pylist()
        why = {r["source"]: r["reason"] for r in rejects}
        for name, words in {
            "loop": "loops",
            "astronomy/up": "folder",
            "pipe.txt": "not a regular file",
            "locked.txt": "cannot be read",
            "closed": "cannot be listed",
            "latin1-\\xe9.txt": "not valid UTF-8",
        }.items():
            assert words in why.get(name, ""), (name, why)

        comets = outside / "astronomy/comets.txt"
        comets.write_text(comets.read_text() + "\nA zebracorn comet was seen in the tail.\n")
        status = embedpipe(ws, "status")
        assert status.returncode == 0, status.stderr
        stale = {line.split()[0] for line in status.stdout.splitlines() if " stale" in line}
        assert {"ingest", "evaluate"} <= stale, status.stdout
        done = embedpipe(ws, "run")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert any(
            line.startswith("ingest") and " ran " in line for line in done.stdout.splitlines()
        ), done.stdout
        texts = pq.read_table(ws / "data/01_ingest/docs.parquet").column("text").to_pylist()
        assert any("zebracorn" in t for t in texts)
    finally:
        (outside / "closed").chmod(0o755)  # so that pytest can remove it
