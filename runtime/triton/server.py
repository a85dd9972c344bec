"""Start, watch and stop a real `tritonserver` process on loopback for a hivtp model repository.

Where the server comes from: `--tritonserver PATH`, else $HIVTP_TRITONSERVER, else `tritonserver` on
PATH (the Triton containers: /opt/tritonserver/bin), else the binary the `nvidia-pytriton` wheel bundles
(Triton 2.51, CPU capable). With the wheel, the Python backend's stub for the serving Python is linked
into a staged backend directory (the wheel ships stubs per Python version beside, not inside, it); a
symlink keeps the stub's RPATH ($ORIGIN/../../../../nvidia_pytriton.libs) pointing at the wheel.

Facts this module relies on, measured with that wheel (README "Serve"):
- the stub runs the first `python3` on PATH in isolated mode, so PATH carries the serving environment;
- its pybind11 reads numpy's pre-2.0 ABI: under numpy 2 it corrupts TYPE_STRING tensors (the stub
  aborts), so the serving environment needs numpy < 2 (checked before start, one line if not);
- a killed stub leaves its model READY while every request fails, and the server then takes its whole
  exit timeout to stop and leaves the stub's /dev/shm region: the watcher counts the stubs, restarts the
  server when one is gone, and every stop kills the process group and removes this server's regions
  (they carry a prefix unique to it).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

STUB = "triton_python_backend_stub"
HARMLESS = re.compile(r"cuda|NVML|DCGM", re.IGNORECASE)  # a CPU-only machine's log lines
SHM_DIR = Path("/dev/shm")
READY_MISSES = 6  # consecutive failed readiness polls before a restart
EXIT_TIMEOUT_S = 5  # the server's own graceful-exit wait; then the process group is killed


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    def all(self) -> dict[str, int]:
        return {"HTTP": self.http, "gRPC": self.grpc, "metrics": self.metrics}


def free_ports(host: str) -> Ports:
    """Three ports nobody listens on now (the OS picks them); for benchmarks and tests."""
    sockets = [socket.socket() for _ in range(3)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return Ports(*(s.getsockname()[1] for s in sockets))
    finally:
        for s in sockets:
            s.close()


def check_ports_free(host: str, ports: Ports) -> None:
    """One line naming the first port someone already listens on (a second `hivtp serve`, another server),
    or the host when it is no IPv4 address of this machine (an empty one would listen on every interface)."""
    if not isinstance(host, str) or not host.strip():
        raise ValueError(f"host {host!r} is empty: pass an address such as 127.0.0.1 (0.0.0.0 listens on every interface)")
    for label, port in ports.all().items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except (socket.gaierror, UnicodeError, TypeError) as err:  # TypeError: a name Python cannot encode
                reason = getattr(err, "strerror", None) or str(err)
                raise ValueError(f"host {host!r} is not an IPv4 address or a name this machine resolves ({reason})") from None
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    raise ValueError(f"{label} port {host}:{port} is busy ({err.strerror}): "
                                     "stop what listens there or pick another port") from None
                raise ValueError(f"cannot listen on {host}:{port} ({err.strerror}): "
                                 "pass an IPv4 address of this machine, e.g. 127.0.0.1") from None


def pytriton_root() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    return root if (root / "bin" / "tritonserver").is_file() else None


def find_tritonserver(explicit: str | Path | None = None) -> Path:
    chosen = explicit or os.environ.get("HIVTP_TRITONSERVER") or shutil.which("tritonserver")
    if chosen:
        path = Path(chosen)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ValueError(f"tritonserver not found or not executable: {path}")
        return path.resolve()
    root = pytriton_root()
    if root is None:
        raise ValueError(
            "no tritonserver found: run inside a Triton container, pass --tritonserver PATH, or "
            "pip install --no-deps nvidia-pytriton==0.7.0 (a CPU-capable Triton 2.51; see README 'Serve')"
        )
    return root / "bin" / "tritonserver"


def python_env_version(python_env: Path) -> tuple[str, str]:
    """(Python major.minor, numpy version) of the environment the stub will run."""
    python = python_env / "bin" / "python3"
    if not python.is_file():
        raise ValueError(f"{python_env} is not a Python environment (no bin/python3)")
    code = "import sys, numpy; print(f'{sys.version_info[0]}.{sys.version_info[1]}', numpy.__version__)"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ValueError(f"{python} cannot import numpy: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    version, numpy_version = done.stdout.split()
    return version, numpy_version


def backend_directory(server: Path, python_env: Path, stage: Path) -> Path:
    """The server's backends, with the Python stub for python_env staged in when the wheel's server is used."""
    root = server.parent.parent
    backends = root / "backends"
    stubs = root / "python_backend_stubs"
    if not stubs.is_dir():
        return backends  # a Triton container: the stub sits in backends/python already
    version, numpy_version = python_env_version(python_env)
    if int(numpy_version.split(".")[0]) >= 2:
        raise ValueError(
            f"{python_env} has numpy {numpy_version}; the Python backend stub of Triton 2.51 (nvidia-pytriton) "
            "needs numpy < 2: pass --python-env DIR with numpy<2 (README 'Serve')"
        )
    stub = stubs / version / STUB
    if not stub.is_file():
        raise ValueError(f"nvidia-pytriton has no Python backend stub for Python {version} ({stub})")
    python = stage / "backends" / "python"
    python.mkdir(parents=True)
    for item in (backends / "python").iterdir():
        if item.is_file():
            (python / item.name).symlink_to(item)
    (python / STUB).symlink_to(stub)
    return stage / "backends"


@dataclass
class ServerCommand:
    argv: list[str]
    env: dict[str, str]
    shm_prefix: str


def server_command(
    server: Path, repository: Path, backends: Path, host: str, ports: Ports, python_env: Path,
    extra_backend_config: tuple[str, ...] = (),
) -> ServerCommand:
    """The tritonserver command line (one rank); the shm prefix is unique to this server."""
    prefix = f"hivtp_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
    argv = [
        str(server), f"--model-repository={repository}", f"--backend-directory={backends}",
        f"--http-address={host}", f"--http-port={ports.http}", f"--grpc-address={host}", f"--grpc-port={ports.grpc}",
        f"--metrics-address={host}", f"--metrics-port={ports.metrics}", "--allow-gpu-metrics=false",
        "--disable-auto-complete-config", "--strict-readiness=true", f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        f"--backend-config=python,shm-region-prefix-name={prefix}", "--log-verbose=0",
        *[f"--backend-config={item}" for item in extra_backend_config],
    ]
    env = dict(os.environ)
    env["PATH"] = f"{python_env / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # the stub runs the first python3 on PATH
    env.pop("PYTHONPATH", None)
    return ServerCommand(argv, env, prefix)


def terminate_with_parent() -> None:
    """In the child before exec: SIGTERM it if hivtp dies without stopping it (even by SIGKILL). Linux prctl."""
    import ctypes

    PR_SET_PDEATHSIG = 1  # linux/prctl.h
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def http_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/v2/health/ready", timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def processes() -> list[tuple[int, str, str, int, int]]:
    """(pid, name, state, ppid, process group) of every process, from /proc/<pid>/stat."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        found.append((int(entry.name), name, state, int(ppid), int(pgrp)))
    return found


