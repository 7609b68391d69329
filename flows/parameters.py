"""The flow's typed parameters: every stage config with all fields optional.

Prefect renders this model in the UI's custom-run form as one group per stage, with the
configs' descriptions, bounds and choices; an empty field keeps the value in params.yaml.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from tasks.core.config import Params
from tasks.core.registry import STAGE_NAMES


def _optional_model(name: str, config: type[BaseModel]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for field_name, info in config.model_fields.items():
        annotation = Annotated[info.annotation, *info.metadata] if info.metadata else (
            info.annotation)
        fields[field_name] = (Optional[annotation], Field(  # noqa: UP045  (runtime-built type)
            None, description=info.description or f"{name}.{field_name}",
            title=field_name))
    return create_model(f"{config.__name__}Override", __config__=ConfigDict(extra="forbid"),
                        __doc__=config.__doc__, **fields)


RunOverrides: type[BaseModel] = create_model(
    "RunOverrides",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Overrides of params.yaml for this run; empty fields keep the file's values.",
    **{group: (Optional[_optional_model(group, Params.model_fields[group].annotation)],  # noqa: UP045
               Field(None, description=Params.model_fields[group].annotation.__doc__))
       for group in STAGE_NAMES},
)


def to_dotted(overrides: BaseModel | dict[str, Any] | None) -> dict[str, Any]:
    """The set fields of a RunOverrides as dotted params keys (`{'reduce.pca_dims': 64}`);
    a nested group's fields one by one (`export.lancedb.uri`), so an unchanged one is not
    written back."""
    if overrides is None:
        return {}
    data = overrides.model_dump(exclude_none=True) if isinstance(overrides, BaseModel) else (
        overrides)
    return {key: value for group, values in data.items()
            for key, value in _leaves(group, Params.model_fields[group].annotation,
                                      values or {})}


def _leaves(prefix: str, model: Any, values: dict[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for key, value in values.items():
        field = getattr(model, "model_fields", {}).get(key)
        sub = field.annotation if field is not None else None
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            out += _leaves(f"{prefix}.{key}", sub, value)
        elif value is not None:
            out.append((f"{prefix}.{key}", value))
    return out
