"""index: deduplicated vectors -> the index folder the query side needs, nothing else.

Folder: index.faiss (ids = chunk_int_ids), chunks.parquet (with int_id), transform.npz,
model.json (model fingerprint, query prefix), card.json (type, nlist, nprobe, recall, size).
Invariant: inner product on unit vectors; the index holds exactly the current chunks; the
search parameter is the smallest meeting `target_recall` recall@10 against exact search.
A previous index in the same space is updated in place (removals, additions) until the
churn since training passes `retrain_growth`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.core.catalog import (
    CHUNKS,
    DROPPED,
    INDEX,
    INDEX_CARD,
    INDEX_CHUNKS,
    INDEX_IVFDATA,
    INDEX_MEMBERS,
    INDEX_METADATA,
    INDEX_MODEL,
    INDEX_SEARCH,
    INDEX_TRANSFORM,
    KEPT,
    TRANSFORM,
)
from tasks.core.config import SearchConfig
from tasks.core.io import StageOutput
from tasks.core.lineage import index_metadata
from tasks.core.memory import release_freed_memory
from tasks.core.progress import Progress, task_logger
from tasks.core.runtime import StageRun, main, stage_task, start_stage
from tasks.documents.context import contextual_texts
from tasks.encoders.loading import release_local_encoders
from tasks.encoders.tuned import carry_model, chosen_space
from tasks.evaluation.build_choice import labelled_fingerprint, search_chooser
from tasks.indexing.build import fill_for
from tasks.indexing.folder import check_space, group_members, indexed_chunks
from tasks.indexing.ondisk import lists_file, write_index_file
from tasks.indexing.previous import update_or_build
from tasks.indexing.updates import (
    BuiltIndex,
    IndexPlan,
    choose_search_param,
    index_card,
    index_rows,
)
from tasks.query.documents import write_document_index
from tasks.query.lexical import build_lexical, save_lexical
from tasks.query.probes import probe_queries
from tasks.query.search import CARD_CHOICE, IndexFolder, assemble_folder, encode_queries
from tasks.query.transform import VectorTransform


def tuning_probes(run: StageRun, model: dict[str, Any]) -> Callable[[], np.ndarray]:
    """Query-like probes (titles, sentences) of the chunk table, embedded as queries are
    once asked for, for tuning: read from the encode stage's cache where it embedded them
    ahead (a tuned model's folder is the finetune stage's output)."""
    cfg = run.params.index
    return cache(lambda: encode_queries(
        model, VectorTransform.load(run.input_path(TRANSFORM)),
        [q for q, _ in probe_queries(run.read(CHUNKS, ["doc_id", "title", "text"]),
                                     cfg.tune_queries, cfg.seed)],
        where="index", models=run.input_dirs["finetune"], cache=run.vector_cache))


def write_index_folder(out: StageOutput, built: BuiltIndex, table: pa.Table,
                       int_ids: np.ndarray, inputs: tuple[Path, pa.Table, Path],
                       model: dict[str, Any], search: SearchConfig,
                       choose: Callable[[IndexFolder], dict[str, Any] | None]
                       ) -> dict[str, Any]:
    """The FAISS index, the id -> chunk table, the transform (`inputs[0]`), the duplicate
    groups (from the dedup audit `inputs[1]`), the model (a tuned one's folder too, from
    the finetune output `inputs[2]`: what a query needs), the search settings and the
    lexical index; returns the sizes and the search `choose` picks on the folder written
    (`build_choice.search_chooser`), for the card."""
    # the tuning's queries are embedded and searched: the model (if one was loaded) and the
    # results go before the lexical index's build
    release_local_encoders()
    lists = lists_file(built.index)
    write_index_file(built.index, out.path(INDEX))
    if lists is not None:
        shutil.rmtree(lists.parent, ignore_errors=True)  # its file moved beside the index
    out.write_table(INDEX_CHUNKS, indexed_chunks(table, int_ids))
    shutil.copyfile(inputs[0], out.path(INDEX_TRANSFORM))
    out.write_table(INDEX_MEMBERS, group_members(inputs[1]))
    out.write_json(INDEX_MODEL, model)
    carry_model(model.get("tuned"), inputs[2], out.tmp_dir)
    out.write_json(INDEX_SEARCH, search.model_dump(mode="json"))
    started = time.perf_counter()
    if table.num_rows:  # every chunk, kept ones then group members: no token is deduplicated
        save_lexical(build_lexical(contextual_texts(table) + contextual_texts(inputs[1]),
                                   search), out.tmp_dir)
        release_freed_memory()  # the texts and their tokens, before the search is chosen
    lexical_seconds = round(time.perf_counter() - started, 3)
    on_disk = out.path(INDEX_IVFDATA).exists()
    return {"size_bytes": out.path(INDEX).stat().st_size + (
        out.path(INDEX_IVFDATA).stat().st_size if on_disk else 0), "on_disk": on_disk,
            "lexical_seconds": lexical_seconds,
            CARD_CHOICE: choose(assemble_folder(out.tmp_dir, built.index, {}))}


def log_built(built: tuple[str, int, int], plan: IndexPlan, search: str, seconds: float
              ) -> None:
    """Log the index built: `built` is (factory, vectors, dimension)."""
    task_logger().info("index: %s %s over %d x %d (%s), %s in %.1f s", plan.mode, built[0],
                       built[1], built[2], plan.reason, search, seconds)


def write_card(out: StageOutput, run: StageRun, stamp: tuple[str, dict[str, Any]],
               built: tuple[BuiltIndex, IndexPlan, np.ndarray],
               search: tuple[str | None, Any, list[dict]], sizes: dict[str, Any]
               ) -> tuple[dict[str, Any], dict[str, int], tuple[str, int, int]]:
    """Write the index card and the lineage metadata; returns (card, row counts, (factory,
    vectors, dimension) for the log).

    Args:
        stamp: the stage fingerprint and the model facts.
        built: the index built, its plan and the vectors it holds (timed queries).
        search: the search parameter chosen, its value and the sweep.
        sizes: `write_index_folder`'s account.
    """
    index, plan, x = built
    card = index_card(index.index, index.factory, index.nlist, *search, run.params.index,
                      **sizes, **index.card_facts(plan, x))
    out.write_json(INDEX_CARD, card)
    out.write_json(INDEX_METADATA, index_metadata(run, *stamp, card))
    return card, index.counts(plan), (index.factory, index.index.ntotal, index.index.d)


def checked_dedup(run: StageRun) -> dict[str, Any]:
    """Dedup's manifest, its vectors checked to be of the space encode's model makes."""
    _, want, _ = chosen_space(run.params.encode, run.input_dirs["finetune"])
    check_space(run.inputs["dedup"], run.inputs["reduce"], want, run.input_dirs["dedup"])
    return run.inputs["dedup"]


@stage_task("index")
def index_task(root: str = ".") -> str:
    """Build (or update in place), tune and write the FAISS index folder."""
    run = start_stage("index", root)
    cfg, dedup = run.params.index, checked_dedup(run)
    table, x = run.read_vectors(KEPT)  # finite, and unit length where normalised
    x, int_ids, keys = index_rows(table, x)
    probes = tuning_probes(run, dedup["model"])
    with Progress("index", 2, "steps") as bar:  # build and tune; the folder and the choice
        fill = fill_for(run.params.run, cfg, run.out_dir, run.input_path(KEPT))
        built, plan = update_or_build(run.out_dir, (x, int_ids, keys), dedup["space"], cfg, fill)
        param, value, sweep = choose_search_param(built, x, int_ids, cfg, probes)
        bar.advance(1)
        (labels, fp), model = labelled_fingerprint(run), dedup["model"] | {"space": dedup["space"]}
        with run.output(fp, cfg) as out:
            dropped = run.read(DROPPED)
            sizes = write_index_folder(out, built, table, int_ids, (run.input_path(TRANSFORM),
                                       dropped, run.input_dirs["finetune"]), model,
                                       run.params.search, search_chooser(run, dropped, labels))
            card, rows, log = write_card(out, run, (fp, model), (built, plan, x),
                                         (param, value, sweep), sizes)
            del built, probes  # written and measured: let go before the document vectors
            out.record(model=model, space=dedup["space"], card=card, rows=rows | {
                "documents": write_document_index(out, (table, x, dropped), run, cfg.doc_vectors)})
            bar.advance(1)
    log_built(log, plan, f"{param}={value}" if param else "exact search", run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(index_task)
