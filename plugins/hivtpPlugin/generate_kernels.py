"""Write the plugin's launcher table (hivtpKernelTableData.h + cubins/) from Triton AOT compile metadata.

    python generate_kernels.py --out-dir <cmake binary dir> [--source triton|json:<file>|empty] [--archs sm_80,...]

`triton` imports `hivtp.plugins.kernels.aot` and calls `compile_all(archs)`; every launch number in the
header (kernel name, num_warps, dynamic shared memory, parameter count with Triton's hidden scratch
pointers, constexprs, grid formula, argument names and types) is copied from those CompiledKernel
records, never typed by hand. The cubins (and the sm_80 PTX, as arch "compute_80") are written to
<out-dir>/cubins and embedded with .incbin. `json:<file>` reads records of the same fields (cubin as
hex) for host tests; `empty` writes a table with no kernels. Output goes to the build dir only.
The build fails (exit 1 with the reason) on anything the C++ launcher cannot honour: a missing
field, num_ctas != 1, a non-zero scratch requirement, an argument type with no C++ kind, fewer
params than arguments, an unknown arch name, or two records with the same (variant, arch)."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

HEADER_NAME = "hivtpKernelTableData.h"
DEFAULT_ARCHS = ("sm_80", "sm_90a", "sm_100a", "sm_120a")
# PTX of these archs is embedded too (as "compute_XY", NUL-terminated) when a record carries `ptx`:
# the driver JIT-compiles it for GPUs no cubin fits (plain sm_80 PTX is forward compatible, "a" PTX is not).
PTX_ARCHS = ("sm_80",)
ARG_KINDS = {"ptr": "kPTR", "i32": "kI32", "i64": "kI64", "fp32": "kF32"}
# Metadata names Triton uses for the per-launch scratch a kernel may need (3.3+); any non-zero -> refuse.
SCRATCH_FIELDS = ("global_scratch_size", "profile_scratch_size", "scratch_size")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class GenerateError(Exception):
    pass


@dataclass(frozen=True)
class Record:
    kernel: str
    variant: str
    arch: str
    kernel_name: str
    cubin: bytes
    num_warps: int
    num_ctas: int
    shared: int
    num_params: int
    arg_names: tuple[str, ...]
    arg_types: tuple[str, ...]
    constexprs: tuple[tuple[str, int], ...]
    scratch: tuple[tuple[str, int], ...]
    grid: str


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def _scratch(obj: Any) -> tuple[tuple[str, int], ...]:
    found = []
    metadata = _get(obj, "metadata")
    for name in SCRATCH_FIELDS:
        value = _get(obj, name)
        if value is None and metadata is not None:
            value = _get(metadata, name)
        if value is not None:
            found.append((name, int(value)))
    return tuple(found)


REQUIRED = ("kernel", "variant", "arch", "kernel_name", "cubin", "num_warps", "shared", "num_params", "arg_names",
            "arg_types", "grid")


def to_record(obj: Any) -> Record:
    """A CompiledKernel (or its JSON dict form) -> Record, with the fields the C++ table needs."""
    missing = [name for name in REQUIRED if _get(obj, name) is None]
    if missing:
        raise GenerateError(f"compiled kernel {_get(obj, 'variant')!r} lacks {missing} (aot.CompiledKernel changed?)")
    cubin = _get(obj, "cubin")
    if isinstance(cubin, str):
        cubin = bytes.fromhex(cubin)
    constexprs = _get(obj, "constexprs") or {}
    return Record(
        kernel=str(_get(obj, "kernel")),
        variant=str(_get(obj, "variant")),
        arch=str(_get(obj, "arch")),
        kernel_name=str(_get(obj, "kernel_name")),
        cubin=bytes(cubin),
        num_warps=int(_get(obj, "num_warps")),
        num_ctas=int(_get(obj, "num_ctas", 1)),
        shared=int(_get(obj, "shared")),
        num_params=int(_get(obj, "num_params")),
        arg_names=tuple(str(n) for n in _get(obj, "arg_names")),
        arg_types=tuple(str(t) for t in _get(obj, "arg_types")),
        constexprs=tuple((str(k), int(v)) for k, v in dict(constexprs).items()),
        scratch=_scratch(obj),
        grid=str(_get(obj, "grid")),
    )


def with_ptx(obj: Any, record: Record) -> list[Record]:
    """The record, plus a "compute_XY" PTX record when the compile carries forward-compatible PTX."""
    ptx = _get(obj, "ptx")
    if not ptx or record.arch not in PTX_ARCHS:
        return [record]
    text = ptx.encode() if isinstance(ptx, str) else bytes(ptx)
    return [record, replace(record, arch=record.arch.replace("sm_", "compute_"), cubin=text.rstrip(b"\0") + b"\0")]


def arg_kind(triton_type: str) -> str:
    """Triton signature type -> ArgKind enumerator ("*fp16" -> kPTR, "i32" -> kI32)."""
    key = "ptr" if triton_type.startswith("*") else triton_type
    if key not in ARG_KINDS:
        raise GenerateError(f"argument type {triton_type!r} has no C++ launcher kind (known: *T, i32, i64, fp32)")
    return ARG_KINDS[key]


def check(records: list[Record]) -> None:
    """Refuse what the C++ launcher cannot run; each message names the kernel and the value."""
    seen = set()
    for r in records:
        where = f"{r.variant}@{r.arch} ({r.kernel_name})"
        if (r.variant, r.arch) in seen:
            raise GenerateError(f"{where}: duplicate (variant, arch)")
        seen.add((r.variant, r.arch))
        if not re.fullmatch(r"sm_\d+[af]?|compute_\d+", r.arch):
            raise GenerateError(f"{where}: arch must look like sm_90a, got {r.arch!r}")
        for field, value in ((n, v) for n, v in r.scratch if v != 0):
            raise GenerateError(f"{where}: needs {field} = {value} bytes; the plugin passes no scratch")
        if r.num_ctas != 1:
            raise GenerateError(f"{where}: num_ctas = {r.num_ctas}; cluster launches are not supported")
        if r.num_warps <= 0 or r.shared < 0:
            raise GenerateError(f"{where}: bad launch metadata num_warps={r.num_warps} shared={r.shared}")
        if len(r.arg_names) != len(r.arg_types):
            raise GenerateError(f"{where}: {len(r.arg_names)} arg names but {len(r.arg_types)} arg types")
        if r.num_params < len(r.arg_names):
            raise GenerateError(f"{where}: num_params {r.num_params} < {len(r.arg_names)} runtime arguments")
        if not re.fullmatch(r"[A-Za-z0-9_(),+\-* ]+", r.grid):  # embedded in a C string literal
            raise GenerateError(f"{where}: grid {r.grid!r} is not a plain formula")
        for name in (r.kernel, r.kernel_name, *r.arg_names, *(n for n, _ in r.constexprs)):
            if not _IDENT.match(name):
                raise GenerateError(f"{where}: {name!r} is not a C identifier")
        for t in r.arg_types:
            arg_kind(t)
            if not re.fullmatch(r"\*?[a-z0-9]+", t):
                raise GenerateError(f"{where}: argument type {t!r} is not a plain Triton type")
        if not r.cubin:
            raise GenerateError(f"{where}: empty cubin")


def _file_name(index: int, r: Record) -> str:
    return f"{index:03d}_{r.variant}_{r.arch}.{'ptx' if r.arch.startswith('compute_') else 'cubin'}"


def render(records: list[Record], source: str, cubin_dir: Path) -> str:
    """The table header. Cubins are embedded with the assembler's .incbin (fast to build, no giant
    byte-array literals); each cubin's sha256 is in the text so a changed cubin recompiles the table."""
    out = [
        "// Generated by plugins/hivtpPlugin/generate_kernels.py -- do not edit, do not commit.",
        f"// Source: {source}; {len(records)} kernel(s).",
        "#pragma once",
        '#include "hivtpKernelTable.h"',
    ]
    entries = []
    for i, r in enumerate(records):
        path = cubin_dir / _file_name(i, r)
        if re.search(r'["\\\n]', str(path)):
            raise GenerateError(f"cubin path {path} has a character the assembler cannot quote")
        symbol = f"hivtp_cubin_{i}"
        out.append(f"// {r.variant} @ {r.arch}: {len(r.cubin)} bytes, sha256 {hashlib.sha256(r.cubin).hexdigest()}")
        out.append(
            f'__asm__(".section .rodata\\n.balign 16\\n.globl {symbol}\\n.hidden {symbol}\\n{symbol}:\\n'
            f'.incbin \\"{path}\\"\\n.globl {symbol}_end\\n.hidden {symbol}_end\\n{symbol}_end:\\n.previous");'
        )
        out.append(f'extern "C" unsigned char const {symbol}[], {symbol}_end[];')
    out.append("namespace hivtp::generated {")
    out.append("namespace {")
    for i, r in enumerate(records):
        args = ", ".join(f'{{"{n}", ArgKind::{arg_kind(t)}, "{t}"}}' for n, t in zip(r.arg_names, r.arg_types))
        out.append(f"KernelArg const kArgs{i}[] = {{{args or '{nullptr, ArgKind::kPTR, nullptr}'}}};")
        cexprs = ", ".join(f'{{"{n}", {v}}}' for n, v in r.constexprs)
        out.append(f"KernelConstexpr const kConstexprs{i}[] = {{{cexprs or '{nullptr, 0}'}}};")
        entries.append(
            f'    {{"{r.kernel}", "{r.variant}", "{r.arch}", "{r.kernel_name}", hivtp_cubin_{i}, {len(r.cubin)}, '
            f"{r.num_warps}, {r.num_ctas}, {r.shared}, {r.num_params}, kArgs{i}, {len(r.arg_names)}, "
            f'kConstexprs{i}, {len(r.constexprs)}, "{r.grid}"}},'
        )
    if entries:
        out.append("KernelEntry const kEntries[] = {\n" + "\n".join(entries) + "\n};")
    out.append("} // namespace")
    out.append(f"constexpr KernelEntry const* kKernelEntries = {'kEntries' if entries else 'nullptr'};")
    out.append(f"constexpr int32_t kNumKernelEntries = {len(entries)};")
    out.append(f'constexpr char const* kKernelTableSource = "{source}";')
    out.append("} // namespace hivtp::generated")
    return "\n".join(out) + "\n"


