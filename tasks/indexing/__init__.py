"""The FAISS library of the index stage (and of dedup's and evaluate's recall checks).

`factory`: which index a set of vectors gets (`index.factory: auto` from n, d, a memory
budget and a fixed cost model). `build`: training on a bounded sample and filling, in place,
on a Dask cluster or on disk. `ondisk`: an IVF index whose inverted lists are merged on disk
and searched memory-mapped, its shard files in a scratch the workers share
(`tasks.storage.scratch`: a folder or S3). `updates`: rebuild or update in place, and the
card; `previous`: the previous index folder, reused or not and why.
`tuning`: nprobe / efSearch against exact search; `recall`: recall@k and the sweep.
`ids`: stable FAISS ids of chunks and the id -> row map. `folder`: the index folder's chunk
and duplicate-group tables, and the embedding-space check.

Imports: `tasks.core`, `tasks.storage`.
"""
