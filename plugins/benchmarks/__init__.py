"""GPU benchmarks of the HIVTP Triton kernels: `python -m hivtp.plugins.benchmarks.bench_<op>`."""
