"""HTML -> text: structure kept, main content, and hostile markup (deep nesting, broken tags)
handled in linear time."""

from __future__ import annotations

from tasks.documents.html import (
    flat_html_text,
    html_to_text,
    markup_depth,
    too_deep_to_parse,
)

PAGE = """<!DOCTYPE html><html><head><title> Kelp
 forests </title><script>var x = "<p>not text</p>";</script></head><body>
<div class="related" role="navigation"><ul><li><a href="/">index</a></li>
<li><a href="next.html">next: Urchins</a></li></ul></div>
<div class="document"><div class="body" role="main">
<h1>Kelp forests<a class="headerlink" href="#k">¶</a></h1>
<p>Kelp   grows up to
 half a metre a day.</p>
<ul><li>Giant kelp<ul><li>Macrocystis</li></ul></li><li>Bull kelp</li></ul>
<table><thead><tr><th>Site</th><th>Depth</th></tr></thead>
<tbody><tr><td>Monterey</td><td><b>30</b> m</td></tr></tbody></table>
<pre>for site in sites:
    print(site)  # one per line</pre>
<dl><dt>holdfast</dt><dd>the root-like base</dd></dl>
</div></div>
<div class="sphinxsidebar" role="navigation"><h3>Previous topic</h3><p>Seagrass</p></div>
<footer>© 2026 Ocean notes</footer></body></html>"""


def test_structure_is_kept_lines_blocks_and_code():
    title, text = html_to_text(PAGE)
    assert title == "Kelp forests"
    assert text == (
        "- index\n- next: Urchins\n\n# Kelp forests¶\n\nKelp grows up to half a metre a day.\n\n"
        "- Giant kelp\n\n- Macrocystis\n\n- Bull kelp\n\nSite | Depth\nMonterey | 30 m\n\n"
        "```\nfor site in sites:\n    print(site)  # one per line\n```\n\nholdfast\n\n"
        "the root-like base\n\n### Previous topic\n\nSeagrass\n\n© 2026 Ocean notes")


def test_main_content_drops_navigation_sidebars_and_footers():
    title, text = html_to_text(PAGE, main_content=True)
    assert title == "Kelp forests"
    assert text.startswith("# Kelp forests\n\nKelp grows")
    assert "Urchins" not in text and "Seagrass" not in text and "Ocean notes" not in text
    assert "print(site)" in text and "Monterey | 30 m" in text


def test_main_content_without_a_main_element_keeps_the_body():
    page = ("<div id=nav><a>Home</a></div><div class='menu nav'><div class=nav>x</div></div>"
            "<article><header><h1>Title kept</h1></header><p>Body.</p></article>"
            "<aside>related links</aside>")
    assert html_to_text(page, main_content=True) == (None, "# Title kept\n\nBody.")


def test_broken_markup_still_gives_the_text():
    assert html_to_text("<p>unclosed <b>bold <i>it</p> after")[1] == "unclosed bold it\n\nafter"
    assert html_to_text("<table><td>a<td>b<tr><td>c</table>")[1] == "a | b\nc"
    assert html_to_text("</div></div>stray <<<>>> &amp;&&; <a href='x")[1] == "stray <<<>>> &&&;"
    assert html_to_text("") == (None, "")


def test_deep_nesting_is_scanned_not_parsed():
    deep = "<div>" * 50_000 + "<p>deep text</p><p>second</p>" + "</div>" * 50_000
    assert markup_depth(deep) == 50_000 and too_deep_to_parse(deep)
    # li and p: their end tags may be left out, so they do not count; nor do void elements
    assert markup_depth("<ul><li><b>x</b></li></ul>" * 2000) == 2
    assert markup_depth("<p>" * 5000 + "<br><img src=x>" * 5000) == 0
    assert markup_depth("</div></div><div><div>") == 2  # stray end tags go no lower than 0
    assert not too_deep_to_parse("<div>" * 5000)  # too few tags to cost much parsed
    # parsing this page took 3 s (HTML5 tree building is quadratic in depth): it is scanned
    page = f"<html><title>T</title><body>{deep}</body></html>"
    assert html_to_text(page) == flat_html_text(page) == ("T", "deep text\nsecond")


def test_flat_text_skips_scripts_and_survives_unclosed_tags():
    page = "<head><title>A &amp; B</title><body>" + "<div>" * 2000 + "one<script>no</script>two"
    assert flat_html_text(page) == ("A & B", "one\ntwo")
    assert flat_html_text("<" * 100_000 + "x")[1] == "<" * 100_000 + "x"
