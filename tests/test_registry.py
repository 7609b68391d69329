from __future__ import annotations

from pathlib import Path

from flows.dvc_bridge import render_dvc_yaml
from tasks.core.registry import STAGE_NAMES, downstream_of, get_stage

REPO = Path(__file__).resolve().parents[1]


def test_committed_dvc_yaml_matches_registry():
    assert (REPO / "dvc.yaml").read_text(encoding="utf-8") == render_dvc_yaml("data"), (
        "dvc.yaml is out of date: run `embedpipe dvc-yaml`")


def test_every_stage_has_a_module_with_main():
    for name in STAGE_NAMES:
        text = (REPO / get_stage(name).module).read_text(encoding="utf-8")
        assert f"def {name}_task(" in text and 'if __name__ == "__main__":' in text


def test_downstream_of_reduce():
    assert downstream_of("reduce") == ("reduce", "dedup", "index", "evaluate", "publish",
                                      "export")


def test_unknown_stage_lists_valid_names():
    import pytest

    with pytest.raises(ValueError, match="stages are: ingest, clean, chunk"):
        get_stage("embed")