def children(pid: int) -> list[tuple[int, str, str]]:
    """(pid, name, state) of every direct child of pid."""
    return [(child, name, state) for child, name, state, ppid, _ in processes() if ppid == pid]


def live_stubs(pid: int) -> int:
    return sum(1 for _, name, state in children(pid) if name.startswith(STUB[:15]) and state != "Z")


class TritonServer:
    """One tritonserver process group: start, wait ready, watch its stubs, restart, stop without leftovers."""

    def __init__(self, command: ServerCommand, host: str, ports: Ports, log_path: Path, expected_stubs: int) -> None:
        self.command, self.host, self.ports, self.log_path = command, host, ports, log_path
        self.expected_stubs = expected_stubs
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_misses = 0
        self.log_offset = 0

    def start(self, timeout_s: float) -> None:
        """Start and wait until ready with every stub up. Each start gets shared-memory names of its own (a fresh
        suffix after the server's prefix): a restart never meets a region a killed stub left in use."""
        fresh = f"{self.command.shm_prefix}{uuid.uuid4().hex[:6]}_"
        argv = [arg.replace(self.command.shm_prefix, fresh) for arg in self.command.argv]
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.ready_misses = 0
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            argv, env=self.command.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the stubs go down with it
            preexec_fn=terminate_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise ValueError(f"tritonserver exited during start-up: {self.log_reason()}")
            if http_ready(self.host, self.ports.http) and live_stubs(self.process.pid) >= self.expected_stubs:
                return
            time.sleep(0.25)
        self.stop()
        raise ValueError(f"tritonserver was not ready after {timeout_s:.0f} s: {self.log_reason()}")

    def log_reason(self) -> str:
        """The most telling line of the server log: its first error that is not about a missing GPU."""
        with open(self.log_path, "rb") as log:
            log.seek(self.log_offset)  # this start's lines only
            lines = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if (line.startswith("E") or "error" in line.lower()) and not HARMLESS.search(line)]
        return ((errors or lines or ["(empty log)"])[0])[:400] + f" (log: {self.log_path})"

    def healthy(self) -> bool:
        """Server alive and every Python stub still running (a dead stub leaves its model READY); readiness
        must fail READY_MISSES polls in a row to count, so a server busy under load is not restarted."""
        if self.process is None or self.process.poll() is not None:
            return False
        if live_stubs(self.process.pid) < self.expected_stubs:
            return False
        self.ready_misses = 0 if http_ready(self.host, self.ports.http) else self.ready_misses + 1
        return self.ready_misses < READY_MISSES

    def restart(self, timeout_s: float, attempts: int = 3) -> None:
        """Stop, then start again; a start that fails (a machine under load) is retried, attempts in all."""
        self.stop()
        for attempt in range(attempts):
            try:
                self.start(timeout_s)
                return
            except ValueError:
                if attempt == attempts - 1:
                    raise
                time.sleep(1.0)

    def stop(self) -> None:
        """SIGTERM, the server's exit timeout, then SIGKILL to the whole group; then this server's shm regions."""
        process, self.process = self.process, None
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=EXIT_TIMEOUT_S + 3)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
            try:
                os.killpg(process.pid, signal.SIGKILL)  # stubs left behind, or a server stuck in its exit wait
            except ProcessLookupError:
                pass
            process.wait()
            wait_group_gone(process.pid)
        remove_shm(self.command.shm_prefix)


def wait_group_gone(pgid: int, timeout_s: float = 10.0) -> None:
    """Until no live process of process group pgid is left (SIGKILL is delivered asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(g == pgid and state != "Z" for _, _, state, _, g in processes()):
        time.sleep(0.1)


def remove_shm(prefix: str) -> None:
    for region in SHM_DIR.glob(f"{prefix}*"):
        region.unlink(missing_ok=True)


def watch(server: TritonServer, stop: list[bool], start_timeout_s: float, poll_s: float = 0.5, say=print) -> None:
    """Until stop[0] is set: check health every poll_s and restart the server when it is not healthy."""
    while not stop[0]:
        time.sleep(poll_s)
        if stop[0]:
            return
        if not server.healthy():
            say("hivtp serve: a server process died (backend stub or tritonserver); restarting the server", file=sys.stderr)
            server.restart(start_timeout_s)
            say("hivtp serve: serving again", file=sys.stderr)
