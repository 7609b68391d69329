from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.config import Params, apply_overrides, load_params, parse_override, parse_params

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_load():
    params = load_params(REPO / "params.yaml")
    assert params.chunk.max_tokens > 0
    assert params == Params.model_validate(params.model_dump())


def test_unknown_key_names_path():
    with pytest.raises(ValueError, match=r"chunk\.max_tokenz: Extra inputs are not permitted"):
        parse_params({"chunk": {"max_tokenz": 100}})


def test_wrong_type_names_path_and_value():
    with pytest.raises(ValueError, match=r"dedup\.threshold.*got 'high'"):
        parse_params({"dedup": {"threshold": "high"}})


def test_literal_lists_allowed_choices():
    with pytest.raises(ValueError, match=r"chunk\.strategy.*'sentence', 'sliding_window'"):
        parse_params({"chunk": {"strategy": "paragraph"}})


def test_overlap_not_smaller_than_chunk_fails():
    with pytest.raises(ValueError, match=r"chunk.*overlap_sentences"):
        parse_params({"chunk": {"max_tokens": 16, "overlap_sentences": 2}})


def test_pca_dims_zero_fails():
    with pytest.raises(ValueError, match=r"reduce\.pca_dims"):
        parse_params({"reduce": {"pca_dims": 0}})


def test_whiten_without_pca_fails():
    with pytest.raises(ValueError, match="whiten needs pca_dims"):
        parse_params({"reduce": {"whiten": True}})


def test_overrides_apply_without_mutating():
    raw = {"reduce": {"pca_dims": None}}
    out = apply_overrides(raw, dict([parse_override("reduce.pca_dims=64")]))
    assert out["reduce"]["pca_dims"] == 64 and raw["reduce"]["pca_dims"] is None


def test_bad_override_syntax():
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_override("reduce.pca_dims")
