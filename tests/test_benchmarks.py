"""The benchmark harness itself, at its smallest size: both sides run, quality is reported."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.workspace import REPO, env_with_venv


def test_harness_runs_side_by_side(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--size", "tiny", "--out",
                           str(tmp_path)], cwd=REPO, env=env_with_venv(), capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "tiny-300.json").read_text())
    for side in ("embedpipe", "naive"):
        stages = {r["stage"]: r for r in report[side]["stages"]}
        assert {"ingest", "chunk", "encode", "reduce", "dedup", "index"} <= set(stages)
        assert stages["encode"]["tokens_per_s"] > 0 and stages["encode"]["peak_rss_mb"] > 0
        assert set(report[side]["quality"]) >= {"recall_at_10", "mrr_at_10", "ndcg_at_10"}
    assert report["embedpipe"]["quality"]["recall_at_10"] >= 0.5
    # LangChain's side (the benchmark extra, installed by `make setup`)
    langchain = {r["stage"]: r for r in report["langchain"]["stages"]}
    assert set(langchain) == {"ingest", "chunk", "encode", "index"}
    assert report["langchain"]["chunks"] > 0 and langchain["encode"]["tokens_per_s"] > 0
    assert report["langchain"]["quality"]["recall_at_10"] >= 0.5
    md = (tmp_path / "tiny-300.md").read_text()
    assert "| encode |" in md and "| **build s** |" in md and "| langchain |" in md


def test_search_quality_harness_compares_configurations(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.search_quality", "--families", "6",
                           "--filler", "10", "--out", str(tmp_path)], cwd=REPO,
                          env=env_with_venv(), capture_output=True, text=True, timeout=900,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "search_quality.json").read_text())
    quality = report["quality"]
    flat, default = quality["exact dense, no dedup (flat store)"], quality[
        "embedpipe hybrid, expansion group"]
    assert set(flat) == {"all", "identifier", "own", "shared"}
    assert default["identifier"] >= flat["identifier"]
    assert report["chunks"] > report["indexed"] and report["latency_p50_ms"]["hybrid"] > 0


def test_html_clean_queries_come_from_headings_and_find_their_pages():
    from benchmarks.html_clean import retrieval, structure_queries
    from tasks.documents.html import html_to_text

    topics = {"kelp": "Kelp forests grow fast in cold water",
              "urchin": "Sea urchins graze the kelp holdfast",
              "otter": "Sea otters eat urchins and float on their backs"}
    pages = [(f"{name}.html", f"<nav><a>Home</a></nav><h1>All about {name} life</h1>"
              f"<h2>Where {name} colonies thrive</h2><p>{text}. " * 3 + "</p><h2>Notes</h2>")
             for name, text in topics.items()]
    queries = structure_queries(pages, per_kind=10, seed=0)
    # "Notes" is on every page and one word: never a query
    assert {q["query"] for q in queries} == {f"All about {n} life" for n in topics} | {
        f"Where {n} colonies thrive" for n in topics}
    scores = retrieval(pages, [html_to_text(h)[1] for _, h in pages], queries)
    assert scores["pages_kept"] == 3 and scores["all"]["recall_at_1"] == 1.0
    assert scores["all"]["mrr_at_10"] == 1.0 and scores["title"]["queries"] == 3
