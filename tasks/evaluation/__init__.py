"""Measuring an index and its space.

`metrics`: metric names (written once) and document-level IR metrics; `beir`: BEIR queries
and qrels, and their digest (part of the index's and the evaluation's fingerprints);
`health`: clusters, spectrum and neighbours of the space; `plots`: PNG plots; `runs`: the
append-only run registry and diffs between runs; `retrieval`: every search mode through the
index folder's query path, per query style, and the labelled choice of fusion (at build and
in evaluation); `base_vs_tuned`: a fine-tuned model beside its base model, on the same
probes; `ahead`: the query-side texts the index and evaluate stages embed, known before
dedup (the encode stage embeds them into the vector cache); `build_choice`: the search an
index is built to answer with (labels outrank probes).

Imports: `tasks.core`, `tasks.query`, `tasks.documents`, `tasks.encoders`, `tasks.storage`,
`tasks.indexing`.
"""
