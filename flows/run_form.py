"""The `manual` deployment's run form, showing the workspace's settings.

Prefect renders the flow's parameter schema as the UI's "Custom run" form. The schema of the
flow signature says "an optional group of optional fields": every group opens on a `None`
pill and every field on a `str | None` pill. The schema registered here is the same
parameters, with each group open and each field typed as its config types it (nullable only
where the config allows null), its default the value `params.yaml` holds now, its description
with its bounds. A form submitted unchanged overrides nothing (the flow drops overrides equal
to `params.yaml`); a value out of bounds is refused by the server naming its path
(`overrides.reduce.pca_dims`).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic import BaseModel

from tasks.core.config import Params
from tasks.core.registry import STAGE_NAMES

_BOUNDS = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
           ("exclusiveMaximum", "<"))


def bounds_text(schema: dict[str, Any]) -> str:
    """`≥ 1, ≤ 8192` from a field's JSON schema (any branch of an anyOf)."""
    parts = []
    for branch in [schema, *schema.get("anyOf", [])]:
        parts += [f"{sign} {branch[key]}" for key, sign in _BOUNDS if key in branch]
        if "enum" in branch:
            parts.append("one of " + ", ".join(map(str, branch["enum"])))
        if "const" in branch:
            parts.append(str(branch["const"]))
    return ", ".join(dict.fromkeys(parts))


def field_schema(real: dict[str, Any], name: str, description: str | None,
                 value: Any) -> dict[str, Any]:
    """One form field: the config's own type and bounds, the current value as default."""
    out = {k: v for k, v in real.items() if k not in ("default", "title", "description")}
    bounds = bounds_text(real)
    text = (description or name).rstrip(".") + "."
    # values as code: the UI renders descriptions as Markdown (`**/*` would turn bold)
    out.update(title=name, default=value,
               description=f"{text}{f' Allowed: {bounds}.' if bounds else ''} "
                           f"params.yaml now: `{json.dumps(value, ensure_ascii=False)}`.")
    return out


def _nested(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) \
        else None


def model_fields_schema(definitions: dict[str, Any], model: type[BaseModel],
                        real_props: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The form fields of `model`; a nested settings group (export.lancedb, say) has its own
    definition rewritten the same way, so its fields get names, bounds and values too."""
    for name, info in model.model_fields.items():
        sub = _nested(info.annotation)
        if sub is not None:
            definition = definitions[sub.__name__]
            definition["properties"] = model_fields_schema(
                definitions, sub, definition["properties"], current[name])
    return {name: field_schema(real_props[name], name, info.description, current[name])
            for name, info in model.model_fields.items()}


def group_schema(definitions: dict[str, Any], params: Params, group: str) -> dict[str, Any]:
    """Rewrite the definition of one stage group's override model in place; returns the
    group's current values (its default in the form)."""
    config = getattr(params, group)
    model = type(config)
    real = model.model_json_schema(ref_template="#/definitions/{model}")
    definitions.update(real.get("$defs", {}))
    current = config.model_dump(mode="json")
    override = definitions[f"{model.__name__}Override"]
    override["properties"] = model_fields_schema(definitions, model, real["properties"], current)
    return current


def form_schema(schema: dict[str, Any], params: Params) -> dict[str, Any]:
    """The flow's parameter schema (`ParameterSchema.model_dump()`), with the `overrides`
    groups open and filled from `params`, `set_params` an empty mapping, and `on_busy`
    defaulting to `run.on_busy`."""
    schema = copy.deepcopy(schema)
    definitions = schema.setdefault("definitions", {})
    groups = definitions["RunOverrides"]["properties"]
    defaults = {}
    for group in STAGE_NAMES:
        defaults[group] = group_schema(definitions, params, group)
        ref = groups[group]["anyOf"][0]["$ref"]
        groups[group] = {"title": group, "description": groups[group].get("description", ""),
                         "$ref": ref, "default": defaults[group]}
    props = schema["properties"]
    props["overrides"] = {"title": "overrides", "position": props["overrides"].get("position"),
                          "description": "This run's settings: each field starts at the value "
                          "params.yaml holds now; a changed field is written into params.yaml "
                          "before the stages run.",
                          "$ref": "#/definitions/RunOverrides",
                          "default": defaults}
    props["set_params"] = {**{k: v for k, v in props["set_params"].items()
                              if k not in ("anyOf", "default")},
                           "type": "object", "default": {}}
    busy = props["on_busy"]
    props["on_busy"] = {**{k: v for k, v in busy.items() if k not in ("anyOf", "default")},
                        "enum": ["wait", "fail"], "type": "string",
                        "default": params.run.on_busy}
    return schema
