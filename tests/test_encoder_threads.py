"""Loading the encoder from several threads of a fresh process at once (a Dask worker with
`run.dask.threads_per_worker` > 1): transformers' lazy module once failed there with
"cannot import name 'AutoTokenizer'"; loads now take turns (`LOAD_LOCK`)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.workspace import REPO

RACE = """
import json, threading
from tasks.core.config import EncodeConfig
from tasks.encoders.loading import encoder_for
from tasks.encoders.model import load_tokenizer

cfg, errors, loaded = EncodeConfig(device="cpu"), [], []
barrier = threading.Barrier(4)

def load(i):
    barrier.wait()  # all four start importing at once, in a process that has not yet
    try:
        loaded.append(id(encoder_for(cfg)) if i % 2 else id(load_tokenizer(cfg.model)))
    except Exception as err:
        errors.append(f"{type(err).__name__}: {err}")

threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps({"errors": errors, "distinct": len(set(loaded))}))
"""


def test_four_threads_load_the_encoder_and_tokenizer_at_once_in_a_fresh_process():
    proc = subprocess.run(
        [sys.executable, "-c", RACE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == []
    assert result["distinct"] == 2  # one encoder and one tokenizer, shared by the threads
