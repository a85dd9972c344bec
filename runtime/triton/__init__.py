"""Triton Inference Server serving for hivtp: model repository, server process, client, load benchmark.

Layout and names follow TensorRT-LLM 1.2.x's own Triton repositories (`triton_backend/all_models/multimodal`
and `inflight_batcher_llm`): `preprocessing` -> `multimodal_encoders` (HIVTP scoring + selection +
projector) -> the LLM -> `postprocessing`, joined by one decoupled `ensemble`. See README "Serve".
"""
