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


def test_unknown_key_lists_the_keys_its_group_accepts():
    with pytest.raises(ValueError, match=r"index\.nope: Extra inputs .*allowed here: factory, "
                       r"nlist"):
        parse_params({"index": {"nope": 1}})
    with pytest.raises(ValueError, match=r"nosuch: .*allowed here: paths, run, ingest"):
        parse_params({"nosuch": {"key": 1}})


def test_factory_checked_against_faiss_and_the_previous_corpus():
    from tasks.core.config import IndexConfig
    from tasks.indexing.factory import check_factory

    check_factory(IndexConfig(factory="IVF{nlist},PQ16"), 384)
    with pytest.raises(ValueError, match=r"index\.factory: FAISS cannot build 'NotAFactory' "
                       r"for 384-d vectors \(could not parse"):
        check_factory(IndexConfig(factory="NotAFactory"), 384)
    with pytest.raises(ValueError, match=r"index\.nlist: 99999 lists for 499 vectors"):
        check_factory(IndexConfig(factory="IVF99999,Flat"), 384, 499)


@pytest.mark.parametrize(("override", "message"), [
    ("index.factory=NotAFactory", "index.factory: FAISS cannot build 'NotAFactory'"),
    ("nosuch.key=1", "allowed here: paths, run"),
    ("encode.model=/no/such/model", "encode.model: '/no/such/model'"),
    ("reduce.pca_dims=0", "reduce.pca_dims: Input should be greater than or equal to 1"),
])
def test_bad_parameter_runs_nothing_and_leaves_params_yaml(tmp_path, override, message):
    import subprocess
    import sys
    from pathlib import Path

    from tests.workspace import env_with_venv, make_workspace

    ws = make_workspace(tmp_path / "ws")
    before = (ws / "params.yaml").read_bytes()
    proc = subprocess.run([str(Path(sys.executable).parent / "embedpipe"), "run", "--set",
                           override], cwd=ws, env=env_with_venv(), capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # one clear line
    assert (ws / "params.yaml").read_bytes() == before
    assert not list((ws / "data").glob("[0-9][0-9]_*"))


def test_status_names_a_yaml_error_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.workspace import env_with_venv, make_workspace

    ws = make_workspace(tmp_path / "ws")
    (ws / "params.yaml").write_text("run:\n  log_level: [oops\n")
    proc = subprocess.run([str(Path(sys.executable).parent / "embedpipe"), "status"], cwd=ws,
                          env=env_with_venv(), capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 2 and "not valid YAML at line 3, column 1" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_overrides_change_only_their_own_values_in_params_yaml(tmp_path):
    """`--set` edits params.yaml the way a person would: comments, order, quoting and every
    other line kept; a key the file lacks is added to its group."""
    import difflib

    from tasks.core.params_file import write_overrides

    path = tmp_path / "params.yaml"
    before = (Path(__file__).resolve().parents[1] / "params.yaml").read_text()
    path.write_text(before)
    write_overrides(path, {"reduce.pca_dims": 128, "run.schedule_cron": "0 4 * * *",
                           "ingest.include": ["**/*.md"], "run.stage_timeouts": {"encode": 60},
                           "run.dask.address": None, "clean.lowercase": True})
    after = path.read_text()
    changed = [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(),
                                                     lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert sorted(changed) == sorted([
        "-  pca_dims: null              # e.g. 128; null keeps the model's dimension",
        "+  pca_dims: 128               # e.g. 128; null keeps the model's dimension",
        '-  schedule_cron: "0 3 * * *"  # the `nightly` deployment',
        '+  schedule_cron: "0 4 * * *"  # the `nightly` deployment',
        '-  include: ["**/*"]', '+  include: ["**/*.md"]',
        "-  stage_timeouts: {}          # e.g. {encode: 43200}",
        "+  stage_timeouts: {encode: 60} # e.g. {encode: 43200}",
        "-  lowercase: false", "+  lowercase: true",
    ]), "\n".join(changed)  # run.dask.address was null already: unchanged
    params = load_params(path)
    assert params.reduce.pca_dims == 128 and params.run.stage_timeouts == {"encode": 60}
    write_overrides(path, {"evaluate.min_labeled_ndcg_at_10": 0.5})
    assert load_params(path).evaluate.min_labeled_ndcg_at_10 == 0.5
    assert after.splitlines()[0] == path.read_text().splitlines()[0]  # the header comment


def test_params_read_by_the_c_parser_as_by_pyyaml_and_its_errors_worded_by_python(tmp_path):
    """params.yaml is parsed by libyaml where PyYAML has it; the mapping is what PyYAML's
    own safe loader gives, and a refused file is worded by the Python parser (it names a
    tab, libyaml's message does not)."""
    from pathlib import Path

    import pytest
    import yaml

    from tasks.core.config import read_params_file

    repo_params = Path(__file__).resolve().parents[1] / "params.yaml"
    assert read_params_file(repo_params) == yaml.safe_load(repo_params.read_text())
    bad = tmp_path / "params.yaml"
    bad.write_text("run:\n\tlog_level: INFO\n")
    with pytest.raises(ValueError, match=r"line 2, column 1: found character '\\t'"):
        read_params_file(bad)
