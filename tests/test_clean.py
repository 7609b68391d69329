from __future__ import annotations

import pyarrow as pa

from tasks.clean import (
    clean_documents,
    clean_text,
    html_to_text,
    normalize_whitespace,
    strip_code_comments,
)
from tasks.core.config import CleanConfig

CFG = CleanConfig()
HTML = """<html><head><title>Roses</title><style>p {color: red}</style></head><body>
<h1>Pruning &amp; care</h1><p>Cut   above
 a bud.</p><ul>
 <li>Gloves</li>
 <li>Secateurs</li></ul>
<table><tr><th>Month</th><th>Task</th></tr>
<tr><td>March</td><td>Prune</td></tr></table><script>alert(1)</script></body></html>"""


def test_html_keeps_headings_items_rows_and_drops_scripts():
    title, text = html_to_text(HTML)
    assert title == "Roses"
    assert text == ("Pruning & care\n\nCut above a bud.\n\n- Gloves\n- Secateurs\n\n"
                    "Month | Task\nMarch | Prune")


def test_whitespace_keeps_paragraphs():
    assert normalize_whitespace("a  b \r\n\r\n\r\n\n c\t d ") == "a b\n\nc d"


def test_unicode_repair_and_nfc():
    _, text = clean_text("cafÃ© donâ€™t", "text", "a.txt", CFG)
    assert text == "café don't"


def test_strip_comments_keeps_definitions_and_docstrings():
    code = 'def f(x):\n    """Doc."""\n    # secret note\n    return x  # trailing\n'
    out = strip_code_comments(code, "m.py")
    assert "secret" not in out and "trailing" not in out
    assert "def f(x):" in out and '"""Doc."""' in out


def test_lowercase_lemmatize_and_stem_are_opt_in():
    text = "The Geese were running quickly"
    assert clean_text(text, "text", "a", CFG)[1] == text
    assert clean_text(text, "text", "a", CFG.model_copy(update={"lowercase": True}))[1] == (
        "the geese were running quickly")
    lem = clean_text(text, "text", "a", CFG.model_copy(update={"normalize_words": "lemmatize"}))
    assert lem[1] == "The Geese be run quickly"
    stem = clean_text(text, "text", "a", CFG.model_copy(update={"normalize_words": "stem"}))
    assert stem[1] == "The Gees were run quick"


def test_record_title_prefixed_and_short_docs_rejected():
    docs = pa.table({"doc_id": ["a", "b"], "source": ["x.csv", "y.txt"],
                     "format": ["csv", "text"], "title": ["Kelp", None],
                     "text": ["Kelp forests grow fast.", "tiny"], "metadata": ["{}", "{}"]})
    out, rejects = clean_documents(docs, CFG)
    assert out.column("text").to_pylist() == ["Kelp\n\nKelp forests grow fast."]
    assert rejects.to_pylist() == [{"doc_id": "b", "source": "y.txt",
                                    "reason": "4 chars after cleaning (clean.min_chars=20)"}]


def test_deeply_nested_html_is_flattened_not_walked_quadratically():
    from bs4 import BeautifulSoup

    from tasks.clean import MAX_HTML_DEPTH, nesting_depth

    deep = "<div>" * 50_000 + "<p>deep text</p><p>second</p>" + "</div>" * 50_000
    title, text = html_to_text(f"<html><title>T</title><body>{deep}</body></html>")
    assert (title, text) == ("T", "deep text\nsecond")
    assert nesting_depth(BeautifulSoup(deep, "lxml"), MAX_HTML_DEPTH) == MAX_HTML_DEPTH + 1
    assert nesting_depth(BeautifulSoup("<ul><li><b>x</b></li></ul>", "lxml"), 99) == 5
