"""hivtp.plugins: importance scoring and token selection (torch reference, kernels, TensorRT plugin)."""
