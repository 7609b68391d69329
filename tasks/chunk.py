"""chunk: cleaned `docs.parquet` -> `chunks.parquet`, passages the encoder sees whole.

Schema out: chunk_id, doc_id, chunk_index, source, title, text, char_start, char_end, n_tokens.
Invariant: `text == doc.text[char_start:char_end]`; n_tokens (the encoder tokenizer's count,
special tokens and prefix excluded) never exceeds the budget, which fits max_seq_length.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.core.catalog import CHUNKS, CLEAN_DOCS
from tasks.core.config import ChunkConfig, EncodeConfig
from tasks.core.progress import task_logger
from tasks.core.result_cache import document_key
from tasks.core.runtime import StageRun, main, start_stage
from tasks.documents.sentences import sentence_starts
from tasks.documents.token_counts import Tokens
from tasks.encoders.model import check_chunk_fits, load_tokenizer, tokenizer_identity

Span = tuple[int, int]
# Both matched at a line's or unit's start: `pattern.match(text, start, end)`.
_STRUCTURED = re.compile(r"\s*(#{1,6}\s|[-*+]\s|\d+[.)]\s|\||```|>)")
_TABLE_ROW = re.compile(r"\s*\|.*\|\s*$|[^|\n]+( \| [^|\n]*)+$")
_HEADING = re.compile(r"^#{1,6}\s", re.M)
_FENCE = re.compile(r"^```.*?^```[^\n]*$", re.M | re.S)
_BLANK_LINE = re.compile(r"\n(?=\s*\n)")  # a newline that a blank line follows
SENTENCIZE_CHARS = 100_000  # longest text given to the sentencizer at once


def _trim(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def _lines(text: str, start: int, end: int) -> list[Span]:
    out, pos = [], start
    for m in re.finditer(r"\n", text[start:end]):
        out.append((pos, start + m.start()))
        pos = start + m.end()
    out.append((pos, end))
    return [s for a, b in out if (s := _trim(text, a, b))]


def _windows(text: str, start: int, end: int, size: int) -> Iterator[Span]:
    """[start, end) in pieces of at most `size` characters, cut after the last whitespace of
    each piece when it has one (a sentence longer than a piece is split, never dropped)."""
    while end - start > size:
        cut = max(text.rfind(" ", start, start + size), text.rfind("\n", start, start + size))
        cut = cut + 1 if cut > start else start + size
        yield start, cut
        start = cut
    yield start, end


def _sentences(text: str, start: int, end: int) -> list[Span]:
    """Sentence spans; a paragraph longer than `SENTENCIZE_CHARS` is sentencized in pieces
    (spaCy refuses texts over its max_length, and holds all of one in memory)."""
    out = []
    for a, b in _windows(text, start, end, SENTENCIZE_CHARS):
        starts = [a + s for s in sentence_starts(text[a:b])] + [b]
        out += [s for x, y in zip(starts, starts[1:], strict=False) if (s := _trim(text, x, y))]
    return out


def _paragraphs(text: str) -> Iterator[Span]:
    """Maximal runs of text without a blank line, found from the blank lines between them.

    The same spans as matching the runs themselves (a repeated group of a character or a
    newline not followed by a blank line), whose backtracking state grows with the run: over
    100 bytes a character on a single 200 MB line.
    """
    start = 0
    for m in _BLANK_LINE.finditer(text):
        if m.start() > start:
            yield start, m.start()
        start = m.end()
    if len(text) > start:
        yield start, len(text)


def split_units(text: str, code: bool = False) -> list[Span]:
    """Sentence spans of prose; one span per line of lists, headings, tables and code.

    Consecutive table rows become one span so a table stays whole when it fits.
    """
    units: list[Span] = []
    for start, end in _paragraphs(text):
        prose: list[Span] = []
        for a, b in _lines(text, start, end):
            if code or _STRUCTURED.match(text, a, b) or _table_row(text, a, b):
                units += _sentences(text, prose[0][0], prose[-1][1]) if prose else []
                units.append((a, b))
                prose = []
            else:
                prose.append((a, b))
        units += _sentences(text, prose[0][0], prose[-1][1]) if prose else []
    return _merge_tables(text, units)


def _table_row(text: str, a: int, b: int) -> bool:
    return text.find("|", a, b) >= 0 and _TABLE_ROW.match(text, a, b) is not None


def _merge_tables(text: str, units: list[Span]) -> list[Span]:
    out: list[Span] = []
    for a, b in units:
        prev = out[-1] if out else None
        if (prev and _table_row(text, a, b) and text.count("\n", prev[1], a) == 1
                and _table_row(text, text.rfind("\n", *prev) + 1 or prev[0], prev[1])):
            out[-1] = (prev[0], b)
        else:
            out.append((a, b))
    return out


def split_long(text: str, span: Span, budget: int, tokens: Tokens) -> list[Span]:
    """Cut a span longer than `budget` tokens at token boundaries."""
    offs = tokens.span_offsets(*span)
    out = []
    for i in range(0, len(offs), budget):
        window = offs[i:i + budget]
        if s := _trim(text, window[0][0], window[-1][1]):
            out.append(s)
    return out


def _fit(text: str, units: list[Span], budget: int, tokens: Tokens) -> list[tuple[Span, int]]:
    """Units with their token counts, each within budget (long ones cut)."""
    out: list[tuple[Span, int]] = []
    for span, n in zip(units, tokens.span_counts(units), strict=True):
        if n <= budget:
            out.append((span, n))
        elif "\n" in text[span[0]:span[1]]:  # a table too long to keep whole: rows apart
            out += _fit(text, _lines(text, *span), budget, tokens)
        else:
            pieces = split_long(text, span, budget, tokens)
            out += zip(pieces, tokens.span_counts(pieces), strict=True)
    return out


def pack_units(text: str, units: list[Span], budget: int, overlap: int,
               tokens: Tokens) -> list[Span]:
    """Greedy packing of consecutive units up to `budget` tokens, `overlap` units repeated."""
    fitted = _fit(text, units, budget, tokens)
    chunks: list[Span] = []
    i, done = 0, 0  # done: units already inside some chunk
    while done < len(fitted):
        j, total = i, 0
        while j < len(fitted) and total + fitted[j][1] <= budget:
            total += fitted[j][1]
            j += 1
        j = max(j, i + 1)  # a unit always moves forward, even one at the budget's edge
        while j > i + 1 and tokens.span_counts([(fitted[i][0][0],
                                                 fitted[j - 1][0][1])])[0] > budget:
            j -= 1  # joined text can tokenize longer than its parts
        if j <= done:  # the overlap left no room for a new unit: start after it instead
            i = done
            continue
        chunks.append((fitted[i][0][0], fitted[j - 1][0][1]))
        done = j
        back = min(overlap, j - i - 1)
        while back and sum(n for _, n in fitted[j - back:j]) + (
                fitted[j][1] if j < len(fitted) else 0) > budget:
            back -= 1
        i = j - back
    return chunks


def sliding_windows(text: str, budget: int, overlap: float, tokens: Tokens) -> list[Span]:
    """Fixed windows of `budget` tokens, consecutive windows sharing `overlap` of them."""
    offs = tokens.span_offsets(0, len(text))
    stride = max(1, int(budget * (1 - overlap)))
    out = []
    for i in range(0, len(offs), stride):
        window = offs[i:i + budget]
        if s := _trim(text, window[0][0], window[-1][1]):
            out.append(s)
        if i + budget >= len(offs):
            break
    return out


def split_sections(text: str) -> list[Span]:
    """Markdown sections (a heading up to the next) with fenced code blocks on their own."""
    cuts = {0, len(text)} | {m.start() for m in _HEADING.finditer(text)}
    for m in _FENCE.finditer(text):
        cuts |= {m.start(), m.end()}
    bounds = sorted(cuts)
    return [s for a, b in zip(bounds, bounds[1:], strict=False) if (s := _trim(text, a, b))]


def recursive_chunks(text: str, budget: int, overlap: int, tokens: Tokens,
                     code: bool = False) -> list[Span]:
    """Whole sections merged while they fit; a section too long is sentence-packed."""
    out: list[Span] = []
    sections = split_sections(text)
    for (a, b), n in zip(sections, tokens.span_counts(sections), strict=True):
        if n > budget:
            out += pack_units(text, [(x + a, y + a) for x, y in
                                     split_units(text[a:b], code)], budget, overlap, tokens)
        elif out and tokens.span_counts([(out[-1][0], b)])[0] <= budget:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def chunk_text(text: str, fmt: str, cfg: ChunkConfig, budget: int, tokens: Tokens) -> list[Span]:
    """Chunk spans of one cleaned document under the configured strategy."""
    code = fmt == "code"
    if cfg.strategy == "sliding_window":
        return sliding_windows(text, budget, cfg.window_overlap, tokens)
    if cfg.strategy == "recursive":
        return recursive_chunks(text, budget, cfg.overlap_sentences, tokens, code)
    return pack_units(text, split_units(text, code), budget, cfg.overlap_sentences, tokens)


def document_spans(docs: pa.Table, cfg: ChunkConfig, budget: int, tokenizer: Any
                   ) -> list[list[list[int]]]:
    """Each document's chunks as [char_start, char_end, n_tokens], in order: what the result
    cache keeps per document. A span the encoder's tokenizer reads as nothing (control or
    zero-width characters only) is not a chunk."""
    tokens = Tokens(tokenizer)
    out = []
    docs_in = docs.select(["format", "text"]).to_pylist()
    for d, enc in zip(docs_in, tokens.read([d["text"] for d in docs_in]), strict=True):
        tokens.use(d["text"], enc)
        spans = chunk_text(d["text"], d["format"], cfg, budget, tokens)
        counts = tokens.span_counts(spans)
        out.append([[a, b, n] for (a, b), n in zip(spans, counts, strict=True) if n > 0])
    return out


def chunk_rows(docs: pa.Table, spans: list[list[list[int]]]) -> pa.Table:
    """The chunks table of documents and their `document_spans`, in document order."""
    rows = []
    docs_in = docs.select(["doc_id", "source", "title", "text"]).to_pylist()
    for d, doc_spans in zip(docs_in, spans, strict=True):
        for i, (a, b, n) in enumerate(doc_spans):
            rows.append({"chunk_id": f"{d['doc_id']}:{i:04d}", "doc_id": d["doc_id"],
                         "chunk_index": i, "source": d["source"], "title": d["title"],
                         "text": d["text"][a:b], "char_start": a, "char_end": b,
                         "n_tokens": n})
    return pa.Table.from_pylist(rows, schema=CHUNKS.schema())


def chunk_documents(docs: pa.Table, cfg: ChunkConfig, budget: int, tokenizer: Any) -> pa.Table:
    """All chunks of all documents, in document order."""
    return chunk_rows(docs, document_spans(docs, cfg, budget, tokenizer))


def document_keys(docs: pa.Table) -> list[str]:
    """Each document's result-cache key: what `document_spans` reads of it."""
    return [document_key(f, t) for f, t in zip(docs.column("format").to_pylist(),
                                                docs.column("text").to_pylist(), strict=True)]


