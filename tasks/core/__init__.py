"""The stage machinery every stage stands on.

Typed params (`config`), the ordered stage registry and the catalog of stage files
(`registry`, `catalog`), config hashes (`fingerprint`), stamped Parquet outputs swapped in
atomically (`io`), folders checked against their manifests (`integrity`), vector storage
conventions (`vectors`), the stage runner (`runtime`), per-document results kept by content
(`result_cache`), the workspace lock (`lock`) and lineage between outputs (`lineage`).

Imports: nothing else from `tasks` (third-party libraries only).
"""
