"""embedpipe's stages and the packages they share.

Top level: the eleven stage modules, in pipeline order ingest, clean, chunk, finetune, encode,
reduce, dedup, index, evaluate, publish, export (the order lives in `tasks.core.registry`). A
stage never imports another stage; what two stages share lives in a package below:

- `core`: params, the stage registry and file catalog, stamped outputs, the stage runner.
- `documents`: where files come from, decoding them into documents, sentence boundaries.
- `encoders`: the embedding model, its runtimes (PyTorch, OpenVINO, ONNX) and the vector cache.
- `query`: the index folder's query chain, FAISS ids, recall against exact search, probes.
- `evaluation`: metrics, BEIR readers, space health, plots, the run registry.
- `storage`: S3 and published index versions.

See docs/architecture.md for what may import what.
"""
