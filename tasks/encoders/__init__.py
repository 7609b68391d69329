"""The embedding model and how it runs.

`model`: where a model's files are, what its config files say (dimension, sequence length,
pooling), its fingerprint, its tokenizer and the cross-checks of params against it.
`device`: device, backend and precision resolved for this machine.
`loading`: the encoder object for a config (PyTorch, OpenVINO, ONNX or an API, cached per
process).
`openvino`: the OpenVINO export, static int8 quantisation (NNCF) and batched inference.
`onnx`: the ONNX Runtime export and dynamic int8 quantisation.
`local_runtime`: what those two share: pooling, threads, the export cache, the check against
PyTorch and the int8 calibration set.
`openai_api`: the client of an OpenAI-compatible `/v1/embeddings` server (batches, retries,
checked answers).
`vector_cache`: content-addressed vectors keyed by (embedding space, text hash).

Imports: `tasks.core`.
"""
