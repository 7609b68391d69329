"""One source of what decides an output: a stage's fingerprint moves with every key the
registry declares for it, and only the keys listed as neutral leave every fingerprint alone."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from pydantic import BaseModel

from tasks.core.config import Params, apply_overrides, parse_params
from tasks.core.registry import NEUTRAL_KEYS, STAGES, declared_params, fingerprint, is_neutral

# Values for keys whose type alone does not give a valid other value.
OTHER_VALUES: dict[str, Any] = {
    "run.schedule_cron": "0 4 * * *",
    "run.timezone": "Europe/Paris",
    "run.stage_timeouts": {"encode": 60},
    "run.dask.address": "tcp://127.0.0.1:8786",
    "run.dask.scratch": "s3://bucket/scratch",
    "encode.api_base_url": "http://127.0.0.1:7997/v1",
    "encode.api_key_env": "OTHER_KEY",
    "encode.model": "some/other-model",
    "index.factory": "IVF{nlist},Flat",
    "index.nlist": 64,
    "index.nprobe": 8,
    "index.on_disk": True,
    "export.postgres.table": "other_table",
    "export.lancedb.uri": "lancedb",
    "export.postgres.dsn_env": "PG_DSN",
    "finetune.gate_confidence": 0.9,
}

# Keys valid only beside another setting: both sides of the comparison get it.
COMPANIONS: dict[str, dict[str, Any]] = {
    "reduce.whiten": {"reduce.pca_dims": 64},
    "index.nlist": {"index.factory": "IVF{nlist},Flat"},
}


def leaf_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, field annotation) of every setting below `model`."""
    out = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            out += leaf_keys(info.annotation, f"{key}.")
        else:
            out.append((key, info.annotation))
    return out


def _choices(annotation: Any) -> list[Any]:
    """The Literal values an annotation allows (through Optional and Annotated)."""
    found = []
    for arg in typing.get_args(annotation) or ():
        found += _choices(arg)
    if typing.get_origin(annotation) is typing.Literal:
        found += list(typing.get_args(annotation))
    return found


def _of_type(annotation: Any) -> Any:
    """A value for an optional setting now null, from its annotation."""
    text = repr(annotation)
    return 64 if "int" in text else 0.5 if "float" in text else ["title"] if "tuple" in text \
        else "other"


def other_value(key: str, annotation: Any, value: Any) -> Any:
    """A valid value of `key` other than `value`."""
    if key in OTHER_VALUES:
        return OTHER_VALUES[key]
    if value is None:
        return _of_type(annotation)
    choices = [c for c in _choices(annotation) if c not in (value, "auto")]
    by_type = {
        bool: lambda v: not v,
        int: lambda v: v + 1,
        float: lambda v: round(v * 0.5, 6) if v <= 1.0 else v + 1.0,
        list: lambda v: v[:-1] if len(v) > 1 else [*v, "extra/**"],
        str: lambda v: choices[0] if choices else f"{v}-other",
    }
    return by_type[type(value)](value)


def all_fingerprints(params: Params) -> dict[str, str]:
    """Every stage's fingerprint from fixed inputs and facts: only params differ."""
    return {s.name: fingerprint(s.name, params, {i: f"fp-{i}" for i in s.inputs},
                                {f: f"fact-{f}" for f in s.facts}) for s in STAGES}


def covers(declared: str, key: str) -> bool:
    return key == declared or key.startswith(f"{declared}.")


def test_every_key_moves_the_fingerprint_of_each_stage_declaring_it():
    undeclared = []
    for key, annotation in leaf_keys(Params):
        base_raw = apply_overrides(Params().model_dump(mode="json"), COMPANIONS.get(key, {}))
        base = all_fingerprints(parse_params(base_raw))
        value = base_raw
        for part in key.split("."):
            value = value[part]
        other = other_value(key, annotation, value)
        params = parse_params(apply_overrides(base_raw, {key: other}), f"set {key}")
        moved = {s for s, fp in all_fingerprints(params).items() if fp != base[s]}
        declaring = {s.name for s in STAGES if any(covers(d, key) for d in s.params)}
        if is_neutral(key):
            assert not moved, f"{key} is listed as neutral but moves {sorted(moved)}"
        elif not declaring:
            undeclared.append(key)
        else:
            assert moved == declaring, (f"{key}={other!r}: moved {sorted(moved)}, declared by "
                                        f"{sorted(declaring)}")
    assert not undeclared, (f"keys no stage declares and NEUTRAL_KEYS does not list: "
                            f"{undeclared}")


