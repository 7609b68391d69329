"""`embedpipe`: run, stage, status, search, lineage, dvc-yaml."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from tasks.config import load_params, parse_override
from tasks.registry import STAGE_NAMES, get_stage


def _root(args: argparse.Namespace) -> Path:
    root = Path(args.root).resolve()
    if not (root / "params.yaml").is_file():
        raise ValueError(f"{root}: no params.yaml here; run from an embedpipe workspace or "
                         "pass --root")
    return root


def cmd_run(args: argparse.Namespace) -> int:
    from flows.pipeline import pipeline  # noqa: PLC0415

    overrides = dict(parse_override(s) for s in args.set)
    load_params(_root(args) / "params.yaml", overrides)  # fail before Prefect starts
    summary = pipeline(root=str(_root(args)), overrides=overrides, force=args.force)
    for s in summary["stages"]:
        if s["ran"]:
            rows = ", ".join(f"{k}={v}" for k, v in s["rows"].items())
            print(f"{s['stage']:<9} ran      {s['seconds']:>7.2f}s  {s['fingerprint'][:12]}  "
                  f"{rows}")
        else:
            print(f"{s['stage']:<9} fresh    skipped")
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    from flows.dvc_bridge import open_repo, record_stage  # noqa: PLC0415
    from flows.pipeline import STAGE_TASKS  # noqa: PLC0415

    root = _root(args)
    get_stage(args.name)
    out = STAGE_TASKS[args.name].fn(root=str(root))
    with open_repo(root) as repo:
        record_stage(repo, args.name)
    print(out)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from flows.dvc_bridge import pipeline_status  # noqa: PLC0415

    for name, reason in pipeline_status(_root(args)).items():
        print(f"{name:<9} {'fresh' if reason is None else 'stale'}"
              f"{'' if reason is None else '    ' + reason}")
    return 0


def _index_dir(args: argparse.Namespace) -> Path:
    if args.index:
        return Path(args.index)
    root = _root(args)
    return get_stage("index").out_dir(load_params(root / "params.yaml"), root)


def cmd_search(args: argparse.Namespace) -> int:
    from tasks.search import load_index_folder  # noqa: PLC0415

    folder = load_index_folder(_index_dir(args))
    hits = folder.search_text([args.query], k=args.k)[0]
    if args.json:
        print(json.dumps(hits, indent=2, ensure_ascii=False))
        return 0
    for rank, hit in enumerate(hits, 1):
        snippet = textwrap.shorten(hit["text"].replace("\n", " "), width=args.width)
        title = f"  \"{hit['title']}\"" if hit.get("title") else ""
        print(f"{rank:>2}. {hit['score']:.3f}  {hit['source']}{title}  [{hit['chunk_id']}]\n"
              f"    {snippet}")
    return 0


def lineage_chain(root: Path) -> list[dict[str, Any]]:
    """Manifests from the index back to ingest (each stage once, pipeline order reversed)."""
    from tasks.io import read_manifest  # noqa: PLC0415

    params = load_params(root / "params.yaml")
    chain, todo, seen = [], ["evaluate"], set()
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        try:
            manifest = read_manifest(get_stage(name).out_dir(params, root), name)
        except ValueError:
            if name == "evaluate":
                todo.append("index")
                continue
            raise
        chain.append(manifest)
        todo += list(manifest["inputs"])
    order = {n: i for i, n in enumerate(STAGE_NAMES)}
    return sorted(chain, key=lambda m: -order[m["stage"]])


def cmd_lineage(args: argparse.Namespace) -> int:
    chain = lineage_chain(_root(args))
    if args.json:
        print(json.dumps(chain, indent=2))
        return 0
    for m in chain:
        ups = ", ".join(f"{k}:{v[:12]}" for k, v in m["inputs"].items()) or "-"
        rows = ", ".join(f"{k}={v}" for k, v in m.get("rows", {}).items())
        print(f"{m['stage']:<9} {m['fingerprint'][:16]}  from {ups}\n          {rows}")
        if m["stage"] == "encode":
            print(f"          model {m['model']['name']} ({m['model']['fingerprint'][:12]})")
        if m["stage"] == "ingest":
            print(f"          corpus sha256 {m['corpus_sha256'][:16]}, "
                  f"{m['input_files']} files from {m['config']['source']}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedpipe", description=__doc__)
    parser.add_argument("--root", default=".", help="workspace (default: current folder)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the Prefect flow (stale stages only)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param, e.g. --set reduce.pca_dims=128 (repeatable)")
    p.add_argument("--force", action="store_true", help="run every stage")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("stage", help="run one stage without Prefect and record it in DVC")
    p.add_argument("name", choices=STAGE_NAMES)
    p.set_defaults(func=cmd_stage)
    sub.add_parser("status", help="each stage fresh or stale, and why").set_defaults(
        func=cmd_status)
    p = sub.add_parser("search", help="search the index")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--index", help="index folder (default: the workspace's)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--width", type=int, default=160, help="snippet width")
    p.set_defaults(func=cmd_search)
    p = sub.add_parser("lineage", help="what produced the index, back to the raw corpus")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lineage)
    p = sub.add_parser("dvc-yaml", help="write dvc.yaml from the stage registry")
    p.add_argument("--check", action="store_true", help="only check it is up to date")
    p.set_defaults(func=cmd_dvc_yaml)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"embedpipe: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
