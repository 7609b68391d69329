"""The run form a person sees: the schema `embedpipe serve` registers, and the page a real
browser renders from it (headless Chromium, Debian's `chromium` package)."""

from __future__ import annotations

import re
import shutil

import pytest

from flows.deployments import build_deployments
from tasks.core.config import Params
from tasks.core.registry import STAGE_NAMES
from tests.workspace import REPO, make_workspace


def test_form_schema_opens_every_group_with_the_workspaces_values(tmp_path):
    from prefect.utilities.schema_tools.validation import validate

    ws = make_workspace(tmp_path / "ws")
    params = ws / "params.yaml"
    params.write_text(params.read_text().replace("  whiten: false", "  whiten: true").replace(
        "  pca_dims: null ", "  pca_dims: 96   "))
    manual = build_deployments(ws)[1]
    schema = manual._parameter_openapi_schema.model_dump(exclude_unset=True)
    overrides = schema["properties"]["overrides"]
    assert "anyOf" not in overrides and overrides["default"]["reduce"]["pca_dims"] == 96
    reduce = schema["definitions"]["ReduceConfigOverride"]["properties"]
    assert reduce["whiten"] == {"type": "boolean", "title": "whiten", "default": True,
                                "description": reduce["whiten"]["description"]}
    assert "Allowed: ≥ 100" in reduce["fit_sample"]["description"]
    assert "params.yaml now: `96`" in reduce["pca_dims"]["description"]
    exclude = schema["definitions"]["IngestConfigOverride"]["properties"]["exclude"]
    assert 'params.yaml now: `["**/.*", ' in exclude["description"]  # code, not bold Markdown
    lancedb = schema["definitions"]["LanceDBTarget"]["properties"]
    assert lancedb["uri"]["title"] == "uri" and "params.yaml now: `null`" in (
        lancedb["uri"]["description"])
    postgres = schema["definitions"]["PostgresTarget"]["properties"]
    assert postgres["dsn_env"]["title"] == "dsn_env"
    assert "Allowed: ≥ 2, ≤ 100" in postgres["hnsw_m"]["description"]
    for name, definition in schema["definitions"].items():
        for field, prop in definition.get("properties", {}).items():
            assert prop.get("description") and prop["description"] != f"{name}.{field}", field
    with pytest.raises(Exception, match="'overrides.reduce.pca_dims'.*minimum of 1"):  # noqa: PT011
        validate({"root": str(ws), "overrides": {"reduce": {"pca_dims": 0}}}, schema,
                 raise_on_error=True)
    validate({"root": str(ws), "overrides": {"reduce": {"pca_dims": 64}}}, schema,
             raise_on_error=True)  # a partial override (the API, the CLI) still passes


def test_every_stage_setting_has_a_description():
    missing = [f"{group}.{name}" for group, info in Params.model_fields.items()
               for name, field in getattr(info.annotation, "model_fields", {}).items()
               if not field.description]
    assert missing == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_the_browser_shows_the_settings_in_open_groups(tmp_path):
    from tests.ui.run_form import capture

    dom = capture(tmp_path / "ui")
    assert (tmp_path / "ui/run_form.png").stat().st_size > 10_000
    for shown in ("pca_dims", "fit_sample", "max_tokens"):
        assert shown in dom, shown
    # the value is a code span (where the UI renders Markdown, a glob's `**` survives;
    # this form shows it as text)
    assert re.search(r"params\.yaml now: (`100000`|<code[^>]*>100000</code>)", dom)
    assert '"**/.*", "**/.*/**"' in dom  # exclude's globs whole
    # a `None` pill only where the setting may be null and is null in params.yaml now
    params = Params()
    nullable_null = sum(_nullable_nulls(getattr(params, group)) for group in STAGE_NAMES)
    assert dom.count('Property is type "None"') == nullable_null


def _nullable_nulls(model) -> int:
    """Settings of `model` (nested groups included) that may be null and are null now."""
    from pydantic import BaseModel

    count = 0
    for name, prop in type(model).model_json_schema()["properties"].items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            count += _nullable_nulls(value)
        elif value is None and any(b.get("type") == "null" for b in prop.get("anyOf", [])):
            count += 1
    return count


def test_a_nested_group_sends_and_writes_only_its_changed_fields(tmp_path):
    from flows.parameters import RunOverrides, to_dotted
    from flows.pipeline import changed_only
    from tasks.core.params_file import write_overrides

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    current = Params().export.model_dump(mode="json")  # the form sends every field back
    sent = RunOverrides(export={**current, "lancedb": {**current["lancedb"], "uri": "stores/x"}})
    changed = changed_only(params, to_dotted(sent))
    assert changed == {"export.lancedb.uri": "stores/x"}
    write_overrides(params, changed)
    text = params.read_text()
    assert "    uri: stores/x             # a folder or s3://" in text  # edited in place
    assert "    dsn_env: null" in text
