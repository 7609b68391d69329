"""What users would pick instead: LangChain's splitter, embeddings and FAISS store, same model.

RecursiveCharacterTextSplitter (1000 characters, 200 overlap) + HuggingFaceEmbeddings (the
packaged model through sentence-transformers, normalised, one `embed_documents` call so
sentence-transformers sorts by length) + a flat inner-product FAISS store; queries through the
store's own `similarity_search_with_score_by_vector`. Needs the benchmark extra: `.[bench]`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHUNK_CHARS, OVERLAP_CHARS = 1000, 200
BATCH = 32  # sentence-transformers' default


def available() -> bool:
    try:
        import langchain_community  # noqa: F401
        import langchain_huggingface  # noqa: F401
        import langchain_text_splitters  # noqa: F401
    except ImportError:
        return False
    return True


def ingest(corpus_dir: Path) -> list[Any]:
    from langchain_core.documents import Document

    docs = []
    for line in (corpus_dir / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        obj = json.loads(line)
        docs.append(Document(page_content=f"{obj['title']}\n\n{obj['text']}",
                             metadata={"doc_id": obj["_id"]}))
    return docs


def chunk(docs: list[Any]) -> list[Any]:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=CHUNK_CHARS,
                                              chunk_overlap=OVERLAP_CHARS)
    return splitter.split_documents(docs)


def embeddings(model_path: str, device: str) -> Any:
    from langchain_huggingface import HuggingFaceEmbeddings

    return HuggingFaceEmbeddings(model_name=model_path, model_kwargs={"device": device},
                                 encode_kwargs={"normalize_embeddings": True,
                                                "batch_size": BATCH})


def store(chunks: list[Any], vectors: list[list[float]], emb: Any) -> Any:
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy

    return FAISS.from_embeddings(
        zip([c.page_content for c in chunks], vectors, strict=True), emb,
        metadatas=[c.metadata for c in chunks],
        distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)


def search(db: Any, emb: Any, queries: list[str], k: int = 30) -> list[list[str]]:
    """Each query's ranked document ids (first chunk of a document counts)."""
    out = []
    for q in queries:
        hits = db.similarity_search_with_score_by_vector(emb.embed_query(q), k=k)
        out.append(list(dict.fromkeys(doc.metadata["doc_id"] for doc, _ in hits)))
    return out
