"""hivtp.build: ONNX export and TensorRT / TensorRT-LLM engine building."""
