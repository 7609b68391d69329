"""Faults an operator meets: a full disk during encode, a DVC lock file cut short, Ctrl-C or
SIGTERM to the run's process group. The run says what happened, leaves no temporary folder
and no broken lock, keeps the previous outputs, and the rerun resumes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.workspace import (
    REPO,
    copy_workspace,
    env_with_venv,
    make_workspace,
    stop_kept_servers,
)

BIN = Path(sys.executable).parent
HOOKS = Path(__file__).parent / "crash_points"
STOP_WITHIN_S = 10.0


# The run as a terminal starts it: SIGINT and SIGQUIT at their defaults. A test process
# started in the background by a non-interactive shell (`make test-slow &`) has them ignored,
# and an ignored signal stays ignored across exec: such a run never saw the test's SIGINT
# (the "lost" SIGINTs of earlier slow lanes: SigIgn 0x1001007, nohup's SIGHUP too).
_AS_FROM_A_TERMINAL = ("import os, signal, sys\n"
                       "for s in (signal.SIGINT, signal.SIGQUIT):\n"
                       "    signal.signal(s, signal.SIG_DFL)\n"
                       "os.execv(sys.argv[1], sys.argv[1:])")


def embedpipe(
    ws: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    env = env or env_with_venv()
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, "-c", _AS_FROM_A_TERMINAL, str(BIN / "embedpipe"), *args],
        cwd=ws,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
        start_new_session=True,
    )


def folder_sums(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def leftovers(ws: Path) -> list[str]:
    return [str(p.relative_to(ws)) for p in (ws / "data").rglob(".*") if ".tmp-" in p.name]


def lock_parses(ws: Path) -> bool:
    path = ws / ".dvc/tmp/rwlock"
    if not path.exists():
        return True
    try:
        json.loads(path.read_text())
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("live", [False, True])
def test_a_dvc_lock_file_cut_short_is_repaired_or_named(tmp_path, live):
    """On main every `embedpipe status` and `run` failed on it ("JSON structure is
    corrupted") until it was deleted by hand."""
    ws = make_workspace(tmp_path / "ws")
    (ws / ".dvc/tmp").mkdir(parents=True, exist_ok=True)
    pid = os.getpid() if live else 2**22 + 17  # this test's (alive), or none
    (ws / ".dvc/tmp/rwlock").write_text(f'{{"write": {{"data/04_encode": {{"pid": {pid}, "cm')
    done = embedpipe(ws, "status")
    if live:
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"live processes [{pid}]" in done.stderr and ".dvc/tmp/rwlock" in done.stderr
        assert (ws / ".dvc/tmp/rwlock").exists()
    else:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ingest    stale" in done.stdout and lock_parses(ws)  # DVC wrote it afresh
        assert "rwlock was corrupted" in done.stderr


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )


@pytest.mark.slow
def test_disk_full_during_encode_says_so_and_leaves_nothing_broken(tmp_path, sample_flow_run):
    """The whole workspace on a 64 MB tmpfs; after one full run (the session's, copied there)
    the filesystem is filled to its last 64 KB and encode must write again (its vector cache
    is gone). On main: "Operation on closed file", a temporary folder left."""
    fs = tmp_path / "fs"
    if not _mount_tmpfs(fs, "64m"):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN): a full disk is not faked")
    try:
        ws = copy_workspace(sample_flow_run[0], fs / "ws")
        kept = folder_sums(ws / "data/04_encode")
        shutil.rmtree(ws / "data/cache/vectors")  # the result caches stay: encode is stale
        room = os.statvfs(fs)
        with open(fs / "ballast", "wb") as f:
            os.posix_fallocate(f.fileno(), 0, room.f_bavail * room.f_frsize - 64 * 1024)
        full = embedpipe(ws, "run")
        assert full.returncode != 0, full.stdout[-3000:]
        error = full.stderr.strip().splitlines()[-1]
        assert error.startswith("embedpipe: error: disk full (ENOSPC)"), full.stderr[-3000:]
        assert str(ws / "data") in error, error
        assert "Operation on closed file" not in full.stderr
        assert leftovers(ws) == [] and folder_sums(ws / "data/04_encode") == kept
        embedpipe(ws, "status")  # still full: DVC may cut its lock file short here
        (fs / "ballast").unlink()
        status = embedpipe(ws, "status")
        assert status.returncode == 0 and "encode    stale" in status.stdout, status.stderr
        again = embedpipe(ws, "run")
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert re.search(r"^encode +ran ", again.stdout, re.M) and lock_parses(ws)
        assert leftovers(ws) == []
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


def flow_states(prefect_home: Path) -> list[str]:
    """The state of every flow run the temporary server recorded (its SQLite database)."""
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        return [row[0] for row in db.execute("SELECT state_type FROM flow_run ORDER BY created")]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_sigint_and_sigterm_to_the_process_group_stop_the_run_and_it_resumes(tmp_path,
                                                                            sample_flow_run):
    """Each signal is sent to the whole process group of `embedpipe run` while encode writes
    its first vector-cache shard (tests/crash_points), in a copy of the session's full run.
    On main Prefect's temporary server died with the group and the run hung for minutes."""
    ws = copy_workspace(sample_flow_run[0], tmp_path / "ws")
    home = tmp_path / "prefect_home"
    env = env_with_venv() | {"PREFECT_HOME": str(home)}
    kept = folder_sums(ws / "data/04_encode")
    # SIGINT with a temporary server that stops with its run, SIGTERM with one kept between
    # runs (the default)
    for name, code, idle in (("SIGINT", 130, 0), ("SIGTERM", 143, 600)):
        shutil.rmtree(ws / "data/cache/vectors")  # encode writes its vectors again
        params = (ws / "params.yaml").read_text()
        (ws / "params.yaml").write_text(re.sub(r"server_idle_s: \d+", f"server_idle_s: {idle}",
                                               params))
        log = tmp_path / f"{name}.log"
        hooked = env | {
            "PYTHONPATH": f"{HOOKS}{os.pathsep}{REPO}",
            "EMBEDPIPE_CRASH_LOG": str(log),
            "EMBEDPIPE_CRASH_AT": "encode cache 1",
            "EMBEDPIPE_CRASH_SIGNAL": name,
        }
        done = embedpipe(ws, "run", env=hooked, timeout=300)
        ended = time.time()
        sent = float(
            next(line for line in log.read_text().splitlines() if " sent " in line).split()[-1]
        )
        assert done.returncode == code, (log.read_text()[:1500] + done.stdout[-3000:]
                                         + done.stderr[-3000:])
        assert ended - sent < STOP_WITHIN_S, (name, ended - sent)
        assert f"stopped by {name}" in done.stderr
        port = int(re.search(r"127\.0\.0\.1:(\d+)", done.stderr).group(1))
        assert flow_states(home)[-1] in ("CRASHED", "CANCELLED"), flow_states(home)
        # the kept server is in no run's process group; the run's own stopped with it
        assert port_open(port) == bool(idle)
        stop_kept_servers(home)
        assert leftovers(ws) == [] and folder_sums(ws / "data/04_encode") == kept
    again = embedpipe(ws, "run", env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert re.search(r"^chunk +fresh", again.stdout, re.M)
    assert re.search(r"^encode +ran ", again.stdout, re.M)
    assert "RUNNING" not in flow_states(home)
    stop_kept_servers(home)
