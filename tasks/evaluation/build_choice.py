"""The search an index is built to answer with, chosen at its build: labels outrank probes.

Where enough BEIR labels lie beside a local corpus (and `search.labels_choose`), they pick
the fusion (`retrieval.labeled_search_choice`); else label-free probes drawn from the chunk
table do (`query.fusion_choice.choose_search`). Their digest is part of the index's
fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from tasks.core.catalog import CHUNKS
from tasks.core.config import Params
from tasks.core.runtime import StageRun
from tasks.evaluation.beir import labels_digest
from tasks.evaluation.retrieval import choosing_labels, labeled_search_choice
from tasks.query.fusion_choice import choose_search
from tasks.query.probe_drawing import DRAWN
from tasks.query.probe_store import probes_for_choice, probes_key
from tasks.query.search import IndexFolder
from tasks.storage.s3 import is_s3


def search_chooser(run: StageRun, dropped: pa.Table, labels: Path | None
                   ) -> Callable[[IndexFolder], dict[str, Any] | None]:
    """What picks the search on the folder being written: labels outrank probes, so the
    search the BEIR labels under `labels` pick, else the probes' (drawn from the chunk
    table, seeded by `index.seed`, with dedup's dropped rows; those encode drew and kept
    first, `probe_store`); the texts they embed read from the encode stage's vector cache
    first."""
    def choose(folder: IndexFolder) -> dict[str, Any] | None:
        folder.vector_cache = run.vector_cache
        seed = run.params.index.seed
        chosen = labeled_search_choice(folder, labels, seed) if labels is not None else None
        probes = probes_for_choice(run.vector_cache, probes_key(run.inputs["chunk"], seed),
                                   lambda: run.read(CHUNKS, list(DRAWN)), seed)
        return chosen or choose_search(folder, seed, probes, dropped)
    return choose


def labels_that_choose(params: Params, root: Path) -> Path | None:
    """Where the BEIR labels that choose the search lie: the ingest source; None on S3,
    where none are read, with too few to choose on, or `search.labels_choose` false."""
    source = params.ingest.source
    return choosing_labels(None if is_s3(source) or not params.search.labels_choose
                           else root / source)


def labelled_fingerprint(run: StageRun) -> tuple[Path | None, str]:
    """The labels that choose the search (`labels_that_choose`) and the stage's
    fingerprint, their digest among its facts."""
    labels = labels_that_choose(run.params, run.root)
    return labels, run.fingerprint(labels_sha256=None if labels is None
                                   else labels_digest(labels))