def chunk_shard(docs: pa.Table, cfg: ChunkConfig, budget: int, enc: EncodeConfig
                ) -> list[list[list[int]]]:
    """`document_spans` with the encoder's tokenizer, loaded once per process (on a Dask
    worker as in the driver); nothing is loaded for a shard the cache answered whole."""
    if not docs.num_rows:
        return []
    return document_spans(docs, cfg, budget, load_tokenizer(enc.model, enc.revision))


def chunk_fingerprint(run: StageRun, budget: int) -> tuple[str, dict[str, Any]]:
    """The stage fingerprint (declared params, the tokenizer's files, the budget) and the
    model facts."""
    model = tokenizer_identity(run.params.encode)  # not the runtime: no server is asked here
    return run.fingerprint(tokenizer_sha256=model["files_sha256"], budget=budget), model


@task(name="chunk", cache_policy=NO_CACHE)
def chunk_task(root: str = ".") -> str:
    """Cut the cleaned documents into chunks within the encoder's token budget, shard by
    shard (`io.BATCH_ROWS` documents at a time, or `run.dask.shard_rows` on Dask); a
    document whose spans the result cache holds (same text, params, tokenizer and code) is
    not cut again."""
    run = start_stage("chunk", root)
    cfg, enc = run.params.chunk, run.params.encode
    check_chunk_fits(enc, cfg.max_tokens)
    budget = cfg.max_tokens
    fp, model = chunk_fingerprint(run, budget)
    changes = run.changes(CHUNKS, "chunk_id", "text")
    cache = run.result_cache(**run.facts)
    n_docs = 0
    with run.output(fp, cfg) as out:
        writer = out.open_table(CHUNKS)
        for docs, spans in run.map_cached(chunk_shard, CLEAN_DOCS, document_keys, cache, cfg,
                                          budget, enc, unit="documents"):
            chunks = chunk_rows(docs, spans)
            writer.write(chunks)
            changes.update(chunks)
            n_docs += docs.num_rows
        out.record(budget=budget, tokenizer=model["name"], changes=changes.counts(),
                   rows={"docs": n_docs, "chunks": writer.num_rows}, reuse=cache.close(),
                   cache_dropped=cache.dropped)
    task_logger().info("chunk: %d documents -> %d chunks (budget %d tokens) in %.1f s",
                       n_docs, writer.num_rows, budget, run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(chunk_task)
