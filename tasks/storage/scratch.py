"""Scratch files the driver and the Dask workers share while one stage runs: dedup's copy of
the vectors and cells, an on-disk index's shard files and merged lists.

Two places: a folder beside the stage's output under `paths.data` (the default: the workers
must see `paths.data` at the same path, as a LocalCluster or a volume every pod mounts
does), or an S3 prefix (`run.dask.scratch: s3://bucket/prefix`, the S3 settings beside it,
credentials from boto3's chain): the driver uploads a stage input once, workers read it by
byte range and put their shard files there, and the driver passes names, never shard bytes.

A file is put once under its name and never changed, so a worker that needs one whole (a
memory map) downloads it once into a folder of its own and reuses it until the stage ends.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

from tasks.core.config import DaskConfig
from tasks.core.shards import Executor
from tasks.storage.s3 import (
    S3Settings,
    client_error_reason,
    list_objects,
    make_client,
    parse_s3_url,
)

SCRATCH_KEY = "run.dask.scratch"
log = logging.getLogger(__name__)
READ_BUFFER = 8 << 20  # ranged GETs of at least 8 MB: a row group's column chunk in one or few
_guard = threading.Lock()


@cache
def _client(settings: S3Settings) -> Any:
    with _guard:  # boto3's default session is not safe to build clients from in threads
        return make_client(settings)


def _not_visible(what: str) -> ValueError:
    return ValueError(
        f"{what} is not visible here; sharded dedup and on-disk index builds on Dask need "
        f"paths.data on storage the workers share, or {SCRATCH_KEY}: s3://bucket/prefix"
    )


@dataclass(frozen=True)
class SharedScratch:
    """One stage's scratch: `root` a folder, or `s3://bucket/prefix/<run>` with `s3` set.
    Pickled to the workers (a few strings): names travel, bytes do not."""

    root: str
    s3: S3Settings | None = None

    @property
    def on_s3(self) -> bool:
        return self.s3 is not None

    def _key(self, name: str) -> tuple[str, str]:
        bucket, prefix = parse_s3_url(self.root)
        return bucket, f"{prefix}/{name}"

    def _local(self, name: str) -> str:
        if not self.on_s3:  # an absolute name (a stage input read in place) stays itself
            return os.path.join(self.root, name)
        os.makedirs(local_copies(self.root), exist_ok=True)
        return os.path.join(local_copies(self.root), name)

    def staging(self, name: str) -> str:
        """A fresh local path to write the file `name` at before `put`."""
        return self._local(f"{name}.tmp-{uuid.uuid4().hex[:12]}")

    def put(self, staged: str, name: str) -> str:
        """Publish the file written at `staged` (`staging`) as `name`, whole or not at all."""
        if not self.on_s3:
            os.replace(staged, self._local(name))
            return name
        try:
            self._upload(staged, name)
        finally:
            os.remove(staged)
        return name

    def _upload(self, path: str, name: str) -> None:
        try:
            _client(self.s3).upload_file(path, *self._key(name))
        except Exception as err:  # botocore raises ClientError and BotoCoreErrors
            raise _s3_error(f"{self.root}/{name}", err) from None

    def share_input(self, path: Path | str) -> str:
        """The name workers read a stage input by: its own path in a folder scratch (read in
        place), else the file uploaded once as `input-<file name>`."""
        if not self.on_s3:
            return str(Path(path).resolve())
        name = f"input-{Path(path).name}"
        self._upload(str(path), name)
        return name

    def fetch(self, name: str) -> str:
        """A local path of the whole file `name` (on S3: downloaded once per machine)."""
        if not self.on_s3:
            local = self._local(name)
            if not os.path.isfile(local):
                raise _not_visible(local)
            return local

        def download(tmp: str) -> None:
            try:
                _client(self.s3).download_file(*self._key(name), tmp)
            except Exception as err:  # botocore raises ClientError and BotoCoreErrors
                raise _s3_error(f"{self.root}/{name}", err) from None

        return self.derive(name, download)

    def derive(self, name: str, build: Callable[[str], None]) -> str:
        """A local file `name` made once per machine by `build(path)` (a download, or a
        file assembled from parts where S3 cannot fill one in place); threads and worker
        processes of one machine wait for the first to finish it."""
        local = self._local(name)
        with open(f"{local}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not os.path.isfile(local):
                tmp = self.staging(name)
                build(tmp)
                os.replace(tmp, local)
        return local

    def take(self, name: str, dest: Path) -> None:
        """Move the file `name` out of the scratch to the local path `dest` (whole or not
        at all): a rename in a folder, a download from S3."""
        if not self.on_s3:
            shutil.move(self.fetch(name), dest)
            return
        tmp = f"{dest}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            _client(self.s3).download_file(*self._key(name), tmp)
        except Exception as err:  # botocore raises ClientError and BotoCoreErrors
            Path(tmp).unlink(missing_ok=True)
            raise _s3_error(f"{self.root}/{name}", err) from None
        os.replace(tmp, dest)

    def release(self, name: str) -> None:
        """Drop this machine's copy of `name` (a file read once, such as an index shard)."""
        if self.on_s3:
            Path(self._local(name)).unlink(missing_ok=True)

    def reader(self, name: str) -> str | BinaryIO:
        """What `pyarrow.parquet.ParquetFile` opens `name` from: the path, or on S3 a
        seekable reader fetching only the byte ranges read (footer, wanted row groups)."""
        if not self.on_s3:
            return self.fetch(name)
        return io.BufferedReader(S3RangeFile(self, name), READ_BUFFER)