def test_search_settings_are_in_the_index_fingerprint():
    """The first row of issue 29: `--set search.mode=dense` used to keep the index stamp."""
    base = all_fingerprints(Params())
    dense = all_fingerprints(parse_params({"search": {"mode": "dense", "rrf_k": 5}}))
    assert dense["index"] != base["index"]
    assert dense["ingest"] == base["ingest"] and dense["encode"] == base["encode"]


def test_neutral_keys_are_real_keys():
    groups = {k for k, _ in leaf_keys(Params)} | {k.rsplit(".", 1)[0]
                                                   for k, _ in leaf_keys(Params)}
    assert set(NEUTRAL_KEYS) <= groups, set(NEUTRAL_KEYS) - groups


def test_a_fact_not_declared_is_refused():
    spec = next(s for s in STAGES if s.name == "encode")
    inputs = {i: "x" for i in spec.inputs}
    with pytest.raises(ValueError, match=r"facts \['device'\] given, the registry declares"):
        fingerprint("encode", Params(), inputs, {"device": "cpu"})
    with pytest.raises(ValueError, match="registry declares"):
        fingerprint("reduce", Params(), {}, {})
    assert declared_params("ingest", Params())["ingest"].get("source") is None


# Every neutral key changed at once, but these: run.dask.address stays null
# (tests/test_dask.py runs the same stages against a scheduler's address and compares bytes
# too), and the S3 scratch keys stay unset (no S3 server here: tests/test_scratch.py runs
# dedup and an on-disk index through one and compares bytes too).
UNEXERCISED = {"run.dask.address", "run.dask.scratch", "run.dask.s3_endpoint_url",
               "run.dask.s3_region", "run.dask.s3_max_attempts"}
NEUTRAL_CHANGES = {
    "paths.data": "data2", "paths.runs": "runs2/registry.jsonl",
    "paths.vector_cache": "cache2/vectors", "paths.result_cache": "cache2/results",
    "run.stage_timeout_s": 7200, "run.stage_timeouts": {"encode": 3600},
    "run.log_level": "DEBUG", "run.schedule_cron": "0 4 * * *", "run.timezone": "Europe/Paris",
    "run.on_busy": "fail", "run.lock_wait_s": 10, "run.executor": "dask", "run.server_idle_s": 0,
    "run.dask.workers": 1, "run.dask.threads_per_worker": 2, "run.dask.connect_timeout_s": 20,
    "run.dask.shard_rows": 40, "run.dask.max_in_flight": 3, "run.dask.retries": 1,
    "ingest.source": "elsewhere/corpus", "ingest.s3_endpoint_url": "http://127.0.0.1:9",
    "ingest.s3_region": "eu-west-1", "ingest.s3_max_attempts": 3,
    "finetune.max_minutes": 5.0,
}


def test_neutral_changes_cover_every_neutral_key():
    changed = {k for k in NEUTRAL_CHANGES}
    for key in NEUTRAL_KEYS:
        below = [k for k, _ in leaf_keys(Params) if covers(key, k)]
        missing = [k for k in below if k not in changed and k not in UNEXERCISED]
        assert not missing, f"{key}: {missing} not exercised by the output check"


@pytest.mark.slow
def test_neutral_keys_leave_every_output_unchanged(sample_run, tmp_path):
    """The session's sample run (default params; publish and export run again in the copy,
    whose receipt names the copy's target) against a second build of every stage into other
    folders with every neutral key changed."""
    import shutil

    from tasks.core.params_file import write_overrides
    from tests.conftest import stage_outputs
    from tests.workspace import copy_workspace, run_stages

    ws = copy_workspace(sample_run, tmp_path / "ws", through="evaluate")
    run_stages(ws, ("publish", "export"))
    shutil.copytree(ws / "data/sample", ws / "elsewhere/corpus")
    write_overrides(ws / "params.yaml", NEUTRAL_CHANGES)
    run_stages(ws)
    first, second = stage_outputs(ws / "data"), stage_outputs(ws / "data2")
    assert set(first) == set(second) == {s.name for s in STAGES}
    for stage in first:
        assert second[stage] == first[stage], stage
