"""Duplicate search: exact by text digest, near in k-means cells.

`pairs`: exact-duplicate digests and near-duplicate pairs in one process (exact search on
small inputs, k-means cells above).
`cells`: the cell math in one process (train on a sample, assign, compare a cell's members
with the rows probing it). `sharded`: the same search split by cell over an executor, the
workers reading the vectors by name from a scratch they share (a folder or S3), so one
process and a Dask cluster find the same pairs.

Imports: `tasks.core`, `tasks.storage`.
"""
