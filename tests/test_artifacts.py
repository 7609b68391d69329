"""What the Prefect UI shows of a run: the stage table's cells and the summary's index line."""

from __future__ import annotations

import json

from flows.artifacts import REASON_CHARS, stage_table, summary_markdown
from tasks.core.config import Params

ROWS = [
    {"stage": "dedup", "ran": True, "seconds": 3.5, "reason": "params: " + "x" * 200,
     "rows": {"kept": 12345, "dropped": 7}, "fingerprint": "a" * 64},
    {"stage": "index", "ran": False, "seconds": 0.0, "reason": "fresh", "rows": {},
     "fingerprint": "b" * 64},
]


def test_stage_table_cells_render_as_text_and_reason_comes_before_counts():
    table = stage_table(ROWS)
    assert table[0]["seconds"] == "3.50" and table[1]["seconds"] == ""  # no leading spaces
    assert list(table[0])[:4] == ["stage", "status", "seconds", "reason"]
    assert len(table[0]["reason"]) == REASON_CHARS and table[0]["reason"].endswith("…")
    assert table[0]["counts"] == "kept=12,345, dropped=7"


def test_summary_names_exact_search_instead_of_a_dash(tmp_path):
    params = Params()
    index = tmp_path / params.paths.data / "07_index"
    index.mkdir(parents=True)
    (index / "card.json").write_text(json.dumps(
        {"factory": "Flat", "type": "IndexIDMap2", "n": 10, "d": 4, "search_param": None,
         "search_value": None, "size_bytes": 1234}))
    text = summary_markdown(tmp_path, params, {"stages": ROWS, "overrides": {}})
    assert "Flat (IndexIDMap2), 10 x 4, exact search, 1,234 bytes" in text
    assert "=–" not in text and "=-" not in text


def test_summary_shows_recall_by_query_style():
    from flows.artifacts import bucket_markdown

    cell = {"recall_at_10": 0.5, "mrr_at_10": 0.4, "ndcg_at_10": 0.45}
    buckets = {"probe": {"dense": {"question": cell | {"queries": 3},
                                   "keywords": cell | {"queries": 7}},
                         "lexical": {"question": cell | {"queries": 3},
                                     "keywords": cell | {"recall_at_10": 0.9, "queries": 7}}}}
    lines = bucket_markdown(buckets)
    assert "| mode | question (3) | keywords (7) |" in lines
    assert "| lexical | 0.5000 | 0.9000 |" in lines
    assert bucket_markdown({"probe": {}}) == []
