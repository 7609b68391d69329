"""The side-by-side benchmark on a CUDA machine, printing the same tables as benchmarks.run.

Both sides encode on the GPU: embedpipe with `encode.precision: auto` (fp16 on CUDA) and
batches of 256, the naive recipe in fp32 with slices of 64. embedpipe's IVF k-means runs on
the GPU when faiss-gpu is installed (`pip install -e .[gpu]`). Needs a CUDA build of torch
(the Makefile installs the CPU one): `pip install torch` on the GPU machine first.

    python -m benchmarks.cuda --chunks 20000
"""

from __future__ import annotations

import sys

from benchmarks import run


def main() -> None:
    import faiss
    import torch

    if not torch.cuda.is_available():
        sys.exit("benchmarks.cuda: no CUDA device here (torch.cuda.is_available() is False; "
                 f"torch {torch.__version__})")
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; "
          f"faiss GPUs: {gpus}{'' if gpus else ' (faiss-cpu: index training on the CPU)'}")
    sys.argv = [sys.argv[0], "--device", "cuda", *sys.argv[1:]]
    run.main()


if __name__ == "__main__":
    main()
