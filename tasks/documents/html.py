"""HTML -> text on the lexbor parser (selectolax): headings as markdown heading lines (`## `
for `<h2>`: chunking keeps sections and heading trails from them), paragraphs and blocks apart,
list items and table rows as lines, code blocks verbatim in ``` fences; optionally the main
content only.

The tree is walked once, iteratively (no recursion), in C-backed node steps. A page whose
markup nests deeper than `MAX_HTML_DEPTH` is never parsed (HTML5 tree building is quadratic in
depth): its strings become lines instead, found by a linear scan.
"""

from __future__ import annotations

import html as html_lib
import re

import numpy as np
from selectolax.lexbor import LexborHTMLParser, LexborNode

BLOCK_TAGS = frozenset(("p", "div", "section", "article", "header", "footer", "main", "aside",
                        "blockquote", "pre", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5",
                        "h6", "br", "hr", "dl", "dt", "dd", "figure", "figcaption", "nav"))
HEADING_TAGS = {f"h{i}": i for i in range(1, 7)}
# whitespace-only text directly inside these is layout (indentation between items and rows)
CONTAINER_TAGS = frozenset(("ul", "ol", "dl", "table", "thead", "tbody", "tfoot", "tr",
                            "html", "body"))
DROP_TAGS = ("script", "style", "noscript", "template", "svg", "head", "iframe")
MAX_HTML_DEPTH = 1024  # tags open at once; real pages stay under ~60
# each block start tag scans the open elements (the HTML5 "p in button scope" check): 20,000
# tags nested to the hilt parse in about 0.5 s, 50,000 in 3 s; fewer tags need no scan
SCAN_ABOVE_TAGS = 20_000
# what main-content mode removes: navigation landmarks and the class/id names that site
# generators (Sphinx, DocBook, MediaWiki, common themes) give their menus, bars and footers
BOILERPLATE_SELECTOR = ", ".join(
    ["nav", "aside", "footer", "[role=navigation]", "[role=banner]", "[role=contentinfo]",
     "[role=complementary]", "[role=search]", "[aria-hidden=true]"]
    + [f"[{attr}~={name}]" for attr in ("class", "id") for name in (
        "nav", "navbar", "navigation", "menu", "breadcrumb", "breadcrumbs", "footer",
        "related", "sphinxsidebar", "navheader", "navfooter", "docnav", "skip-link",
        "mw-navigation", "mw-panel", "catlinks", "printfooter", "cookie-banner", "share",
        "headerlink")]
)
MAIN_SELECTOR = "main, [role=main]"
_VOID_OR_OPTIONAL_END = frozenset((
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
    "source", "track", "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup",
    "thead", "tbody", "tfoot", "colgroup", "rb", "rt", "rtc", "rp", "html", "head", "body",
))
# `[^<>]`: a scan from one "<" stops at the next, so broken markup stays linear
_TAG_RE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)[^<>]*>")
_OPEN_OR_CLOSE_RE = re.compile(  # "/" for an end tag, "" for a start tag, of counted elements
    r"<(/?)(?!(?:" + "|".join(sorted(_VOID_OR_OPTIONAL_END)) + r")[\s/>])[A-Za-z]",
    re.IGNORECASE)
_TOKEN_RE = re.compile(r"(<[^<>]*>)")


def html_to_text(html: str, main_content: bool = False) -> tuple[str | None, str]:
    """(title, text) of an HTML page; `main_content` keeps only the page's main content
    (navigation, menus, sidebars and footers out, see `BOILERPLATE_SELECTOR`)."""
    if too_deep_to_parse(html):
        return flat_html_text(html)
    tree = LexborHTMLParser(html)
    node = tree.css_first("title")
    title = " ".join(node.text().split()) if node is not None else ""
    tree.strip_tags(list(DROP_TAGS), recursive=True)
    root = tree.root
    if main_content and root is not None:
        root = _main_root(tree, root)
    return title or None, render_text(root) if root is not None else ""


def _main_root(tree: LexborHTMLParser, root: LexborNode) -> LexborNode:
    """The page's `<main>` (or role=main) element when it has one, else the whole page;
    boilerplate under it removed."""
    main = tree.css_first(MAIN_SELECTOR) or root
    removed: set[int] = set()
    for node in main.css(BOILERPLATE_SELECTOR):  # document order: outer before inner
        if not _under(node, removed):
            removed.add(node.mem_id)
            node.decompose()  # its inner matches are freed with it: never touched again
    return main


def _under(node: LexborNode, ids: set[int]) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.mem_id in ids:
            return True
        parent = parent.parent
    return False


