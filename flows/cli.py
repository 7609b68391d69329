"""`embedpipe`: run, stage, status, search, lineage, dvc-yaml."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.temporary_server import start_temporary_api, wait_until_healthy
from tasks.core.catalog import ENCODED, MANIFEST
from tasks.core.config import FUSIONS, SEARCH_MODES, cache_root, load_params, parse_override
from tasks.core.memory import imported_for_good
from tasks.core.registry import STAGE_NAMES, get_stage
from tasks.storage.locations import check_locations

QUERY_BATCH = 256  # queries embedded and searched together in batch search


def _root(args: argparse.Namespace) -> Path:
    root = Path(args.root).resolve()
    if not (root / "params.yaml").is_file():
        raise ValueError(f"{root}: no params.yaml here; run from an embedpipe workspace or "
                         "pass --root")
    return root


class Stopped(BaseException):
    """SIGTERM reached the run (docker, systemd, Kubernetes stopping it): unwinds like Ctrl-C
    so that the flow run is recorded and the temporary server stopped before exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signal = signum


def _raise_stopped(signum: int, _frame: Any) -> None:
    raise Stopped(signum)


def cmd_run(args: argparse.Namespace) -> int:
    # Python's default would end the process at once; Prefect's own handler, while the flow
    # runs, records the run Crashed and then hands the signal on to this one.
    signal.signal(signal.SIGTERM, _raise_stopped)
    overrides = dict(parse_override(s) for s in args.set)
    params = load_params(_root(args) / "params.yaml", overrides)  # fail before Prefect starts
    check_locations(params, _root(args))
    server = start_temporary_api(Path.cwd(), params.run.server_idle_s)  # starts while the
    # pipeline is imported
    with imported_for_good():
        from flows.pipeline import check_before_running, pipeline  # noqa: PLC0415

    if overrides:  # params.yaml is untouched until the overrides pass every check
        check_before_running(_root(args), params)
    if server is not None:
        wait_until_healthy(server, params.run.server_idle_s)
    summary = pipeline(root=str(_root(args)), set_params=overrides, force=args.force,
                       on_busy=args.on_busy)
    for s in summary["stages"]:
        if s["ran"]:
            rows = ", ".join(f"{k}={v}" for k, v in s["rows"].items())
            print(f"{s['stage']:<9} ran      {s['seconds']:>7.2f}s  {s['fingerprint'][:12]}  "
                  f"{rows}")
        else:
            print(f"{s['stage']:<9} fresh    skipped")
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    from flows.dvc_bridge import hold_repo, record_stage, refresh_inputs  # noqa: PLC0415
    from flows.stage_tasks import STAGE_TASKS  # noqa: PLC0415
    from tasks.core.lock import workspace_lock  # noqa: PLC0415

    root = _root(args)
    params = load_params(root / "params.yaml")
    check_locations(params, root)
    run_cfg = params.run
    with hold_repo(root, run_cfg.on_busy == "wait") as repo, workspace_lock(
            root, f"embedpipe stage {args.name}", run_cfg.on_busy, run_cfg.lock_wait_s):
        refresh_inputs(repo, params)
        out = STAGE_TASKS[args.name].fn(root=str(root))
        record_stage(repo, args.name)
    print(out)
    return 0


def _refresh_unless_running(root: Path, params: Any) -> None:
    """Write the code digests and the source listing, what DVC compares for the code and in
    place of the source, unless a run holds the workspace: a stage it records must be judged
    on what that run wrote, not on a module edited since (status then reports on those)."""
    from tasks.core.code_digest import write_code_digests  # noqa: PLC0415
    from tasks.core.lock import holder, workspace_lock  # noqa: PLC0415
    from tasks.documents.listing import write_source_listing  # noqa: PLC0415

    with contextlib.ExitStack() as held:
        try:
            held.enter_context(workspace_lock(root, "embedpipe status", on_busy="fail"))
        except RuntimeError:  # busy
            print(f"embedpipe: a run holds the workspace ({holder(root)}): status as of the "
                  "code and source it read, not edits made since", file=sys.stderr)
            return
        write_code_digests(root, params.paths.data)
        write_source_listing(root, params)