class S3RangeFile(io.RawIOBase):
    """An S3 object as a seekable binary file: each read is one ranged GET."""

    def __init__(self, scratch: SharedScratch, name: str) -> None:
        super().__init__()
        self._client, (self._bucket, self._key) = _client(scratch.s3), scratch._key(name)
        try:
            self.size = int(
                self._client.head_object(Bucket=self._bucket, Key=self._key)["ContentLength"]
            )
        except Exception as err:  # ClientError or BotoCoreError, named below
            raise _s3_error(f"s3://{self._bucket}/{self._key}", err) from None
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.size - self._pos)
        if want <= 0:
            return 0
        resp = self._client.get_object(
            Bucket=self._bucket, Key=self._key, Range=f"bytes={self._pos}-{self._pos + want - 1}"
        )
        data = resp["Body"].read()
        memoryview(buffer)[: len(data)] = data
        self._pos += len(data)
        return len(data)


def local_copies(root: str) -> str:
    """This machine's folder of downloaded scratch files of the scratch `root` (a path; it
    is made when a file is first written there)."""
    digest = hashlib.sha256(root.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), "embedpipe-scratch", digest)


def forget_local_copies(root: str) -> None:
    """Remove this machine's downloaded copies of the scratch `root` (run on each worker)."""
    shutil.rmtree(local_copies(root), ignore_errors=True)


def _s3_error(where: str, err: Exception) -> ValueError:
    return ValueError(
        f"{SCRATCH_KEY}: {where}: {client_error_reason(err)}; expected an existing bucket "
        "these credentials (boto3's chain) can read and write, reachable at the "
        "run.dask.s3_endpoint_url"
    )


def s3_settings(cfg: DaskConfig) -> S3Settings:
    """The S3 settings of `run.dask` (the same shape as ingest's and publish's)."""
    return S3Settings(cfg.s3_endpoint_url, cfg.s3_region, cfg.s3_max_attempts)


def _check_writable(client: Any, url: str, bucket: str, key: str) -> None:
    """Put and delete one small object: a missing bucket, refused credentials or an
    unreachable endpoint fail here, on the driver, before any worker starts."""
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"")
        client.delete_object(Bucket=bucket, Key=key)
    except Exception as err:  # botocore raises ClientError and BotoCoreErrors
        raise _s3_error(url, err) from None


def _remove_prefix(client: Any, bucket: str, prefix: str) -> None:
    keys = [o["key"] for o in list_objects(client, bucket, prefix)]
    for start in range(0, len(keys), 1000):  # DeleteObjects takes 1000 keys a call
        client.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]], "Quiet": True},
        )


@contextmanager
def open_scratch(
    executor: Executor, cfg: DaskConfig, where: Path, what: str
) -> Iterator[SharedScratch]:
    """`what`'s scratch for the block, removed after it (the workers' copies too): a folder
    under `where` in this process or with no `run.dask.scratch`, else an S3 prefix."""
    if executor.client is None or cfg.scratch is None:
        tmp = tempfile.mkdtemp(prefix=f".{what}-scratch-", dir=where)
        try:
            yield SharedScratch(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    settings = s3_settings(cfg)
    bucket, prefix = parse_s3_url(cfg.scratch)
    prefix = f"{prefix}/{what}-{uuid.uuid4().hex[:12]}".strip("/")
    client = _client(settings)
    _check_writable(client, cfg.scratch, bucket, f"{prefix}/.writable")
    scratch = SharedScratch(f"s3://{bucket}/{prefix}", settings)
    try:
        yield scratch
    finally:
        _clean_up(executor, client, scratch)


def _clean_up(executor: Executor, client: Any, scratch: SharedScratch) -> None:
    """Remove the scratch prefix and every machine's copies; what cannot be removed (an S3
    endpoint or a cluster gone) is logged, never raised over the stage's own outcome."""
    bucket, prefix = parse_s3_url(scratch.root)
    forget_local_copies(scratch.root)
    try:
        executor.client.run(forget_local_copies, scratch.root)
    except Exception as err:  # a lost cluster: its machines' copies are moot
        log.warning("%s: workers' copies not removed (%s)", SCRATCH_KEY, type(err).__name__)
    try:
        _remove_prefix(client, bucket, prefix)
    except Exception as err:  # botocore's errors; the prefix is named to remove
        log.warning(
            "%s: %s left behind (%s); remove it by hand",
            SCRATCH_KEY,
            scratch.root,
            client_error_reason(err),
        )
