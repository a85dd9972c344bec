"""Ahead-of-time compilation of the HIVTP Triton kernels into cubins for the TensorRT plugin.

The kernel signature contract is written once, here: for every kernel, its runtime parameters in
order with their Triton types, the variants (element type and constexprs), launch options and
grid. `compile_all` turns it into `CompiledKernel` records; the C++ plugin embeds their cubins and
generates its launcher table from the same records, so nothing below is retyped on the C++ side.
See README.md in this folder for the launch contract (hidden parameters, grids, workspace).

Works without a GPU: `triton.compile` is given an explicit `GPUTarget`, and the cubin comes from
the ptxas bundled with triton (or TRITON_PTXAS_PATH). Run it without TRITON_INTERPRET=1 (the
interpreter replaces the kernels' JITFunctions):
    python -m hivtp.plugins.kernels.aot OUT_DIR [--arch sm_90a ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import sm_arch_from_capability
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

from hivtp.plugins.kernels import score as score_mod
from hivtp.plugins.kernels import select as select_mod

ARCHS = ("sm_80", "sm_90a", "sm_100a", "sm_120a")
# Appended by triton 3.5.1's CUDA launcher (backends/nvidia/driver.py, make_launcher) after the
# kernel's own parameters; both sizes are 0 for every kernel here, so the plugin passes null pointers.
HIDDEN_PARAMS = ("global_scratch", "profile_scratch")
POINTER_ALIGN = 16  # every pointer argument is promised 16-byte aligned (tt.divisibility)
SCORE_HEAD_DIMS = (16, 64)  # the tiny test tower, CLIP ViT-L/14 (any N: the kernel streams key tiles)
SELECT_BLOCKS = (64, 256, 1024)  # BLOCK_P: 8x8, 16x16, and up to 32x32 patch grids
FLOAT_TYPES = ("fp16", "bf16", "fp32")


@dataclass(frozen=True)
class Variant:
    """One compiled instance of a kernel: `{T}` in the parameter types becomes `element`."""

    name: str
    element: str
    constexprs: tuple[tuple[str, int], ...]
    num_warps: int  # the launcher's own choice, imported from the kernel module
    num_stages: int = 1  # software pipelining: only score's key-tile loop uses it


@dataclass(frozen=True)
class KernelContract:
    """A kernel's AOT signature: runtime parameters in kernel order, then what one program covers."""

    kernel: str
    fn: JITFunction
    params: tuple[tuple[str, str], ...]  # (name, Triton type); constexprs are not parameters
    grid: str
    variants: tuple[Variant, ...]


@dataclass(frozen=True)
class CompiledKernel:
    """One cubin and everything needed to launch it with cuLaunchKernel (all read from compile metadata).

    num_params counts the kernel's parameters as the cubin declares them: the runtime arguments
    (arg_names, in order) followed by the HIDDEN_PARAMS pointers.
    """

    kernel: str  # contract name: "score", "score_reduce", "select", "gather"
    variant: str  # unique across all kernels, e.g. "score_fp16_d64_n1024"
    arch: str  # "sm_80", "sm_90a", ...
    cubin: bytes
    ptx: str  # the same kernel as PTX, for a driver JIT fallback on archs without a cubin
    kernel_name: str  # entry symbol for cuModuleGetFunction
    num_warps: int  # block = (32 * num_warps, 1, 1)
    num_ctas: int
    shared: int  # dynamic shared memory bytes for cuLaunchKernel
    num_params: int
    global_scratch_size: int  # bytes; always 0 (compile_kernel refuses others), kept so consumers can check
    profile_scratch_size: int  # bytes; always 0, likewise
    arg_names: tuple[str, ...]
    arg_types: tuple[str, ...]  # Triton types: *fp16, *i64, i32, fp32, ...
    constexprs: tuple[tuple[str, int], ...]
    grid: str


def _score_variants() -> tuple[Variant, ...]:
    return tuple(
        Variant(f"score_{t}_d{d}", t, (("HEAD_DIM", d), ("BLOCK_D", score_mod.score_block_d(d)),
                                       ("BLOCK_M", score_mod.BLOCK_M), ("BLOCK_N", score_mod.BLOCK_N)),
                score_mod.NUM_WARPS[t], score_mod.NUM_STAGES)
        for t in FLOAT_TYPES for d in SCORE_HEAD_DIMS
    )


