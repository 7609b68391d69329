from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

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
    assert text == ("# Pruning & care\n\nCut above a bud.\n\n- Gloves\n- Secateurs\n\n"
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


def test_html_code_keeps_its_indentation_and_the_doctype_is_not_text():
    page = "<!DOCTYPE html><p>Run:</p><pre>def f():\n    return  1</pre><!-- note -->"
    assert html_to_text(page) == (None, "Run:\n\n```\ndef f():\n    return  1\n```")


def test_html_main_content_is_opt_in():
    page = ("<title>T</title><nav>Home | Next</nav><div class=sphinxsidebar>Previous topic</div>"
            "<h1>Kelp</h1><p>Kelp forests grow fast.</p><footer>(c) 2026</footer>")
    assert clean_text(page, "html", "a.html", CFG)[1].startswith("Home | Next")
    main = CFG.model_copy(update={"html_main_content": True})
    assert clean_text(page, "html", "a.html", main) == ("T", "# Kelp\n\nKelp forests grow fast.")


REPAIRS = [
    "cafÃ© donâ€™t", "plain ascii only", "a &amp; b\nline two &lt;x&gt;", "<b>&amp;</b>\n&amp;",
    "first &amp;\nthen < here\nthen &amp; again", "ctrl\x01\x7f\x1b[31mred\x1b[0m\r\nnext\rx",
    "ｆｕｌｌ ｗｉｄｔｈ\u2028sep\u0085nl", "ﬁ ligature “quotes” é" * 3, "\n\n\xa0\n",
    "x" * 50 + "\n" + "Ã©" * 10 + "\n" + "y" * 50, "",
]


def test_unicode_repair_is_ftfy_line_by_line():
    import ftfy

    from tasks.clean import repair_unicode

    for text in REPAIRS:
        for unescape in ("auto", False, True):
            want = ftfy.fix_text(text, normalization="NFC", unescape_html=unescape)
            assert repair_unicode(text, unescape) == want, (text, unescape)


PIECES = [*"ab <&;\n\r\t\x00\x1b\x7fÃ©â€™\u00a0ﬁｆ\u2028\ud800é¶—中\u0301\x85", "&amp;", "&lt;",
          "Ã\xa9", "\r\n", "â€œquotedâ€\x9d", "“curly”"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40).map("".join),
       st.sampled_from(["auto", False]))
def test_unicode_repair_matches_ftfy_on_any_text(text, unescape):
    import ftfy

    from tasks.clean import repair_unicode

    want = ftfy.fix_text(text, normalization="NFC", unescape_html=unescape)
    assert repair_unicode(text, unescape) == want
