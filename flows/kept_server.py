"""Prefect's temporary server kept up between runs, so that only a session's first run waits
for it (`run.server_idle_s`; 0: each run starts and stops its own, flows/temporary_server.py).

The server is Prefect's own (`prefect.server.api.server:create_app` under uvicorn, ephemeral
as Prefect starts it for a flow), in a process of its own session. Its state lives in
`PREFECT_HOME/embedpipe-server/`: `server.json` (pid, URL, the Python and Prefect it runs on),
`server.log`, `start.lock` (one run at a time finds or starts it) and `users.lock`, which
every run using the server holds shared for its whole life (the kernel lets go when the run
ends, however it ends). The server stops itself once it has had no user for `idle_s` seconds:
it takes `users.lock` exclusively (no run holds it, none can take it while it stops), removes
`server.json` and exits. A run that finds no answering server of its own Python and Prefect
starts one; `embedpipe server stop` stops it now.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

FOLDER = "embedpipe-server"
_HELD: list[int] = []  # this process's shared hold on users.lock, kept until it exits


@dataclass(frozen=True)
class Lease:
    """The kept server this run uses: its API URL, its process when this run started it
    (else None: an earlier run's), its pid."""

    url: str
    process: subprocess.Popen | None
    pid: int


def state_dir() -> Path:
    """Where the kept server of this PREFECT_HOME keeps its record, log and locks."""
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    return home / FOLDER


def _runtime() -> dict[str, str]:
    return {"python": sys.executable, "prefect": version("prefect")}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_record(folder: Path) -> dict[str, Any] | None:
    """The kept server's record when its process is still alive, else None."""
    try:
        record = json.loads((folder / "server.json").read_text())
        os.kill(int(record["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def attach(idle_s: float, launch: Any, port: int) -> Lease:
    """The kept server for this run: the running one of this Python and Prefect, else one
    started now by `launch(port, serve_args)` (a Popen). This process holds `users.lock`
    shared from now until it exits, so the server outlives the run by `idle_s` at least."""
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    users = os.open(folder / "users.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(users, fcntl.LOCK_SH)  # waits while a server stops itself
    _HELD.append(users)
    with _locked(folder / "start.lock"):
        record = read_record(folder)
        if record is not None and record.get("runtime") == _runtime():
            return Lease(record["url"], None, int(record["pid"]))
        url = f"http://127.0.0.1:{port}/api"
        process = launch(port, ["-m", "flows.kept_server", str(port), str(idle_s),
                                str(folder)])
        (folder / "server.json").write_text(json.dumps(
            {"pid": process.pid, "url": url, "idle_s": idle_s, "runtime": _runtime(),
             "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        return Lease(url, process, process.pid)


def stop(folder: Path, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """Stop the kept server of `folder` now (SIGTERM, then wait for it): its record, or None
    when none runs."""
    record = read_record(folder)
    if record is None:
        return None
    pid = int(record["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    with _locked(folder / "start.lock"):
        if read_record(folder) is None:
            (folder / "server.json").unlink(missing_ok=True)
    return record


def _watch(server: Any, idle_s: float, folder: Path) -> None:
    """Stop `server` once no run has held `users.lock` for `idle_s` seconds."""
    users = os.open(folder / "users.lock", os.O_RDWR | os.O_CREAT, 0o600)
    busy = time.monotonic()
    while True:
        time.sleep(min(5.0, max(idle_s / 4, 0.1)))
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = time.monotonic()
            continue
        if time.monotonic() - busy >= idle_s:
            break  # keeps the lock: no run attaches while it stops
        fcntl.flock(users, fcntl.LOCK_UN)
    with _locked(folder / "start.lock"):
        record = read_record(folder)
        if record is not None and int(record["pid"]) == os.getpid():
            (folder / "server.json").unlink(missing_ok=True)
    server.should_exit = True


def serve(port: int, idle_s: float, folder: Path) -> None:
    """Prefect's server on 127.0.0.1:`port` until idle for `idle_s` seconds or SIGTERM."""
    import uvicorn  # noqa: PLC0415

    server = uvicorn.Server(uvicorn.Config(
        "prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port,
        log_level="error", lifespan="on"))
    threading.Thread(target=_watch, args=(server, idle_s, folder), daemon=True).start()
    server.run()


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]))
