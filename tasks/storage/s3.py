"""S3 (and S3-compatible) storage for ingest and publish, through boto3.

Credentials come only from boto3's standard chain (environment, shared profile, instance
role); nothing here reads, stores or logs them. Throttling (503 SlowDown) and dropped
connections are retried by botocore's standard retry mode with backoff.
"""

from __future__ import annotations

import posixpath
import unicodedata
from dataclasses import dataclass
from typing import Any

S3_PREFIX = "s3://"


def is_s3(url: str) -> bool:
    """True for `s3://bucket/prefix` locations."""
    return url.startswith(S3_PREFIX)


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ('bucket', 'some/prefix') (prefix without end slash)."""
    if not is_s3(url):
        raise ValueError(f"{url!r}: expected s3://bucket/prefix")
    bucket, _, prefix = url[len(S3_PREFIX):].partition("/")
    if not bucket:
        raise ValueError(f"{url!r}: no bucket name")
    return bucket, prefix.strip("/")


@dataclass(frozen=True)
class S3Settings:
    """Where and how to talk to S3 (no credentials: those come from boto3's chain)."""

    endpoint_url: str | None = None
    region: str | None = None
    max_attempts: int = 10


def make_client(settings: S3Settings) -> Any:
    """A boto3 S3 client with standard retries and checksums S3-compatible servers accept."""
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    config = Config(
        retries={"max_attempts": settings.max_attempts, "mode": "standard"},
        # Newer botocore adds CRC checksums some S3-compatible servers reject.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=10, read_timeout=60,
    )
    return boto3.client("s3", endpoint_url=settings.endpoint_url,
                        region_name=settings.region, config=config)


def list_objects(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under `prefix`: key, size, etag (quotes stripped)."""
    out = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for obj in page.get("Contents", []):
            out.append({"key": obj["Key"], "size": obj["Size"],
                        "etag": obj.get("ETag", "").strip('"')})
    return out


def unsafe_key_reason(rel: str) -> str | None:
    """Why a relative key cannot name a file inside the working area, or None."""
    if "\x00" in rel:
        return "key contains a NUL byte"
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        return "key is an absolute path"
    parts = rel.split("/")
    if ".." in parts:
        return "key climbs out of the prefix with '..'"
    if not rel or rel.endswith("/") or any(p in ("", ".") for p in parts):
        return "key has empty or '.' path segments"
    return None


def normalised_key(rel: str) -> str:
    """The form two keys collide in: Unicode NFC, case-folded, normalised path."""
    return posixpath.normpath(unicodedata.normalize("NFC", rel)).casefold()


def read_object(client: Any, bucket: str, key: str) -> tuple[bytes, dict[str, Any]]:
    """Object bytes and its version facts (etag, version id, size)."""
    resp = client.get_object(Bucket=bucket, Key=key)
    data = resp["Body"].read()
    return data, {"etag": resp.get("ETag", "").strip('"'), "version_id": resp.get("VersionId"),
                  "size": len(data)}


def client_error_reason(err: Exception) -> str:
    """A short reason for a failed S3 call: code and HTTP status, never headers."""
    response = getattr(err, "response", None) or {}
    code = response.get("Error", {}).get("Code", type(err).__name__)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return f"S3 {code}" + (f" (HTTP {status})" if status else "")