def load_records(source: str, archs: Iterable[str]) -> list[Record]:
    """CompiledKernel-like records from aot.compile_all, a JSON file, or nothing."""
    if source == "empty":
        return []
    if source.startswith("json:"):
        data = json.loads(Path(source[len("json:") :]).read_text())
        return [r for item in data for r in with_ptx(item, to_record(item))]
    if source == "triton":
        from hivtp.plugins.kernels.aot import compile_all  # the compile lives with the kernels

        return [r for k in compile_all(archs=tuple(archs)) for r in with_ptx(k, to_record(k))]
    raise GenerateError(f"unknown --source {source!r} (triton, json:<file>, empty)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--source", default="triton")
    parser.add_argument("--archs", default=",".join(DEFAULT_ARCHS))
    args = parser.parse_args(argv)
    try:
        records = load_records(args.source, [a for a in args.archs.split(",") if a])
        check(records)
    except GenerateError as e:
        print(f"generate_kernels.py: {e}", file=sys.stderr)
        return 1
    label = "json" if args.source.startswith("json:") else args.source
    out_dir = args.out_dir.resolve()
    cubin_dir = out_dir / "cubins"
    cubin_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*cubin_dir.glob("*.cubin"), *cubin_dir.glob("*.ptx")]:
        stale.unlink()
    try:
        text = render(records, label, cubin_dir)
    except GenerateError as e:
        print(f"generate_kernels.py: {e}", file=sys.stderr)
        return 1
    for i, r in enumerate(records):
        (cubin_dir / _file_name(i, r)).write_bytes(r.cubin)
    target = out_dir / HEADER_NAME
    target.write_text(text)  # always: the build's custom command compares this file's timestamp
    return 0


if __name__ == "__main__":
    sys.exit(main())
