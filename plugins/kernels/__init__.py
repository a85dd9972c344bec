"""Triton kernels for HIVTP: `score` (importance scores from Q, K) and `select` (hierarchical selection).

Each op is `<op>.py` holding `<op>_kernel` and the launcher `<op>()`; `aot.py` compiles them ahead of
time for the TensorRT plugin (contract in README.md).
"""
