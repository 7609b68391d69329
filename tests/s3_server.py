"""A real S3-speaking server (moto's standalone server) on loopback, for tests that need one
of their own (tests/test_s3.py keeps its module fixture)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.workspace import free_port

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAEMBEDPIPETEST",
    "AWS_SECRET_ACCESS_KEY": "test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
}


@contextmanager
def moto_server(log_dir: Path, enforce_auth: bool = False) -> Iterator[str]:
    """moto_server on 127.0.0.1 for the block; yields its URL. `enforce_auth`: every
    request's credentials are checked (none are known to it, so all are refused: 403)."""
    port = free_port()
    env = dict(os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if enforce_auth else {}))
    with open(log_dir / f"moto-{port}.log", "w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(150):
                try:
                    urllib.request.urlopen(url, timeout=1)
                    break
                except OSError as err:
                    if getattr(err, "code", None):  # an HTTP answer (403 with auth on): up
                        break
                    time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)
