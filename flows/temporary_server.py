"""Prefect's temporary API server, started before anything else of a run.

With no Prefect API configured, Prefect starts a temporary server when the flow begins: after
this process has imported the pipeline, and after importing Prefect's server code here too
(about 3 s) only to launch it in a subprocess. `embedpipe run` launches that server first,
with the command Prefect itself uses, so its start-up and this process's imports overlap on
two cores, and points Prefect at it through PREFECT_API_URL.

With `run.server_idle_s` above 0 (the default) the server outlives the run and the next run
uses it (flows/kept_server.py); at 0 it stops with its run.

A configured API (the environment, a Prefect profile, `prefect.toml`, `[tool.prefect]` in
`pyproject.toml`, `.env`) is left to Prefect, as is any setting this module does not read.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from importlib.util import find_spec
from pathlib import Path

from flows.kept_server import Lease, attach

# A first start creates Prefect's database (~20 s on 2 quiet cores, minutes beside other
# work); the wait ends early when the server's process exits.
START_TIMEOUT_S = 300.0
SLOW_START_S = 10.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _api_configured(cwd: Path) -> bool:
    """Whether Prefect has an API, or a setting about one, that this module leaves to it."""
    if os.environ.get("PREFECT_SERVER_EPHEMERAL_ENABLED", "").lower() in ("0", "false"):
        return True
    if os.environ.get("PREFECT_API_URL") or any(
            (cwd / name).is_file() for name in ("prefect.toml", ".env")):
        return True
    if (cwd / "pyproject.toml").is_file() and "[tool.prefect" in (
            cwd / "pyproject.toml").read_text(errors="replace"):
        return True
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml"))
    if not profiles.is_file():
        return False
    data = tomllib.loads(profiles.read_text())
    active = os.environ.get("PREFECT_PROFILE") or data.get("active", "ephemeral")
    return bool(data.get("profiles", {}).get(active, {}).get("PREFECT_API_URL"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_env() -> dict[str, str]:
    return {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1"}


def _launch(port: int) -> subprocess.Popen:
    app_dir = Path(find_spec("prefect").origin).parents[1]
    # Its own session: Ctrl-C, or a SIGTERM to the run's process group (docker, systemd,
    # Kubernetes), must leave it up until the run has recorded how it ended.
    server = ["-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
              "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port",
              str(port), "--log-level", "error", "--lifespan", "on"]
    return subprocess.Popen([sys.executable, *_die_with_parent(os.getpid()), *server],
                            env=_server_env(), stdin=subprocess.DEVNULL, start_new_session=True)


def _launch_kept(port: int, serve: list[str]) -> subprocess.Popen:
    """The kept server: its own session, no tie to the run, its output in its log."""
    with open(Path(serve[-1]) / "server.log", "ab") as log:
        return subprocess.Popen([sys.executable, *serve], env=_server_env(),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


# Run first in the server's process, then replaced by the server itself (same pid): the
# kernel sends it SIGTERM when the run's process dies however it dies (SIGKILL included),
# since its own session no longer shares the run's signals.
_ARM_PARENT_DEATH = (
    "import ctypes, os, signal, sys\n"
    f"ctypes.CDLL(None).prctl({PR_SET_PDEATHSIG}, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]): os._exit(1)  # the run died before the line above\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


def _die_with_parent(parent: int) -> list[str]:
    """Interpreter arguments that arm the parent-death signal before the server starts;
    none off Linux (no prctl), where the run's exit handler alone stops the server."""
    return ["-c", _ARM_PARENT_DEATH, str(parent)] if sys.platform.startswith("linux") else []


def _running(lease: Lease) -> int | None:
    """None while the server's process runs, else its exit code (-1: not this run's child)."""
    if lease.process is not None:
        return lease.process.poll()
    try:
        os.kill(lease.pid, 0)
    except ProcessLookupError:
        return -1
    return None


def wait_until_healthy(lease: Lease, idle_s: float) -> None:
    """Block until the server answers /health (it started while the caller imported), then
    say where it is."""
    url = lease.url
    began = time.monotonic()
    said = False
    while time.monotonic() < began + START_TIMEOUT_S:
        if not said and time.monotonic() > began + SLOW_START_S:
            said = True
            print(f"embedpipe: waiting for Prefect's temporary server at "  # noqa: T201
                  f"{url.removesuffix('/api')} (a first start creates its database)",
                  file=sys.stderr)
        if (code := _running(lease)) is not None:
            raise RuntimeError(f"Prefect's temporary server exited with code {code}"
                               " before it answered; set PREFECT_API_URL to a running server")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    print(f"embedpipe: Prefect's temporary server at "  # noqa: T201
                          f"{url.removesuffix('/api')}{_lasting(lease, idle_s)}; "
                          "PREFECT_API_URL names a lasting one", file=sys.stderr)
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"Prefect's temporary server did not answer {url}/health within "
                       f"{START_TIMEOUT_S:.0f} s; set PREFECT_API_URL to a running server")


def _lasting(lease: Lease, idle_s: float) -> str:
    if not idle_s:
        return " for this run"
    since = "started by an earlier run" if lease.process is None else "started now"
    return (f", {since}; it stops after {idle_s:g} s without a run (run.server_idle_s; "
            "`embedpipe server stop` stops it now)")


def start_temporary_api(cwd: Path, idle_s: float = 0) -> Lease | None:
    """Start the temporary server now when no API is configured (else None), or with
    `idle_s` > 0 use the one an earlier run kept (`kept_server.attach`).

    A server of this run stops when this interpreter exits, after Prefect's own exit
    handlers (registered later, so run earlier) have sent the run's last logs and events to
    it. Call `wait_until_healthy` before the flow begins.
    """
    if _api_configured(cwd):
        return None
    if idle_s > 0:
        lease = attach(idle_s, _launch_kept, _free_port())
    else:
        port = _free_port()
        process = _launch(port)
        atexit.register(_stop, process)
        lease = Lease(f"http://127.0.0.1:{port}/api", process, process.pid)
    os.environ["PREFECT_API_URL"] = lease.url
    return lease


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
