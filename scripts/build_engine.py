"""Build the hivtp deployment (vision ONNX, TensorRT vision engine, TensorRT-LLM decoder, manifest).

Same as `hivtp build`:
    python scripts/build_engine.py --model DIR --output OUT [--budget K] [--max-batch N] [--dtype fp16|bf16]
        [--onnx-only] [--force] [--plugin-lib PATH]
"""

import sys

from hivtp.commands.build import main

if __name__ == "__main__":
    sys.exit(main())
