"""`hivtp serve`: a Triton Inference Server for a checkpoint (torch flavour) or a `hivtp build` output (engines)."""

from __future__ import annotations

import argparse
from typing import Any

from hivtp.args import add_config_arguments, config_from, non_negative_int, path, positive_int


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 1..65535, got {value}")
    return value


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("serve", help="serve pruned LLaVA with Triton Inference Server (loopback by default)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=path, help="HF LLaVA-1.5 / LLaVA-NeXT checkpoint: torch flavour (default: the shipped tiny model)")
    source.add_argument("--engine", type=path, help="`hivtp build` output: engine flavour (TensorRT vision plan + tensorrtllm backend)")
    parser.add_argument("--repository-only", type=path, metavar="DIR", help="only write the model repository to DIR (for a Triton container)")
    parser.add_argument("--force", action="store_true", help="replace an existing --repository-only DIR")
    parser.add_argument("--host", default="127.0.0.1", help="address the server binds (loopback by default)")
    parser.add_argument("--http-port", type=port, default=8000, help="HTTP port")
    parser.add_argument("--grpc-port", type=port, default=8001, help="gRPC port")
    parser.add_argument("--metrics-port", type=port, default=8002, help="Prometheus metrics port")
    parser.add_argument("--gpus", type=comma_ints_or_zero, help="GPU ids for the vision and LLM instances, e.g. 0,1 (default: CPU)")
    parser.add_argument("--max-tokens-limit", type=positive_int, default=256, help="largest max_tokens a request may ask")
    add_server_arguments(parser)
    parser.add_argument("--plugin-lib", type=path, help="libhivtp_plugin.so for --engine (default: $HIVTP_PLUGIN_LIB)")
    parser.add_argument("--start-timeout", type=positive_int, default=300, help="seconds to wait for the server to be ready")
    add_config_arguments(parser)
    parser.set_defaults(run=run)


def add_server_arguments(parser: Any) -> None:
    """Options `hivtp serve` and `hivtp bench --stage serve` share: instances, batching, which server and Python."""
    parser.add_argument("--instances", type=positive_int, default=1, help="instances of each model (per GPU with --gpus)")
    parser.add_argument("--max-batch", type=positive_int, default=8, help="most requests one model execution batches")
    parser.add_argument("--queue-delay-us", type=non_negative_int, default=2000, help="how long a request may wait to be batched")
    parser.add_argument("--tritonserver", type=path, help="tritonserver binary (default: $HIVTP_TRITONSERVER, PATH, then nvidia-pytriton's)")
    parser.add_argument("--python-env", type=path, help="environment the Python backend runs (default: $HIVTP_SERVE_PYTHON_ENV, else this one)")


def comma_ints_or_zero(text: str) -> tuple[int, ...]:
    """GPU ids: integers >= 0 separated by commas."""
    return tuple(non_negative_int(part) for part in text.split(","))


def run(args: argparse.Namespace) -> None:
    import os
    from pathlib import Path

    from hivtp.demo import shipped_model
    from hivtp.runtime.triton.repository import ServeOptions, write_repository
    from hivtp.runtime.triton.serve import LaunchOptions, serve
    from hivtp.runtime.triton.server import Ports

    options = ServeOptions(
        model_dir=None if args.engine else (args.model or shipped_model("llava")), engine_dir=args.engine,
        config=config_from(args), instances=args.instances, gpus=args.gpus, max_batch=args.max_batch,
        queue_delay_us=args.queue_delay_us, max_tokens_limit=args.max_tokens_limit,
        plugin_library=args.plugin_lib or (Path(os.environ["HIVTP_PLUGIN_LIB"]) if os.environ.get("HIVTP_PLUGIN_LIB") else None),
    )
    if args.repository_only:
        write_repository(args.repository_only, options, force=args.force)
        print(f"wrote {args.repository_only}")
        return
    ports = Ports(args.http_port, args.grpc_port, args.metrics_port)
    if len(set(ports.all().values())) != 3:
        raise ValueError(f"the HTTP, gRPC and metrics ports must differ, got {ports.http}, {ports.grpc}, {ports.metrics}")
    launch = LaunchOptions(args.host, ports, args.tritonserver, args.python_env, float(args.start_timeout), options.plugin_library)
    serve(options, launch)
