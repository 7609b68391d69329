"""The search-corpora benchmark: the Debian parsers on inline pages, the harness at its
smallest size on the generated corpus (no network)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.debian_corpora import faq_documents, reference_documents, roff_to_text
from tests.workspace import REPO, env_with_venv

MAN = r""".\" a comment
.TH fabs 3 2023-02-05 "Linux man-pages 6.03"
.SH NAME
fabs, fabsf, fabsl \- absolute value of floating-point number
.SH SYNOPSIS
.B #include <math.h>
.BI "double fabs(double " x );
.SH DESCRIPTION
These functions return the \fIabsolute value\fP of
.IR x .
"""


def test_roff_page_loses_its_name_section_and_macros():
    name, text = roff_to_text(MAN)
    assert name == "fabs, fabsf, fabsl - absolute value of floating-point number"
    assert "absolute value of floating" not in text and "NAME" not in text
    assert text.splitlines() == ["SYNOPSIS", "#include <math.h>", "double fabs(double  x );",
                                 "DESCRIPTION", "These functions return the absolute value of",
                                 "x ."]


def test_faq_answer_without_its_question_and_reference_without_headings(tmp_path):
    faq = tmp_path / "usr/share/doc/debian/FAQ"
    faq.mkdir(parents=True)
    (faq / "basics.en.html").write_text(
        '<div class="section"><h2>7.1. What is a Debian package?</h2><p>' + "A package is an "
        "archive of files with metadata that dpkg installs. " * 3 + "</p></div>")
    [(rel, question, html)] = faq_documents(tmp_path)
    assert rel == "faq/basics/000.html" and question == "What is a Debian package?"
    assert "What is" not in html and "dpkg installs" in html
    ref = tmp_path / "usr/share/debian-reference"
    ref.mkdir(parents=True)
    (ref / "ch02.en.html").write_text(
        '<div class="section"><h2>2.7. Package pinning</h2><div class="section">'
        "<h3>2.7.1. Apt pinning basics</h3><p>" + "Pinning ranks versions by origin. " * 10
        + "</p></div></div>")
    [(rel, headings, html)] = reference_documents(tmp_path)
    assert headings == ["Apt pinning basics"] and "pinning basics" not in html


@pytest.mark.slow
def test_harness_reports_every_variant_and_the_default(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.search_corpora", "--corpora",
                           "families", "--families", "6", "--filler", "10", "--out",
                           str(tmp_path)], cwd=REPO, env=env_with_venv(), capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "search_corpora.json").read_text())["corpora"]["families"]
    quality = report["quality"]
    assert {"dense", "lexical", "rrf", "convex@0.5 minmax", "convex@0.5 zscore",
            "default"} <= set(quality)
    assert quality["convex@0.5 minmax"] != quality["convex@0.5 zscore"]
    assert set(quality["default"]) == {"all", "identifier", "own", "shared"}
    assert quality["lexical"]["identifier"]["hit_at_10"] >= 0.9
    assert report["latency_p50_ms"]["dense"] > 0 and report["summary"].startswith("search:")
