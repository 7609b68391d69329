"""The article's recipe, as most users first write it: the baseline embedpipe is measured against.

Word-window chunks, a Python loop of `model.encode` over slices of 64, scikit-learn PCA,
AgglomerativeClustering for near-duplicates, IndexIVFFlat with nlist=100 (default nprobe).
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

WORDS_PER_CHUNK = 150
BATCH = 64
NLIST = 100


def ingest(corpus_dir: Path) -> list[dict]:
    docs = []
    for line in (corpus_dir / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        obj = json.loads(line)
        docs.append({"id": obj["_id"], "text": f"{obj['title']}\n\n{obj['text']}"})
    return docs


def chunk(docs: list[dict]) -> tuple[list[str], list[str]]:
    texts, owners = [], []
    for d in docs:
        words = d["text"].split()
        for i in range(0, len(words), WORDS_PER_CHUNK):
            texts.append(" ".join(words[i:i + WORDS_PER_CHUNK]))
            owners.append(d["id"])
    return texts, owners


def encode(model, texts: list[str]) -> np.ndarray:
    out = []
    for i in range(0, len(texts), BATCH):
        out.append(model.encode(texts[i:i + BATCH], convert_to_numpy=True))
    return np.vstack(out).astype("float32")


def reduce(x: np.ndarray, dims: int):
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(dims, x.shape[1], len(x)))
    return pca.fit_transform(x).astype("float32"), pca


def dedup(x: np.ndarray, threshold: float, memory_budget_gb: float) -> np.ndarray | str:
    """Keep mask, or why AgglomerativeClustering cannot run here (its n x n distances)."""
    from sklearn.cluster import AgglomerativeClustering

    need_gb = len(x) ** 2 * 8 / 1e9
    if need_gb > memory_budget_gb:
        return f"out of memory: needs ~{need_gb:.0f} GB for the distance matrix"
    labels = AgglomerativeClustering(n_clusters=None, distance_threshold=1 - threshold,
                                     metric="cosine", linkage="average").fit_predict(x)
    _, first = np.unique(labels, return_index=True)
    keep = np.zeros(len(x), dtype=bool)
    keep[first] = True
    return keep


def index(x: np.ndarray) -> faiss.Index:
    d = x.shape[1]
    quantizer = faiss.IndexFlatL2(d)
    ivf = faiss.IndexIVFFlat(quantizer, d, min(NLIST, max(1, len(x) // 39)))
    ivf.train(x)
    ivf.add(x)
    return ivf
