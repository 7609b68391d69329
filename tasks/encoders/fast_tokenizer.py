"""A BERT-family encoder's tokenizer straight from its `tokenizer.json`, for the calls a run
makes (count, cut, encode), without importing transformers: that import costs a process
about 2.5 s (`python -m benchmarks.stage_imports`), and chunk, encode, index, evaluate and
every `embedpipe search` paid it.

Used only where transformers' own fast tokenizer would be this same `tokenizers` object:
the folder names `BertTokenizer` (the class of MiniLM, BGE, E5, GTE…), whose fast init
changes nothing but the normalizer, and only when the normalizer already says what
`tokenizer_config.json` says (lower case, accents, Chinese characters). Any other class, a
call this module does not serve (tensors for torch: the one-off ONNX export), or a folder
without `tokenizer.json` goes to transformers.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BERT_CLASSES = ("BertTokenizer", "BertTokenizerFast")
SPECIALS = {"pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]", "unk": "[UNK]", "mask": "[MASK]"}
MODEL_INPUT_NAMES = ["input_ids", "token_type_ids", "attention_mask"]  # BERT's, in its order


def fast_tokenizer(folder: Path, fallback: Callable[[], Any]) -> BackendTokenizer | None:
    """The folder's tokenizer served by `tokenizers` alone, or None where transformers
    could build a different one (`fallback` loads transformers' for calls not served)."""
    path, config_path = folder / "tokenizer.json", folder / "tokenizer_config.json"
    if not path.is_file() or not config_path.is_file():
        return None
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") not in BERT_CLASSES:
        return None
    from tokenizers import Tokenizer  # noqa: PLC0415

    backend = Tokenizer.from_file(str(path))
    norm = json.loads(backend.to_str()).get("normalizer") or {}
    wanted = {"lowercase": config.get("do_lower_case", True),
              "strip_accents": config.get("strip_accents"),
              "handle_chinese_chars": config.get("tokenize_chinese_chars", True)}
    if norm.get("type") != "BertNormalizer" or any(norm.get(k) != v for k, v in wanted.items()):
        return None
    specials = {f"{name}_token_id": backend.token_to_id(_token(config, name, default))
                for name, default in SPECIALS.items()}
    return BackendTokenizer(backend, specials, fallback)


def _token(config: dict[str, Any], name: str, default: str) -> str:
    """A special token's text from tokenizer_config.json (a string, or an AddedToken's
    mapping with its `content`)."""
    value = config.get(f"{name}_token") or default
    return value.get("content", default) if isinstance(value, dict) else str(value)


class BackendTokenizer:
    """The subset of transformers' fast tokenizer the project calls: `backend_tokenizer`,
    the special tokens' ids, `model_input_names`, `num_special_tokens_to_add`, and a call on
    a text or a list of texts with optional truncation to `max_length`, padding to the
    longest and numpy tensors; any other attribute is transformers' tokenizer's (loaded
    then: the one-off exports use it)."""

    is_fast = True
    model_input_names = MODEL_INPUT_NAMES

    def __init__(self, backend: Any, specials: dict[str, int | None],
                 fallback: Callable[[], Any]) -> None:
        self.backend_tokenizer = backend
        self.pad_token_id = specials.get("pad_token_id") or 0
        self.cls_token_id = specials.get("cls_token_id")
        self.sep_token_id = specials.get("sep_token_id")
        self.unk_token_id = specials.get("unk_token_id")
        self.mask_token_id = specials.get("mask_token_id")
        self._fallback = fallback
        self._configured: dict[tuple[int | None, bool], Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (a Dask task may carry it): without the lock and the set-up copies."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_configured")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _configured={}, _lock=threading.Lock())

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # never for this object's own state (copy, pickle)
            raise AttributeError(name)
        return getattr(self._fallback(), name)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self.backend_tokenizer.num_special_tokens_to_add(pair)

    def _backend(self, max_length: int | None, padding: bool) -> Any:
        """A copy set up for one truncation and padding (the backend's settings are state,
        and threads share this tokenizer)."""
        with self._lock:
            key = (max_length, padding)
            if key not in self._configured:
                tok = copy.deepcopy(self.backend_tokenizer)
                tok.no_truncation()
                tok.no_padding()
                if max_length is not None:
                    tok.enable_truncation(max_length, strategy="longest_first")
                if padding:
                    tok.enable_padding(pad_id=self.pad_token_id,
                                       pad_token=tok.id_to_token(self.pad_token_id) or "[PAD]")
                self._configured[key] = tok
            return self._configured[key]

    def __call__(self, texts: str | list[str], truncation: bool | str = False,
                 max_length: int | None = None, padding: bool = False,
                 return_attention_mask: bool = True, add_special_tokens: bool = True,
                 return_tensors: str | None = None, **other: Any) -> dict[str, Any]:
        cut = truncation not in (False, None, "do_not_truncate")
        if other or return_tensors not in (None, "np") or (cut and max_length is None) or (
                truncation not in (False, None, True, "longest_first", "do_not_truncate")):
            return self._fallback()(texts, truncation=truncation, max_length=max_length,
                                    padding=padding, return_attention_mask=return_attention_mask,
                                    add_special_tokens=add_special_tokens,
                                    return_tensors=return_tensors, **other)
        one = isinstance(texts, str)
        encs = self._backend(max_length if cut else None, bool(padding)).encode_batch(
            [texts] if one else list(texts), add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": [e.ids for e in encs],
                               "token_type_ids": [e.type_ids for e in encs]}
        if return_attention_mask:
            out["attention_mask"] = [e.attention_mask for e in encs]
        if return_tensors == "np":
            return {k: np.asarray(v, dtype="int64") for k, v in out.items()}
        return {k: v[0] for k, v in out.items()} if one else out
