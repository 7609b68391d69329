"""S3 in and out against a real S3-speaking server (moto's standalone server) on loopback."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.faulty_proxy import FaultyProxy
from tests.workspace import (
    REPO,
    copy_workspace,
    env_with_venv,
    fingerprints,
    free_port,
    make_workspace,
    run_stages,
    scoped_env,
)

SECRET = "EMBEDPIPE-TEST-SECRET-7f3a9c"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "AKIAEMBEDPIPETEST", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
           "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}
UP_TO_INDEX = ("ingest", "clean", "chunk", "finetune", "encode", "reduce", "dedup", "index")
QUERIES = ["how a collapsed star becomes a neutron star", "keeping a sourdough starter fed",
           "corals expelling algae when the ocean warms", "pyroclastic flows"]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """moto_server on 127.0.0.1 (started here, stopped after), credentials in the env."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H",
                             "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    with scoped_env(AWS_ENV):
        yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def client_for(endpoint: str):
    from tasks.storage import s3

    return s3.make_client(s3.S3Settings(endpoint_url=endpoint))


def upload_folder(client, folder: Path, bucket: str, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")


@pytest.fixture(scope="module")
def two_runs(s3_endpoint, sample_run, tmp_path_factory):
    """The sample indexed from the local folder and from a bucket."""
    from tasks.core.params_file import write_overrides

    client = client_for(s3_endpoint)
    client.create_bucket(Bucket="corpus")
    upload_folder(client, REPO / "data/sample", "corpus", "sample")
    local = copy_workspace(sample_run, tmp_path_factory.mktemp("local") / "ws", through="index")
    remote = make_workspace(tmp_path_factory.mktemp("s3_ws"))
    shutil.rmtree(remote / "data/sample")
    write_overrides(remote / "params.yaml", {"ingest.source": "s3://corpus/sample",
                                             "ingest.s3_endpoint_url": s3_endpoint})
    return local, remote


def test_s3_ingest_gives_same_fingerprints_and_results(two_runs, caplog):
    from tasks.query.search import load_index_folder

    local, remote = two_runs
    with caplog.at_level(logging.DEBUG):
        run_stages(remote, UP_TO_INDEX)
    assert fingerprints(remote) == fingerprints(local)
    manifest = json.loads((remote / "data/01_ingest/_manifest.json").read_text())
    assert manifest["objects"]["astronomy/comets.txt"]["etag"]  # versions recorded
    a = load_index_folder(local / "data/07_index").search_text(QUERIES, k=3)
    b = load_index_folder(remote / "data/07_index").search_text(QUERIES, k=3)
    assert [[h["chunk_id"] for h in q] for q in a] == [[h["chunk_id"] for h in q] for q in b]
    # The secret is in the environment only: in no output file and no log line.
    for path in remote.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text


def test_faults_between_client_and_server_lose_nothing(two_runs, s3_endpoint, tmp_path):
    from tasks.core.params_file import write_overrides

    local, _ = two_runs
    ws = make_workspace(tmp_path / "faulty_ws")
    with FaultyProxy(s3_endpoint, fault_rate=0.3, seed=3) as proxy:
        write_overrides(ws / "params.yaml", {"ingest.source": "s3://corpus/sample",
                                             "ingest.s3_endpoint_url": proxy.url})
        run_stages(ws, ("ingest",))
    assert proxy.counts["throttled"] > 5 and proxy.counts["dropped"] > 5
    got = json.loads((ws / "data/01_ingest/_manifest.json").read_text())
    want = json.loads((local / "data/01_ingest/_manifest.json").read_text())
    assert got["rows"] == want["rows"] and got["corpus_sha256"] == want["corpus_sha256"]
    assert got["fingerprint"] == want["fingerprint"]


def test_unsafe_colliding_and_denied_keys_are_rejected(s3_endpoint, tmp_path):
    import pyarrow.parquet as pq

    from tasks.core.params_file import write_overrides

    client = client_for(s3_endpoint)
    client.create_bucket(Bucket="tricky")
    body = b"A perfectly ordinary document about tide pools and anemones."
    # boto3 normalises '..' out of request paths, so such keys are covered below in
    # test_unsafe_key_reasons; these ones reach the server as written.
    keys = ["t/ok.txt", "t//double.txt", "t/Caf\u00e9.txt", "t/Cafe\u0301.txt", "t/denied.txt"]
    for key in keys:
        client.put_object(Bucket="tricky", Key=key, Body=body)
    ws = make_workspace(tmp_path / "tricky_ws")
    with FaultyProxy(s3_endpoint, deny=("denied.txt",)) as proxy:
        write_overrides(ws / "params.yaml", {"ingest.source": "s3://tricky/t",
                                             "ingest.s3_endpoint_url": proxy.url})
        run_stages(ws, ("ingest",))
    docs = pq.read_table(ws / "data/01_ingest/docs.parquet").column("source").to_pylist()
    rejects = {r["source"]: r["reason"] for r in
               pq.read_table(ws / "data/01_ingest/rejects.parquet").to_pylist()}
    assert sorted(docs) == ["Cafe\u0301.txt", "ok.txt"]
    assert "absolute path" in rejects["/double.txt"]
    assert "collides with 'Cafe\u0301.txt'" in rejects["Caf\u00e9.txt"]
    assert "AccessDenied (HTTP 403)" in rejects["denied.txt"]
    assert len(rejects) == 3 and not (ws / "double.txt").exists()


def test_listing_of_an_s3_source_follows_its_objects(s3_endpoint, tmp_path):
    """What DVC compares for an S3 source (it no longer hashes the prefix itself): key, size
    and ETag per object, from one listing, with the endpoint the params name."""
    from tasks.core.config import IngestConfig
    from tasks.documents.sources import source_listing

    client = client_for(s3_endpoint)
    client.create_bucket(Bucket="listed")
    client.put_object(Bucket="listed", Key="docs/a.txt", Body=b"first words")
    client.put_object(Bucket="listed", Key="other/b.txt", Body=b"not under the prefix")
    cfg = IngestConfig(source="s3://listed/docs", s3_endpoint_url=s3_endpoint)
    before = source_listing(cfg, tmp_path)
    assert [(r["path"], r["size"]) for r in before] == [("docs/a.txt", 11)] and before[0]["etag"]
    client.put_object(Bucket="listed", Key="docs/a.txt", Body=b"other words")  # same size
    after = source_listing(cfg, tmp_path)
    assert after[0]["size"] == 11 and after[0]["etag"] != before[0]["etag"]


@pytest.mark.parametrize(("rel", "reason"), [
    ("sub/../../escape.txt", "'..'"), ("/etc/passwd", "absolute path"),
    ("a\x00b.txt", "NUL byte"), ("a/./b.txt", "'.' path segments"), ("ok/b.txt", None)])
def test_unsafe_key_reasons(rel, reason):
    from tasks.storage.s3 import unsafe_key_reason

    got = unsafe_key_reason(rel)
    assert got is None if reason is None else reason in got


def test_publish_then_read_through_pointer(two_runs, s3_endpoint, tmp_path):
    from tasks.query.search import load_index_folder
    from tasks.storage.published import fetch_published, publish_to_s3

    local, _ = two_runs
    client = client_for(s3_endpoint)
    client.create_bucket(Bucket="indexes")
    index_dir = local / "data/07_index"
    publish_to_s3(index_dir, "s3://indexes/prod", "index-aaaa", {}, client)
    first = fetch_published("s3://indexes/prod", client, tmp_path / "cache")
    assert first.name == "index-aaaa"
    hits = load_index_folder(first).search_text(["neutron star"], k=1)[0]
    assert hits[0]["source"].startswith("astronomy/")

    def killed() -> None:
        raise KeyboardInterrupt("publish stopped before the pointer write")

    with pytest.raises(KeyboardInterrupt):
        publish_to_s3(index_dir, "s3://indexes/prod", "index-bbbb", {}, client, killed)
    assert fetch_published("s3://indexes/prod", client, tmp_path / "cache2").name == "index-aaaa"
    env = env_with_venv() | AWS_ENV | {"AWS_ENDPOINT_URL": s3_endpoint,
                                       "EMBEDPIPE_CACHE_DIR": str(tmp_path / "cli_cache")}
    proc = subprocess.run([str(Path(sys.executable).parent / "embedpipe"), "search",
                           "neutron star", "-k", "1", "--index", "s3://indexes/prod"],
                          cwd=local, env=env, capture_output=True, text=True, check=False,
                          timeout=900)  # a fresh cache: the model exported first (78 s loaded)
    assert proc.returncode == 0 and "astronomy/" in proc.stdout, proc.stdout + proc.stderr


def test_dvc_push_then_pull_restores_outputs_bit_for_bit(two_runs, s3_endpoint, tmp_path):
    local, _ = two_runs
    env = env_with_venv() | AWS_ENV
    client_for(s3_endpoint).create_bucket(Bucket="dvc-store")

    def dvc(ws: Path, *args: str) -> str:
        proc = subprocess.run(["dvc", *args], cwd=ws, env=env, capture_output=True, text=True,
                              check=False, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    dvc(local, "repro", "source")  # ingest's listing of its source, which DVC hashes for it
    for stage in UP_TO_INDEX:
        dvc(local, "commit", "-f", stage)
    dvc(local, "remote", "add", "-d", "store", "s3://dvc-store/cache")
    dvc(local, "remote", "modify", "store", "endpointurl", s3_endpoint)
    dvc(local, "push", *UP_TO_INDEX)
    clone = make_workspace(tmp_path / "clone")
    shutil.copy2(local / "dvc.lock", clone / "dvc.lock")
    shutil.copy2(local / ".dvc/config", clone / ".dvc/config")
    dvc(clone, "pull", *UP_TO_INDEX)
    outs = [p for p in (local / "data").rglob("*")
            if p.is_file() and p.relative_to(local / "data").parts[0] not in (
                "sample", "source-listing.jsonl", "code")]  # listing, digests: written, not pulled
    assert len(outs) > 20
    for path in outs:
        rel = path.relative_to(local)
        assert (clone / rel).read_bytes() == path.read_bytes(), rel


def test_unreachable_endpoint_is_one_error_line_in_bounded_time(tmp_path):
    """An S3 source whose endpoint does not answer: the run stops within a minute with one
    error line naming the endpoint; no traceback, no secret (`--debug` shows the traceback)."""
    ws = make_workspace(tmp_path / "ws")
    port = free_port()  # nothing listens there
    params = ws / "params.yaml"
    params.write_text(params.read_text().replace(
        "  source: data/sample", "  source: s3://nobucket/docs\n"
        f"  s3_endpoint_url: http://127.0.0.1:{port}\n  s3_max_attempts: 2", 1)
        .replace("  s3_endpoint_url: null\n", "").replace("  s3_max_attempts: 10\n", ""))
    env = env_with_venv() | AWS_ENV
    env.pop("PREFECT_API_URL", None)
    started = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).parent / "embedpipe"), "run"], cwd=ws,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and time.monotonic() - started < 90, output
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("embedpipe: error:"), output
    assert f"127.0.0.1:{port}" in errors[0], output
    assert "Traceback" not in output and SECRET not in output, output
