"""Live progress on a terminal: `embedpipe run` under a pseudo-terminal shows a bar with a
rate and an ETA for encode and for every stage that takes more than a few seconds.

The pseudo-terminal is left unsized (0 x 0), as `script -c`, `docker run -t` and CI runners
leave it: tqdm hid every bar there on main. Off a terminal the log lines stay
(tests/test_run_output.py).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tasks.core.progress import terminal_shape
from tests.conftest import env_with_venv, make_workspace

FEW_SECONDS = 5.0  # a stage this long must have shown a moving bar
BAR = re.compile(
    r"(?P<stage>\w+):\s+\d+%\|[^|\n]*\|\s*[\d.,]+/[\d.,]+ "
    r"\[\d+:\d+<(?P<eta>\d+:\d+), +(?P<rate>[\d.]+ ?\w*/s|[\d.]+s/ ?\w+)\]"
)
SUMMARY = re.compile(r"^(?P<stage>\w+) +ran +(?P<seconds>[\d.]+)s ", re.M)


def run_on_pty(argv: list[str], cwd: Path, timeout_s: float) -> tuple[int, str]:
    """Run `argv` with stdin, stdout and stderr on a fresh pseudo-terminal; (exit code,
    everything it wrote)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env_with_venv(), stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    out, deadline = bytearray(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    else:
        proc.kill()
    os.close(master)
    return proc.wait(timeout=60), out.decode("utf-8", "replace")


@pytest.mark.slow
def test_run_on_a_terminal_shows_bars_with_rate_and_eta(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    code, screen = run_on_pty(
        [str(Path(sys.executable).parent / "embedpipe"), "run"], ws, timeout_s=900
    )
    assert code == 0, screen[-3000:]
    lines = screen.replace("\r", "\n").replace("\x1b[A", "")
    moving = {m["stage"] for m in BAR.finditer(lines)}  # a bar with a known rate and ETA
    took = {m["stage"]: float(m["seconds"]) for m in SUMMARY.finditer(lines)}
    assert "encode" in moving, lines[-3000:]
    slow = {stage for stage, seconds in took.items() if seconds >= FEW_SECONDS}
    assert slow <= moving, (slow - moving, took)
    assert "embedpipe: error" not in lines and "Traceback" not in lines


def test_unsized_terminal_gets_a_fixed_size_and_a_sized_one_is_followed(monkeypatch):
    master, slave = pty.openpty()
    try:
        with os.fdopen(os.dup(slave), "w") as tty:
            monkeypatch.setattr(sys, "stderr", tty)
            monkeypatch.delenv("COLUMNS", raising=False)
            monkeypatch.delenv("LINES", raising=False)
            assert terminal_shape() == {"ncols": 80, "nrows": 24}
            monkeypatch.setenv("COLUMNS", "132")
            assert terminal_shape()["ncols"] == 132
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            assert terminal_shape() == {"dynamic_ncols": True}
    finally:
        os.close(master)
        os.close(slave)
