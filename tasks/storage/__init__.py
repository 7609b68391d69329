"""Where data lives outside the workspace.

`s3`: S3 URLs, clients with retries, listings and reads. `published`: published index
versions and their CURRENT / LATEST pointers, in a folder or on S3. `lancedb_sync`,
`pgvector_sync`: the export's stores (a LanceDB table, a PostgreSQL + pgvector table) brought
to the exported rows; `export_diff`: which rows a store gains, changes and loses.
`locations`: the params that name places, checked against the workspace before a run writes.

Imports: `tasks.core`.
"""
