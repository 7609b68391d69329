"""The tokenizer read straight from tokenizer.json gives what transformers' gives, for every
call the project makes, and is used only where that holds."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.core.config import DEFAULT_MODEL
from tasks.encoders.fast_tokenizer import BackendTokenizer, fast_tokenizer
from tasks.encoders.model import _transformers_tokenizer, load_tokenizer, resolve_model_path
from tests.workspace import REPO

TEXTS = ["Héllo WORLD naïve café — “quotes” 中文 tabs\tand\nnewlines", "", "   ",
         "x86_64 getAddrInfo() --verbose libfoo-dev 3.0.2", "ﬁ ｆｕｌｌ Ⅻ Ǆ",
         " ".join(["a long passage about proofing bread dough in a warm kitchen"] * 60)]
CALLS = [{"truncation": "longest_first", "max_length": 256, "return_attention_mask": False},
         {}, {"add_special_tokens": False}, {"truncation": True, "max_length": 16},
         {"padding": True, "truncation": "longest_first", "max_length": 128,
          "return_tensors": "np"}]


def _texts() -> list[str]:
    sample = sorted(p for p in (REPO / "data/sample").rglob("*") if p.is_file())[:60]
    return TEXTS + [p.read_text(encoding="utf-8", errors="replace")[:8000] for p in sample]


@pytest.mark.parametrize("call", CALLS)
def test_the_default_models_tokenizer_matches_transformers(call: dict) -> None:
    fast, hf = load_tokenizer(DEFAULT_MODEL), _transformers_tokenizer(DEFAULT_MODEL, None)
    assert isinstance(fast, BackendTokenizer)
    texts = _texts()
    a, b = fast(texts, **call), hf(texts, **call)
    assert set(a) == set(b)
    for key in b:
        assert [list(map(int, r)) for r in a[key]] == [list(map(int, r)) for r in b[key]], key
    assert fast("one text", add_special_tokens=False)["input_ids"] == hf(
        "one text", add_special_tokens=False)["input_ids"]
    for attr in ("pad_token_id", "cls_token_id", "sep_token_id", "unk_token_id",
                 "mask_token_id", "model_input_names"):
        assert getattr(fast, attr) == getattr(hf, attr), attr
    assert fast.vocab_size == hf.vocab_size  # anything else: transformers' own answer
    assert fast.num_special_tokens_to_add(False) == hf.num_special_tokens_to_add(pair=False)


def test_offsets_for_cutting_match_transformers() -> None:
    fast = copy.deepcopy(load_tokenizer(DEFAULT_MODEL).backend_tokenizer)
    hf = copy.deepcopy(_transformers_tokenizer(DEFAULT_MODEL, None).backend_tokenizer)
    for backend in (fast, hf):  # as chunking sets them up (documents.token_counts)
        backend.no_truncation()
        backend.no_padding()
    for text in _texts():
        a, b = fast.encode(text, add_special_tokens=False), hf.encode(text,
                                                                       add_special_tokens=False)
        assert (a.ids, a.offsets) == (b.ids, b.offsets)


def test_tensors_for_torch_go_to_transformers() -> None:
    fast = load_tokenizer(DEFAULT_MODEL)
    out = fast(["one", "two words"], padding=True, return_tensors="pt")
    assert type(out).__name__ == "BatchEncoding" and tuple(out["input_ids"].shape)[0] == 2
    assert np.array_equal(out["input_ids"].numpy(), fast(["one", "two words"], padding=True,
                                                         return_tensors="np")["input_ids"])


def test_a_folder_transformers_would_read_otherwise_is_left_to_it(tmp_path: Path) -> None:
    folder = resolve_model_path(DEFAULT_MODEL)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder / name, tmp_path / name)
    assert fast_tokenizer(tmp_path, lambda: None) is not None
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    for change in ({"do_lower_case": False}, {"strip_accents": True},
                   {"tokenizer_class": "XLMRobertaTokenizer"}):
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config | change))
        assert fast_tokenizer(tmp_path, lambda: None) is None, change
    (tmp_path / "tokenizer.json").unlink()
    assert fast_tokenizer(tmp_path, lambda: None) is None


def test_a_run_process_tokenizes_without_importing_transformers() -> None:
    code = ("import sys\nfrom tasks.core.config import DEFAULT_MODEL\n"
            "from tasks.encoders.model import load_tokenizer\n"
            "tok = load_tokenizer(DEFAULT_MODEL)\n"
            "tok(['a text'], truncation='longest_first', max_length=8)\n"
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, env={"HF_HUB_OFFLINE": "1",
                                                     "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "False"


def test_it_travels_to_another_process():
    import pickle

    fast = load_tokenizer(DEFAULT_MODEL)
    fast(["warm"], truncation=True, max_length=4)  # a set-up copy and the lock exist
    back = pickle.loads(pickle.dumps(fast))
    texts = _texts()
    assert back(texts, truncation=True, max_length=32)["input_ids"] == fast(
        texts, truncation=True, max_length=32)["input_ids"]
    assert back.vocab_size == fast.vocab_size  # its way to transformers' tokenizer too
