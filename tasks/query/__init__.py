"""The query side: what turns query text into ranked chunks, and how well it does.

`search`: an index folder loaded whole, and its chain (model, prefix, transform, FAISS
search parameter) applied to queries. `transform`: the PCA / whitening / L2 transform.
`ids`: stable FAISS ids of chunks and the id -> row map. `recall`: recall@k against exact
search and the sweep of nprobe / efSearch. `probes`: label-free query-like probes.

Imports: `tasks.core`, `tasks.encoders`, `tasks.documents`, `tasks.indexing`.
"""