def cmd_status(args: argparse.Namespace) -> int:
    from flows.dvc_bridge import exclude_unhashable, pipeline_status  # noqa: PLC0415
    from tasks.storage.published import workspace_damage  # noqa: PLC0415

    params = load_params(_root(args) / "params.yaml")  # a YAML or key error in one line
    exclude_unhashable(_root(args), params.ingest.source)
    _refresh_unless_running(_root(args), params)
    status = pipeline_status(_root(args))
    status["publish"] = status["publish"] or workspace_damage(_root(args), params)
    for name, reason in status.items():
        print(f"{name:<9} {'fresh' if reason is None else 'stale'}"
              f"{'' if reason is None else '    ' + reason}")
    from tasks.query.search import search_summary  # noqa: PLC0415

    line = search_summary(get_stage("index").out_dir(params, _root(args)))
    if line:  # what `embedpipe search` does with the workspace's index, and why
        print(line)
    return 0


def _index_dir(args: argparse.Namespace) -> Path:
    """--index, else the published CURRENT index, else the workspace's latest build."""
    from tasks.storage.published import current_index  # noqa: PLC0415

    if args.index and args.index.startswith("s3://"):
        from tasks.storage import s3  # noqa: PLC0415
        from tasks.storage.published import fetch_published  # noqa: PLC0415

        settings = s3.S3Settings(os.environ.get("AWS_ENDPOINT_URL"))
        return fetch_published(args.index, s3.make_client(settings), cache_root() / "indexes")
    if args.index:  # an index folder, or a publish target: the version its CURRENT names
        return current_index(Path(args.index)) or Path(args.index)
    root = _root(args)
    params = load_params(root / "params.yaml")
    published = current_index(root / params.publish.target)
    return published or get_stage("index").out_dir(params, root)


def cmd_search(args: argparse.Namespace) -> int:
    from tasks.query.search import load_index_folder  # noqa: PLC0415

    if (args.query is None) == (args.queries is None):
        raise ValueError("search: give one query text, or --queries FILE")
    folder = load_index_folder(_index_dir(args), fast=not args.verify)
    if args.level == "doc":
        return _search_documents(folder, args)
    if args.queries is not None:
        return _search_batch(folder, args)
    hits = folder.search_text([args.query], k=args.k, mode=args.mode, expand=args.expand,
                              fusion=args.fusion, alpha=args.alpha)[0]
    if args.json or args.format == "jsonl":
        print(json.dumps(hits, indent=None if args.format == "jsonl" else 2,
                         ensure_ascii=False))
        return 0
    for rank, hit in enumerate(hits, 1):
        print(_hit_lines(rank, hit, args.width))
    return 0


def _search_documents(folder: Any, args: argparse.Namespace) -> int:
    """`search --level doc`: documents by their vectors, for one query or a file of them."""
    from tasks.query.documents import search_documents  # noqa: PLC0415

    if args.queries:
        return _answer_query_file(Path(args.queries),
                                  lambda part: search_documents(folder, part, args.k),
                                  lambda hits: hits)
    results = search_documents(folder, [args.query], args.k)
    if args.json or args.format == "jsonl":
        print(json.dumps({"query": args.query, "hits": results[0]}, ensure_ascii=False))
        return 0
    for rank, hit in enumerate(results[0], 1):
        title = f"  \"{hit['title']}\"" if hit.get("title") else ""
        print(f"{rank:>2}. {hit['score']:.3f}  {hit['source']}{title}  "
              f"({hit['n_chunks']} chunks)")
    return 0


