"""`hivtp serve`: write the repository, start tritonserver on loopback, print the endpoints, watch, stop cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from contextlib import contextmanager
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hivtp.runtime.triton.repository import ENSEMBLE, ServeOptions, python_instances, write_repository
from hivtp.runtime.triton.server import (
    Ports, TritonServer, backend_directory, check_ports_free, find_tritonserver, server_command, watch,
)


@dataclass(frozen=True)
class LaunchOptions:
    host: str = "127.0.0.1"
    ports: Ports = Ports()
    tritonserver: Path | None = None
    python_env: Path | None = None  # the environment the Python backend stub runs (default: this one)
    start_timeout_s: float = 300.0
    plugin_library: Path | None = None  # engine flavour: loaded by the TensorRT backend


def serving_env() -> Path:
    """The environment the Python backend stub runs: $HIVTP_SERVE_PYTHON_ENV, else this interpreter's."""
    chosen = os.environ.get("HIVTP_SERVE_PYTHON_ENV")
    return Path(chosen) if chosen else Path(sys.prefix)


class Stop(Exception):
    """SIGTERM, turned into the same clean stop as Ctrl-C."""


@contextmanager
def stop_on_signals() -> Iterator[list[bool]]:
    flag = [False]

    def handler(signum: int, frame: object) -> None:
        if flag[0]:
            return  # already stopping: let the clean-up finish
        flag[0] = True
        raise Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def running_server(options: ServeOptions, launch: LaunchOptions, work: Path) -> Iterator[TritonServer]:
    """A started, ready server for `options` in scratch folder `work`; stopped (no processes, no shm) on exit."""
    check_ports_free(launch.host, launch.ports)
    server_binary = find_tritonserver(launch.tritonserver)
    python_env = launch.python_env or serving_env()
    repository = work / "repository"
    models = write_repository(repository, options)
    backends = backend_directory(server_binary, python_env, work)
    extra: tuple[str, ...] = ()
    if options.flavour == "engine":
        missing = [name for name in ("tensorrt", "tensorrtllm") if not (backends / name).is_dir()]
        if missing:
            raise ValueError(f"the engine flavour needs Triton's {' and '.join(missing)} backend(s), absent from {backends}: "
                             "run it in a TensorRT-LLM Triton container, or write the repository with --repository-only")
        if launch.plugin_library is None:
            raise ValueError("the vision engine needs the hivtp plugin library: pass --plugin-lib PATH or set HIVTP_PLUGIN_LIB")
        extra = (f"tensorrt,plugins={launch.plugin_library}",)  # tensorrt_backend README, "Command-line Options"
    command = server_command(server_binary, repository, backends, launch.host, launch.ports, python_env, extra)
    if options.flavour == "engine":
        from hivtp.runtime.triton.engine_repository import engine_facts, leader_mode_command

        command.argv = leader_mode_command(command.argv, engine_facts(options.engine_dir.resolve())["tp_size"])
    server = TritonServer(command, launch.host, launch.ports, work / "tritonserver.log", python_instances(models, options))
    try:
        server.start(launch.start_timeout_s)
        yield server
    finally:
        server.stop()


def endpoints(launch: LaunchOptions) -> str:
    host, ports = launch.host, launch.ports
    return (
        f"  gRPC      {host}:{ports.grpc}   (model '{ENSEMBLE}'; streaming: ModelStreamInfer)\n"
        f"  HTTP      http://{host}:{ports.http}/v2/models/{ENSEMBLE}/generate   (SSE: /generate_stream)\n"
        f"  metrics   http://{host}:{ports.metrics}/metrics\n"
        f"  ask       hivtp ask --url {host}:{ports.grpc} --image IMAGE --prompt TEXT [--stream] [--budget K]"
    )


def serve(options: ServeOptions, launch: LaunchOptions) -> None:
    """Serve until Ctrl-C or SIGTERM; a dead backend stub or server is detected and the server restarted."""
    work = Path(tempfile.mkdtemp(prefix="hivtp-serve-"))
    failed = True
    try:
        with stop_on_signals() as stopping:
            try:
                with running_server(options, launch, work) as server:
                    print(f"hivtp serve: {options.flavour} flavour, {options.instances} instance(s) per model, ready", flush=True)
                    print(endpoints(launch), flush=True)
                    watch(server, stopping, launch.start_timeout_s)
            except Stop:
                pass
        print("hivtp serve: stopped", flush=True)
        failed = False
    finally:
        log = work / "tritonserver.log"
        keep = failed and log.is_file()  # a server that failed keeps the log its error message points to
        for item in work.iterdir():
            if not (keep and item == log):
                shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        if not keep:
            work.rmdir()
