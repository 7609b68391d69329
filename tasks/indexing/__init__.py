"""Building FAISS indexes past one machine's memory.

`ondisk`: an IVF index trained once on a sample, its inverted lists filled on the workers in
shards (read from the vector file by path, or sent as arrays) and merged on disk
(`faiss.contrib.ondisk.merge_ondisk`), searched memory-mapped; the memory rule of
`index.on_disk: auto`.

Imports: `tasks.core`.
"""
