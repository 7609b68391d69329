"""Which model a run encodes with: encode.model as it is, or the fine-tuned model the
finetune stage chose, named by a content-addressed folder (`model-<files digest>`) that the
finetune output, and every index folder built from its vectors, carry.

A tuned model's identity (`tuned`: its name, folder, base, pairs and params) is part of its
model fingerprint; its folder is found beside the output that names it, so an index folder
copied anywhere (published, fetched from S3) still holds what a query needs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from tasks.core.catalog import FINETUNE_CHOICE
from tasks.core.config import EncodeConfig
from tasks.encoders.model import model_fingerprint


def tuned_config(cfg: EncodeConfig, folder: Path) -> EncodeConfig:
    """`cfg` with its model read from `folder` (a local folder has no revision)."""
    return cfg.model_copy(update={"model": str(folder), "revision": None})


def read_choice(finetune_dir: Path) -> dict[str, Any]:
    """The finetune output's choice (`model.json`): {"use": "base" | "tuned", ...}."""
    path = finetune_dir / FINETUNE_CHOICE.name
    if not path.is_file():
        raise ValueError(f"{finetune_dir}: no {FINETUNE_CHOICE.name}; run the finetune stage")
    return json.loads(path.read_text(encoding="utf-8"))


def chosen_model(cfg: EncodeConfig, finetune_dir: Path
                 ) -> tuple[EncodeConfig, dict[str, Any] | None]:
    """(the encode config to load, the tuned identity or None) as finetune chose."""
    choice = read_choice(finetune_dir)
    if choice["use"] != "tuned":
        return cfg, None
    tuned = choice["tuned"]
    return tuned_config(cfg, model_folder(tuned, finetune_dir)), tuned


def chosen_space(cfg: EncodeConfig, finetune_dir: Path
                 ) -> tuple[EncodeConfig, dict[str, Any], dict[str, Any] | None]:
    """(the encode config to load, its model fingerprint, the tuned identity or None)."""
    config, tuned = chosen_model(cfg, finetune_dir)
    return config, model_fingerprint(config, tuned), tuned


def model_folder(tuned: dict[str, Any], beside: Path) -> Path:
    """The tuned model's folder inside `beside`; ValueError when it is not there."""
    folder = beside / tuned["folder"]
    if not (folder / "modules.json").is_file():
        raise ValueError(f"{beside}: the tuned model {tuned['name']} ({tuned['folder']}) "
                         f"is not here; rerun finetune (or the index that should carry it)")
    return folder


def carry_model(tuned: dict[str, Any] | None, source: Path, dest: Path) -> None:
    """Put the tuned model's folder (from `source`) into the output folder `dest`: hard
    links where the file system allows (the files are never written in place), else
    copies."""
    if tuned is None:
        return
    src = model_folder(tuned, source)

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dest / tuned["folder"], copy_function=link)
