"""`hivtp serve`: a Triton Inference Server for a checkpoint (torch flavour) or a `hivtp build` output (engines)."""

from __future__ import annotations

import argparse
from typing import Any

from hivtp.args import add_config_arguments, config_from, non_negative_int, path, positive_int, refuse_unused, seconds
from hivtp.runtime.triton.repository import ServeOptions, write_repository  # light (no torch): the defaults are the library's
from hivtp.runtime.triton.serve import LaunchOptions, serve
from hivtp.runtime.triton.server import Ports

SERVE, LAUNCH, PORTS = ServeOptions(), LaunchOptions(), Ports()


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
    parser.add_argument("--force", action="store_true", help="replace --repository-only DIR if it holds an earlier hivtp repository")
    parser.add_argument("--host", help=f"address the server binds (default: {LAUNCH.host}, loopback)")
    parser.add_argument("--http-port", type=port, help=f"HTTP port (default: {PORTS.http})")
    parser.add_argument("--grpc-port", type=port, help=f"gRPC port (default: {PORTS.grpc})")
    parser.add_argument("--metrics-port", type=port, help=f"Prometheus metrics port (default: {PORTS.metrics})")
    parser.add_argument("--gpus", type=comma_ints_or_zero, help="GPU ids for the vision and LLM instances, e.g. 0,1 (default: CPU)")
    parser.add_argument("--max-tokens-limit", type=positive_int, default=SERVE.max_tokens_limit, help="largest max_tokens a request may ask")
    add_server_arguments(parser)
    parser.add_argument("--plugin-lib", type=path, help="libhivtp_plugin.so for --engine (default: $HIVTP_PLUGIN_LIB)")
    parser.add_argument("--start-timeout", type=seconds,
                        help=f"seconds to wait for the server to be ready (default: {LAUNCH.start_timeout_s:.0f})")
    add_config_arguments(parser)
    parser.set_defaults(run=run)


SERVER_DEFAULTS = {  # dest -> (option, default) shared by `hivtp serve` and `hivtp bench --stage serve`
    "instances": ("--instances", SERVE.instances), "max_batch": ("--max-batch", SERVE.max_batch),
    "queue_delay_us": ("--queue-delay-us", SERVE.queue_delay_us),
    "tritonserver": ("--tritonserver", None), "python_env": ("--python-env", None),
}


def add_server_arguments(parser: Any) -> None:
    """Options `hivtp serve` and `hivtp bench --stage serve` share: instances, batching, which server and Python.

    Unset options stay None here (so `bench` can tell given ones from defaults); `fill_server_defaults` fills them.
    """
    parser.add_argument("--instances", type=positive_int, help=f"instances of each model, per GPU with --gpus (default: {SERVE.instances})")
    parser.add_argument("--max-batch", type=positive_int, help=f"most requests one model execution batches (default: {SERVE.max_batch})")
    parser.add_argument("--queue-delay-us", type=non_negative_int,
                        help=f"how long a request may wait to be batched (default: {SERVE.queue_delay_us})")
    parser.add_argument("--tritonserver", type=path, help="tritonserver binary (default: $HIVTP_TRITONSERVER, PATH, then nvidia-pytriton's)")
    parser.add_argument("--python-env", type=path, help="environment the Python backend runs (default: $HIVTP_SERVE_PYTHON_ENV, else this one)")


LAUNCH_DEFAULTS = {  # dest -> (option, default): what only a started server uses
    "host": ("--host", LAUNCH.host), "http_port": ("--http-port", PORTS.http), "grpc_port": ("--grpc-port", PORTS.grpc),
    "metrics_port": ("--metrics-port", PORTS.metrics), "start_timeout": ("--start-timeout", int(LAUNCH.start_timeout_s)),
}


def fill_server_defaults(args: argparse.Namespace, defaults: dict[str, tuple[str, Any]] = SERVER_DEFAULTS) -> None:
    for dest, (_, default) in defaults.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)


def check_arguments(args: argparse.Namespace) -> None:
    """Options that a run would ignore are refused (see hivtp.args.refuse_unused)."""
    config_from(args)
    if not args.engine:
        refuse_unused(args, {"plugin_lib": "--plugin-lib"}, "without --engine: only the engine flavour loads the plugin")
    if args.repository_only:
        launch = {dest: option for dest, (option, _) in LAUNCH_DEFAULTS.items()}
        refuse_unused(args, {**launch, "tritonserver": "--tritonserver", "python_env": "--python-env"},
                      "with --repository-only: no server is started")
    else:
        refuse_unused(args, {"force": "--force"}, "without --repository-only: a server's repository is always fresh")
    fill_server_defaults(args)
    fill_server_defaults(args, LAUNCH_DEFAULTS)


def comma_ints_or_zero(text: str) -> tuple[int, ...]:
    """GPU ids: integers >= 0 separated by commas."""
    return tuple(non_negative_int(part) for part in text.split(","))


def run(args: argparse.Namespace) -> None:
    check_arguments(args)
    import os
    from pathlib import Path

    from hivtp.demo import shipped_model

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
