"""The query side: what turns query text into ranked chunks, and how well it does.

`search`: an index folder loaded whole, and its chain (model, prefix, transform, FAISS
search parameter) applied to queries. `transform`: the PCA / whitening / L2 transform.
`probes`: label-free query-like probes. FAISS ids, recall against exact search and the
search-parameter sweep live in `tasks.indexing`.

Imports: `tasks.core`, `tasks.encoders`, `tasks.documents`, `tasks.indexing`.
"""