def _hit_lines(rank: int, hit: dict[str, Any], width: int) -> str:
    if "duplicate_of" in hit:
        return (f"{rank:>2}. {hit['score']:.3f}  {hit['source']}  "
                f"(duplicate of {hit['duplicate_of']})")
    snippet = textwrap.shorten(hit["text"].replace("\n", " "), width=width)
    where = hit.get("context") or hit.get("title")  # title > headings the chunk sits under
    title = f"  \"{where}\"" if where else ""
    also = "".join(f"\n    also in {m['source']}" for m in hit.get("members", []))
    return (f"{rank:>2}. {hit['score']:.3f}  {hit['source']}{title}  [{hit['chunk_id']}]\n"
            f"    {snippet}{also}")


def _search_batch(folder: Any, args: argparse.Namespace) -> int:
    """One JSON line per query of the file, in order, with its ranked hits."""
    from tasks.query.batch import hit_record  # noqa: PLC0415

    return _answer_query_file(
        Path(args.queries),
        lambda part: folder.search_text(part, k=args.k, mode=args.mode, expand=args.expand,
                                       fusion=args.fusion, alpha=args.alpha),
        lambda hits: [hit_record(h) for h in hits])


def _answer_query_file(path: Path, search: Callable[[list[str]], list[Any]],
                       record: Callable[[Any], Any]) -> int:
    """One JSON line per non-blank line of the query file, in order: `{"line", "query",
    "hits"}`, or `{"line", "error"}` for a line that holds no query (also on stderr). The
    good lines are answered whatever the others hold; the exit code is 2 when any was bad."""
    from tasks.query.batch import batches, read_query_lines  # noqa: PLC0415

    lines = read_query_lines(path)
    for part in batches(lines, QUERY_BATCH):
        queries = [q.query for q in part if q.query is not None]
        answers = iter(search(queries) if queries else [])
        for q in part:
            if q.error is not None:
                print(f"embedpipe: error: {q.error}", file=sys.stderr)
                line = {"line": q.number, "error": q.error}
            else:
                line = {"line": q.number, "query": q.query, "hits": record(next(answers))}
            print(json.dumps(line, ensure_ascii=False))
    bad = sum(q.error is not None for q in lines)
    if bad:
        print(f"embedpipe: {bad} of {len(lines)} query lines of {path} had errors (their "
              "result lines carry `error`); the others were answered", file=sys.stderr)
    return 2 if bad else 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from tasks.core.lineage import lineage_chain  # noqa: PLC0415

    root = _root(args)
    params = load_params(root / "params.yaml")
    start = "evaluate" if (get_stage("evaluate").out_dir(params, root) / MANIFEST
                           ).is_file() else "index"
    chain = lineage_chain(root, params, start)
    if args.json:
        print(json.dumps(chain, indent=2))
        return 0
    for m in chain:
        ups = ", ".join(f"{k}:{v[:12]}" for k, v in m["inputs"].items()) or "-"
        rows = ", ".join(f"{k}={v}" for k, v in m.get("rows", {}).items())
        print(f"{m['stage']:<9} {m['fingerprint'][:16]}  from {ups}\n          {rows}")
        if m["stage"] == "encode":
            print(f"          model {m['model']['name']} ({m['model']['fingerprint'][:12]})")
        if m["stage"] == "finetune" and "gate" in m:  # the tuned model's origin
            print(f"          {m['steps']} steps on pairs {m['pairs']}, base "
                  f"{m['decided_by']['params']['encode.model']}: {m['gate']['reason']}")
        if m["stage"] == "ingest":
            print(f"          corpus sha256 {m['corpus_sha256'][:16]}, "
                  f"{m['input_files']} files from {m['config']['source']}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from tasks.evaluation.runs import diff_runs, read_runs  # noqa: PLC0415

    root = _root(args)
    runs = read_runs(root / load_params(root / "params.yaml").paths.runs)
    if args.action == "diff":
        if len(args.ids) != 2:
            raise ValueError("runs diff: give two run numbers, e.g. `embedpipe runs diff 1 2`")
        args.diff = args.ids
        by_number = {r["run"]: r for r in runs}
        missing = [n for n in args.diff if n not in by_number]
        if missing:
            raise ValueError(f"runs: no run {missing}; runs are 1..{len(runs)}")
        diff = diff_runs(by_number[args.diff[0]], by_number[args.diff[1]])
        print(f"run {args.diff[0]} -> run {args.diff[1]}")
        for key, (a, b) in diff["params"].items():
            print(f"  param   {key}: {a!r} -> {b!r}")
        for key, (a, b, d) in diff["metrics"].items():
            print(f"  metric  {key}: {a} -> {b} ({d:+.4f})")
        for key, (a, b) in diff["stages"].items():
            print(f"  stage   {key}: {a} -> {b}")
        return 0
    print(f"{'run':>4}  {'time (UTC)':<25} {'gate':<5} {'probe nDCG@10':>13} "
          f"{'labeled nDCG@10':>15} {'index R@10':>10}  index")
    for r in runs:
        m = r["metrics"]
        lab = m.get("labeled_ndcg_at_10")
        print(f"{r['run']:>4}  {r['time_utc']:<25} {'pass' if r['gate'] else 'FAIL':<5} "
              f"{m.get('probe_ndcg_at_10', 0):>13.4f} "
              f"{'-' if lab is None else f'{lab:.4f}':>15} "
              f"{m.get('index_recall_at_10_queries') or 0:>10.4f}  "
              f"{r['fingerprints'].get('index', '')[:12]}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from flows.compare import compare, markdown_table, parse_variant  # noqa: PLC0415

    rows = compare(_root(args), [parse_variant(v) for v in args.variant])
    print(markdown_table(rows))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from flows import caches  # noqa: PLC0415
    from tasks.core.io import read_manifest, read_table  # noqa: PLC0415
    from tasks.encoders import vector_cache  # noqa: PLC0415
    from tasks.evaluation.ahead import ahead_keys  # noqa: PLC0415

    root = _root(args)
    params = load_params(root / "params.yaml")
    cache = root / params.paths.vector_cache
    if args.action == "verify":
        checked, bad = caches.verify_all(root, params)
        for shard, why in bad:
            print(f"bad shard {shard}: {why}")
        print(f"result cache verify: {checked} shards checked, {len(bad)} bad"
              + (" (dropped: the next run computes their documents again)" if bad else ""))
        return max(_cache_verify(cache, get_stage("encode").out_dir(params, root)), bool(bad))
    for part, counts in caches.gc_all(root, params).items():
        print(f"result cache gc {part}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if not cache.is_dir():
        print(f"{cache}: no vector cache yet")
        return 0
    out_dir = get_stage("encode").out_dir(params, root)
    manifest = read_manifest(out_dir, "encode")
    keys = set(read_table(out_dir, ENCODED, manifest).column("text_key").to_pylist())
    counts = vector_cache.gc(cache, {manifest["space"]: keys | ahead_keys(root)})
    print(f"cache gc: kept {counts['kept']} vectors referenced by the current encode output "
          f"or embedded ahead for index and evaluate, dropped {counts['dropped']}")
    return 0


def _cache_verify(cache: Path, encode_dir: Path) -> int:
    """`cache verify`: every shard's checksum and vectors (dimension and unit length too
    for the current encode output's space); bad shards named and dropped; 1 when any."""
    from tasks.core.io import read_manifest  # noqa: PLC0415
    from tasks.encoders import vector_cache  # noqa: PLC0415

    if not cache.is_dir():
        print(f"{cache}: no vector cache yet")
        return 0
    try:
        current = read_manifest(encode_dir, "encode")
    except ValueError:
        current = {}
    shards = sorted(cache.glob("*/part-*.parquet"))
    bad = []
    for folder in sorted(p for p in cache.iterdir() if p.is_dir()):
        mine = current.get("space", "")[:32] == folder.name
        bad += vector_cache.verify(cache, folder.name, current.get("dim") if mine else None,
                                   bool(mine and current.get("unit_vectors")))
    for shard, why in bad:
        print(f"bad shard {shard}: {why}")
    print(f"cache verify: {len(shards)} shards checked, {len(bad)} bad"
          + (" (dropped: the next run encodes their texts again)" if bad else ""))
    return 1 if bad else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.deployments import serve_deployments  # noqa: PLC0415

    serve_deployments(_root(args))
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from flows.kept_server import read_record, state_dir, stop  # noqa: PLC0415

    folder = state_dir()
    record = read_record(folder) if args.action == "status" else stop(folder)
    if record is None:
        print(f"no kept Prefect server for PREFECT_HOME {folder.parent}")
        return 0
    what = "running" if args.action == "status" else "stopped"
    print(f"{what}: Prefect's temporary server at {record['url'].removesuffix('/api')} (pid "
          f"{record['pid']}, started {record['started_utc']}, stops after {record['idle_s']:g}"
          f" s without a run; log {folder / 'server.log'})")
    return 0


def cmd_dvc_yaml(args: argparse.Namespace) -> int:
    from flows.dvc_bridge import render_dvc_yaml  # noqa: PLC0415

    root = _root(args)
    text = render_dvc_yaml(load_params(root / "params.yaml").paths.data)
    path = root / "dvc.yaml"
    if args.check:
        same = path.is_file() and path.read_text(encoding="utf-8") == text
        print("dvc.yaml matches the registry" if same else "dvc.yaml differs from the registry")
        return 0 if same else 1
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


def _add_run_parsers(sub: Any) -> None:
    p = sub.add_parser("run", help="run the Prefect flow (stale stages only)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param, e.g. --set reduce.pca_dims=128 (repeatable)")
    p.add_argument("--force", action="store_true", help="run every stage")
    p.add_argument("--on-busy", choices=["wait", "fail"], default=None,
                   help="when another run holds the workspace (default: run.on_busy)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("stage", help="run one stage without Prefect and record it in DVC")
    p.add_argument("name", choices=STAGE_NAMES)
    p.set_defaults(func=cmd_stage)
    sub.add_parser("status", help="each stage fresh or stale, and why").set_defaults(
        func=cmd_status)
    sub.add_parser("serve", help="serve the `nightly` and `manual` Prefect deployments"
                   ).set_defaults(func=cmd_serve)
    p = sub.add_parser("server", help="the temporary Prefect server `embedpipe run` keeps "
                       "between runs (run.server_idle_s)")
    p.add_argument("action", choices=["status", "stop"])
    p.set_defaults(func=cmd_server)
    p = sub.add_parser("compare", help="run variants side by side and print one table")
    p.add_argument("--variant", action="append", required=True, metavar="K=V[,K=V]",
                   help="e.g. --variant reduce.pca_dims=128 --variant chunk.max_tokens=128")
    p.set_defaults(func=cmd_compare)


def _add_search_parser(sub: Any) -> None:
    p = sub.add_parser("search", help="search the index (one query, or --queries FILE)")
    p.add_argument("query", nargs="?")
    p.add_argument("--queries", metavar="FILE", help="JSONL with a `query` field per line, or "
                   "one query per line: one JSON result line per line, in order (a bad line's "
                   "carries its error; the others are answered)")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--mode", choices=SEARCH_MODES,
                   help="default: the mode the index was built with (search.mode; under "
                   "search.fusion auto, the one chosen at build: `embedpipe status` says it)")
    p.add_argument("--fusion", choices=[f for f in FUSIONS if f != "auto"],
                   help="hybrid: rrf or convex (default: the index's choice or search.fusion)")
    p.add_argument("--alpha", type=float, help="hybrid: the dense side's weight, 0..1")
    p.add_argument("--expand", choices=["group", "rows", "off"],
                   help="deduplicated twins of a hit (default: search.expand_duplicates)")
    p.add_argument("--format", choices=["text", "jsonl"], default="text")
    p.add_argument("--level", choices=["chunk", "doc"], default="chunk",
                   help="chunk: passages (default); doc: whole documents by their vectors")
    p.add_argument("--index", help="index folder, or a publish target (a folder or "
                   "s3://bucket/prefix: its current version) (default: the workspace's "
                   "published index, else its latest build)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--width", type=int, default=160, help="snippet width")
    p.add_argument("--verify", action="store_true", help="hash every file of the index "
                   "folder (by default a file is hashed once per change; sizes always)")
    p.set_defaults(func=cmd_search)


def _add_output_parsers(sub: Any) -> None:
    _add_search_parser(sub)
    p = sub.add_parser("lineage", help="what produced the index, back to the raw corpus")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lineage)
    p = sub.add_parser("runs", help="list evaluated runs (`runs diff A B` compares two)")
    p.add_argument("action", nargs="?", choices=["list", "diff"], default="list")
    p.add_argument("ids", nargs="*", type=int, metavar="RUN")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("cache", help="vector and result cache maintenance")
    p.add_argument("action", choices=["gc", "verify"],
                   help="gc: keep what the current outputs and inputs use; verify: check "
                   "every shard's checksum (and vectors), drop the bad ones (exit 1 when any)")
    p.set_defaults(func=cmd_cache)
    p = sub.add_parser("dvc-yaml", help="write dvc.yaml from the stage registry")
    p.add_argument("--check", action="store_true", help="only check it is up to date")
    p.set_defaults(func=cmd_dvc_yaml)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedpipe", description=__doc__)
    parser.add_argument("--root", default=".", help="workspace (default: current folder)")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks (otherwise an error is one line)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parsers(sub)
    _add_output_parsers(sub)
    return parser


class OneLineErrors(logging.Filter):
    """The terminal's view of the log without `--debug`: a record's traceback is left out
    (Prefect's API and UI keep it), the flow run's own failure and "Finished in state"
    lines are dropped (the CLI prints the error once, as its last line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "prefect.flow_runs" and record.exc_info:
            return False
        if record.getMessage().startswith("Finished in state"):
            return False
        record.exc_info = record.exc_text = record.stack_info = None
        return True


class QuietLibraries(logging.Filter):
    """FAISS's and bm25s' own DEBUG/INFO lines are not news here (bm25s sets its logger to
    DEBUG when imported, so a level set before that does not hold)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] not in {
            "faiss", "bm25s"}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no phoning home
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if not args.debug:
        for handler in logging.getLogger().handlers:
            handler.addFilter(OneLineErrors())
            handler.addFilter(QuietLibraries())
    try:
        return args.func(args)
    except Exception as err:
        if args.debug:
            raise
        return _error_line(err)
    except BaseException as err:  # Ctrl-C, or SIGTERM (Prefect's TerminationSignal)
        signum = getattr(err, "signal", signal.SIGINT if isinstance(err, KeyboardInterrupt)
                         else None)
        if signum is None or args.debug:
            raise
        print(f"embedpipe: stopped by {signal.Signals(signum).name}: a stage that had not "
              "finished kept its previous output (a run's flow run is marked Crashed in "
              "Prefect); rerun to resume", file=sys.stderr)
        return 128 + signum


def _error_line(err: Exception) -> int:
    """Print `err` as one line; the exit code: 2 for a problem with what was asked (a value,
    a state), 1 for a library's own error (S3, DVC, FAISS) or a full disk."""
    from tasks.core.io import disk_full  # noqa: PLC0415

    full = disk_full(err)
    if isinstance(err, ValueError | RuntimeError):
        print(f"embedpipe: error: {err}", file=sys.stderr)
        return 2
    if full is not None:
        print(f"embedpipe: error: disk full (ENOSPC) writing {full.filename or 'a file'}: "
              "free space on that filesystem and rerun", file=sys.stderr)
        return 1
    print(f"embedpipe: error: {type(err).__name__}: {err} (--debug shows the traceback)",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
