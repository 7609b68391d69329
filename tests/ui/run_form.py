"""The `manual` deployment's run form in a real browser: a Prefect server, `embedpipe serve`
on a workspace, headless Chromium (Debian's `chromium`) rendering the Custom run page.

`python -m tests.ui.run_form OUT_DIR` writes `run_form.png` (the page as a person sees it)
and `run_form.html` (the rendered DOM) there; `tests/test_run_form.py` reads the DOM.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.workspace import free_port

BIN = Path(sys.executable).parent


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _wait(what: str, probe, seconds: float = 180):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = probe()
            if found:
                return found
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{what} did not come up within {seconds:.0f} s")


@contextmanager
def served(ws: Path, home: Path) -> Iterator[tuple[str, str]]:
    """(UI base URL, manual deployment id) with a server and `embedpipe serve` running."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
           "PREFECT_SERVER_UI_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "HF_HUB_OFFLINE": "1",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db"}
    procs = [subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port), "--no-services"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    try:
        _wait("the Prefect server", lambda: _get(f"{api}/health"))
        procs.append(subprocess.Popen([str(BIN / "embedpipe"), "serve"], cwd=ws, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))

        def manual() -> str | None:
            try:
                return _get(f"{api}/deployments/name/embedpipe/manual")["id"]
            except urllib.error.HTTPError:  # not registered yet
                return None

        yield f"http://127.0.0.1:{port}", _wait("the manual deployment", manual)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)


def chromium(url: str, out: Path, width: int = 1400, height: int = 12000) -> tuple[Path, str]:
    """A screenshot of `url` and its rendered DOM, after 20 s of virtual time."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise RuntimeError("no chromium on PATH (Debian: apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size={width},{height}", "--virtual-time-budget=20000"]
    png = out / "run_form.png"
    subprocess.run([browser, *flags, f"--screenshot={png}", url], check=True,
                   capture_output=True, timeout=180)
    dom = subprocess.run([browser, *flags, "--dump-dom", url], check=True,
                         capture_output=True, text=True, timeout=180).stdout
    (out / "run_form.html").write_text(dom, encoding="utf-8")
    return png, dom


def capture(out: Path) -> str:
    """Serve a fresh sample workspace and capture its run form into `out`; returns the DOM."""
    from tests.workspace import make_workspace

    out.mkdir(parents=True, exist_ok=True)
    scratch = out / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    ws = make_workspace(scratch / "ws")
    (scratch / "home").mkdir()
    with served(ws, scratch / "home") as (base, deployment):
        _, dom = chromium(f"{base}/v2/deployments/deployment/{deployment}/run", out)
    shutil.rmtree(scratch, ignore_errors=True)
    return dom


if __name__ == "__main__":
    capture(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/out/ui"))
