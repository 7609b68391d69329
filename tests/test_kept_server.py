"""The temporary Prefect server `embedpipe run` keeps between runs (`run.server_idle_s`): the
next run uses it, it stays while a run holds it, and stops itself once idle or on
`embedpipe server stop`. Real Prefect servers, started by real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.overheads import healthy
from tests.workspace import env_with_venv

BIN = Path(sys.executable).parent
# What `embedpipe run` does before its flow begins: the server, then wait until it answers.
ATTACH = """
import sys, time
from pathlib import Path
from flows.temporary_server import start_temporary_api, wait_until_healthy
lease = start_temporary_api(Path.cwd(), float(sys.argv[1]))
wait_until_healthy(lease, float(sys.argv[1]))
print(lease.url, lease.pid, flush=True)
time.sleep(float(sys.argv[2]))
"""


def _env(home: Path) -> dict[str, str]:
    env = env_with_venv() | {"PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    return env


def _run(tmp_path: Path, idle: float, hold: float = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", ATTACH, str(idle), str(hold)],
                            cwd=tmp_path, env=_env(tmp_path / "home"), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _server(tmp_path: Path, action: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "embedpipe"), "server", action], cwd=tmp_path,
                          env=_env(tmp_path / "home"), text=True, capture_output=True,
                          check=True)


def _gone(url: str, record: Path, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not healthy(url) and not record.exists():
            return True
        time.sleep(0.2)
    return False


def test_the_next_run_uses_the_kept_server_which_stops_once_idle(tmp_path):
    record = tmp_path / "home/embedpipe-server/server.json"
    first = _run(tmp_path, idle=2)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-3000:]
    url, pid = out.split()
    assert "started now; it stops after 2 s without a run" in err
    assert healthy(url)  # the run ended; its server did not
    assert json.loads(record.read_text())["pid"] == int(pid)

    second = _run(tmp_path, idle=2, hold=5)  # holds it past the idle time
    assert second.stdout.readline().split() == [url, pid]
    time.sleep(4)
    assert healthy(url)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0 and "started by an earlier run" in err, err[-3000:]
    assert _gone(url, record, within_s=15), "the kept server outlived its idle time"

    third = _run(tmp_path, idle=600)  # none left: a new one, stopped on demand
    out, _ = third.communicate(timeout=120)
    new_url, new_pid = out.split()
    assert new_pid != pid and healthy(new_url)
    status = _server(tmp_path, "status")
    assert f"running: Prefect's temporary server at {new_url.removesuffix('/api')} (pid " \
        f"{new_pid}" in status.stdout, status.stdout + status.stderr
    stop = _server(tmp_path, "stop")
    assert stop.stdout.startswith("stopped: "), stop.stdout + stop.stderr
    assert _gone(new_url, record, within_s=5)


def test_at_idle_zero_each_run_stops_its_own_server(tmp_path):
    run = _run(tmp_path, idle=0)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-3000:]
    url, _ = out.split()
    assert "for this run" in err
    assert _gone(url, tmp_path / "home/embedpipe-server/server.json", within_s=10)