def markup_depth(html: str) -> int:
    """How deeply elements nest, estimated from the tags in a linear scan: elements whose end
    tag may be left out (and void ones) do not count; a stray end tag never goes below 0."""
    marks = _OPEN_OR_CLOSE_RE.findall(html)
    if not marks:
        return 0
    level = np.cumsum(np.where(np.array(marks) == "/", -1, 1))
    # a walk clamped at 0 is the free walk minus its lowest point so far
    return int((level - np.minimum.accumulate(np.minimum(level, 0))).max())


def too_deep_to_parse(html: str) -> bool:
    """True when the page nests deeper than `MAX_HTML_DEPTH` (pages with fewer than
    `SCAN_ABOVE_TAGS` tags are parsed unscanned: bounded even at their worst)."""
    return html.count("<") > SCAN_ABOVE_TAGS and markup_depth(html) > MAX_HTML_DEPTH


def flat_html_text(html: str) -> tuple[str | None, str]:
    """(title, one line per string) of a page, by a linear scan instead of a parse: for pages
    nested too deeply to parse in reasonable time. Dropped elements' strings are skipped."""
    title, lines, skip_until, in_title = "", [], "", False
    for i, token in enumerate(_TOKEN_RE.split(html)):
        if i % 2:  # a tag
            tag = _TAG_RE.match(token)
            close, name = (tag.group(1), tag.group(2).lower()) if tag else ("", "")
            if skip_until:
                skip_until = "" if close and name == skip_until else skip_until
            elif not close and name in DROP_TAGS and name != "head":  # </head> is optional
                skip_until = name
            in_title = name == "title" and not close and not title
            continue
        text = " ".join(html_lib.unescape(token).split())
        if in_title:
            title = text
        elif text and not skip_until:
            lines.append(text)
    return title or None, "\n".join(lines)


class _Lines:
    """Text assembled line by line: inline pieces joined and their whitespace collapsed,
    blank lines only between blocks, verbatim lines (code) kept as they are."""

    __slots__ = ("blank", "lines", "pieces")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.pieces: list[str] = []
        self.blank = False

    def end_line(self) -> None:
        if self.pieces:
            line = " ".join("".join(self.pieces).split())
            self.pieces = []
            if line:
                self.add(line)

    def end_block(self) -> None:
        self.end_line()
        self.blank = True

    def add(self, line: str) -> None:
        if self.blank and self.lines:
            self.lines.append("")
        self.blank = False
        self.lines.append(line)

    def add_verbatim(self, text: str) -> None:
        """Code: a fenced block (``` lines, as in markdown: a `# comment` in it is no
        heading), indentation and inner spacing kept, trailing spaces and blank runs dropped."""
        self.end_block()
        if not text.strip():
            return
        self.add("```")
        for line in text.replace("\u00a0", " ").split("\n"):
            if line.strip():
                self.add(line.rstrip())
            else:
                self.blank = True
        self.blank = False
        self.add("```")
        self.blank = True


def render_text(root: LexborNode) -> str:
    """The text under `root`, walked in document order with an explicit stack."""
    out, stack = _Lines(), [""]
    node = root.child
    while node is not None:
        tag = node.tag or ""
        if tag == "-text":
            text = node.text_content
            if text and not (stack[-1] in CONTAINER_TAGS and text.isspace()):
                out.pieces.append(text)
        elif tag[:1] != "-" and _enter(node, tag, out) and node.child is not None:
            stack.append(tag)
            node = node.child
            continue
        while node.next is None and len(stack) > 1:
            if stack.pop() in BLOCK_TAGS:
                out.end_block()
            node = node.parent
        node = node.next
    out.end_line()
    return "\n".join(out.lines)


def _enter(node: LexborNode, tag: str, out: _Lines) -> bool:
    """Emit what an element starts with; True when its children are to be walked."""
    if tag == "tr":  # one line: the cells' text joined by " | "
        out.end_line()
        row = " | ".join(" ".join(c.text().split()) for c in node.iter()
                         if c.tag in ("td", "th"))
        if row:
            out.add(row)
        return False
    if tag == "pre":
        out.add_verbatim(node.text())
        return False
    if tag in BLOCK_TAGS:
        out.end_block()
    if tag == "li":  # an item starts a line, not a block
        out.end_line()
        out.pieces.append("- ")
    elif tag in HEADING_TAGS:  # a heading line of its own, marked with its level
        out.pieces.append("#" * HEADING_TAGS[tag] + " ")
    return True
