"""A real PostgreSQL with pgvector on a free loopback port, for the export tests.

The binaries come from the PyPI package `pgserver` (PostgreSQL 16 with pgvector built in;
Debian 12 packages no pgvector). PostgreSQL refuses to run as root, so under root the data
folder belongs to `nobody` and the server runs as that user (`runuser`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.workspace import free_port


def _bin(name: str) -> str:
    import pgserver

    return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / name)


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "nobody", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start PostgreSQL in a new folder under the system's temp folder (the server's user must
    reach it: pytest's own temp folders are private to root) on 127.0.0.1; yields its DSN;
    stops it and removes the folder on exit."""
    folder = Path(tempfile.mkdtemp(prefix="embedpipe-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody", "nogroup")
    data, port = folder / "data", free_port()
    subprocess.run(_as_server_user([_bin("initdb"), "-D", str(data), "--auth=trust", "-U",
                                    "postgres", "-E", "utf8"]),
                   check=True, capture_output=True, cwd=folder)
    subprocess.run(_as_server_user([_bin("pg_ctl"), "-D", str(data), "-w", "-l",
                                    str(folder / "log"), "-o",
                                    f"-h 127.0.0.1 -p {port} -k {folder}", "start"]),
                   check=True, capture_output=True, cwd=folder)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_server_user([_bin("pg_ctl"), "-D", str(data), "-w", "-m", "fast",
                                        "stop"]), check=False, capture_output=True, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)