CONTRACTS = (
    KernelContract(
        "score", score_mod.score_kernel,
        (("q_ptr", "*{T}"), ("k_ptr", "*{T}"), ("partial_ptr", "*fp32"), ("L", "i32"), ("H", "i32"), ("N", "i32"),
         ("scale", "fp32"), ("stride_ql", "i32"), ("stride_qb", "i32"), ("stride_qh", "i32"), ("stride_qn", "i32"),
         ("stride_kl", "i32"), ("stride_kb", "i32"), ("stride_kh", "i32"), ("stride_kn", "i32")),
        "(cdiv(N, BLOCK_M), L * H, B)", _score_variants(),
    ),
    KernelContract(
        "score_reduce", score_mod.score_reduce_kernel,
        (("partial_ptr", "*fp32"), ("out_ptr", "*fp32"), ("R", "i32"), ("N", "i32"), ("count", "fp32")),
        "(cdiv(N - 1, BLOCK), B, 1)",
        (Variant("score_reduce", "fp32", (("BLOCK", score_mod.BLOCK_REDUCE), ("BLOCK_R", score_mod.BLOCK_R)),
                 score_mod.REDUCE_WARPS),),
    ),
    KernelContract(
        "select", select_mod.select_kernel,
        (("scores_ptr", "*fp32"), ("region_of_ptr", "*i32"), ("region_start_ptr", "*i32"),
         ("region_quota_ptr", "*i32"), ("window_of_ptr", "*i32"), ("window_start_ptr", "*i32"),
         ("indices_ptr", "*i64"), ("counts_ptr", "*i64"), ("stages_ptr", "*i64"),
         ("P", "i32"), ("KMAX", "i32"), ("IS_BUDGET", "i32"), ("stride_sb", "i32")),
        "(B, 1, 1)",
        tuple(Variant(f"select_p{p}", "fp32", (("BLOCK_P", p),), select_mod.select_warps(p)) for p in SELECT_BLOCKS),
    ),
    KernelContract(
        "gather", select_mod.gather_kernel,
        (("features_ptr", "*{T}"), ("indices_ptr", "*i64"), ("gathered_ptr", "*{T}"), ("D", "i32"), ("KMAX", "i32"),
         ("stride_fb", "i32"), ("stride_fp", "i32")),
        "(cdiv(KMAX, BLOCK_K), cdiv(D, BLOCK_D), B)",
        tuple(Variant(f"gather_b{bits}", f"i{bits}", (("BLOCK_K", select_mod.BLOCK_K), ("BLOCK_D", select_mod.BLOCK_D)),
                      select_mod.GATHER_WARPS) for bits in (16, 32)),
    ),
)


def capability(arch: str) -> int:
    """"sm_90a" -> 90. Triton 3.5.1 emits the arch-specific "a" target for every cc >= 90, so only those names exist."""
    match = re.fullmatch(r"sm_(\d+)a?", arch)
    if match is None or sm_arch_from_capability(int(match.group(1))) != arch:
        raise ValueError(f"unsupported arch {arch!r}: expected sm_80-style below 90 and sm_90a-style from 90 up")
    return int(match.group(1))


def compile_kernel(contract: KernelContract, variant: Variant, arch: str) -> CompiledKernel:
    """Compile one variant for one arch; refuse any kernel that needs global or profile scratch."""
    if not isinstance(contract.fn, JITFunction):
        kind = type(contract.fn).__name__
        raise RuntimeError(f"{contract.kernel} is a {kind}: run the AOT compile without TRITON_INTERPRET=1")
    constexprs = dict(variant.constexprs)
    types = {name: ty.replace("{T}", variant.element) for name, ty in contract.params}
    if [a for a in contract.fn.arg_names if a not in constexprs] != list(types):
        raise ValueError(f"{contract.kernel}: contract params {list(types)} differ from {contract.fn.arg_names}")
    signature = {a: types.get(a, "constexpr") for a in contract.fn.arg_names}
    aligned = {(i,): [["tt.divisibility", POINTER_ALIGN]] for i, a in enumerate(contract.fn.arg_names)
               if signature[a].startswith("*")}
    compiled = triton.compile(
        ASTSource(fn=contract.fn, signature=signature, constexprs=constexprs, attrs=aligned),
        target=GPUTarget("cuda", capability(arch), 32),
        options={"num_warps": variant.num_warps, "num_stages": variant.num_stages},
    )
    meta = compiled.metadata
    if meta.global_scratch_size or meta.profile_scratch_size:
        raise RuntimeError(f"{variant.name} on {arch} needs scratch memory (global {meta.global_scratch_size} B, "
                           f"profile {meta.profile_scratch_size} B); the plugin launches kernels without it")
    return CompiledKernel(
        kernel=contract.kernel, variant=variant.name, arch=arch, cubin=compiled.asm["cubin"], ptx=compiled.asm["ptx"],
        kernel_name=meta.name, num_warps=meta.num_warps, num_ctas=meta.num_ctas, shared=meta.shared,
        num_params=len(types) + len(HIDDEN_PARAMS), global_scratch_size=meta.global_scratch_size,
        profile_scratch_size=meta.profile_scratch_size, arg_names=tuple(types), arg_types=tuple(types.values()),
        constexprs=variant.constexprs, grid=contract.grid,
    )


def compile_all(archs: tuple[str, ...] = ARCHS) -> list[CompiledKernel]:
    """Every variant of every kernel for every arch, in contract order (kernel, variant, arch)."""
    return [compile_kernel(c, v, arch) for c in CONTRACTS for v in c.variants for arch in archs]


def write_bundle(kernels: list[CompiledKernel], out_dir: Path) -> Path:
    """<variant>.<arch>.cubin / .ptx files plus kernels.json (every other field): what the plugin build reads."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for k in kernels:
        stem = f"{k.variant}.{k.arch}"
        (out_dir / f"{stem}.cubin").write_bytes(k.cubin)
        (out_dir / f"{stem}.ptx").write_text(k.ptx)
        fields = {f.name: getattr(k, f.name) for f in dataclasses.fields(k) if f.name not in ("cubin", "ptx")}
        entries.append(fields | {"cubin": f"{stem}.cubin", "ptx": f"{stem}.ptx"})
    manifest = {"triton_version": triton.__version__, "hidden_params": list(HIDDEN_PARAMS),
                "pointer_align": POINTER_ALIGN, "kernels": entries}
    path = out_dir / "kernels.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compile the HIVTP Triton kernels to cubins (no GPU needed).")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--arch", action="append", help=f"repeatable; default: {' '.join(ARCHS)}")
    args = parser.parse_args(argv)
    try:
        archs = tuple(args.arch or ARCHS)
        for arch in archs:
            capability(arch)
    except ValueError as e:
        print(e)
        return 2
    print(write_bundle(compile_all(archs), args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
