"""Documents before they are chunks: where files come from, how bytes become documents.

`sources`: the selected files of a local folder or an S3 prefix, with their hashes.
`decoding`: streamed UTF-8 checks and the format readers (text, Markdown, HTML, code, CSV,
JSONL, Parquet, BEIR), one document or reject row per file or record; document ids.
`html`: HTML -> text on the lexbor parser (structure kept, main content on request).
`sentences`: sentence boundaries (the spaCy sentencizer's, without a Doc per text), shared by
chunking and probes. `token_counts`: token counts of a document's spans, one tokenization per
document.

Imports: `tasks.core`, `tasks.storage`.
"""
