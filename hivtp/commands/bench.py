"""`hivtp bench`: e2e (TTFT, vision, prefill, decode), vision (HIVTP's own cost), select, score and serve timings."""

from __future__ import annotations

import argparse
import os
from typing import Any

from hivtp.args import (
    CONFIG_OPTIONS, add_config_arguments, comma_ints, config_from, non_negative_int, path, positive_int, prompt, refuse_unused, seconds,
)
from hivtp.commands.serve import SERVER_DEFAULTS, add_server_arguments, fill_server_defaults
from hivtp.outputs import check_output_folder, results_dir

PRESETS = ("tiny", "llava-1.5-7b", "llava-next-7b")  # hivtp/data/configs (tiny = the demo's config)
DTYPES = ("float16", "bfloat16", "float32")
SERVE_REQUESTS, SERVE_TIME_LIMIT = 64, 120
MAX_CONCURRENCY = 1024  # client threads, each with its own gRPC stream: beyond, the client machine is what gets measured
SERVE_ONLY = {"concurrency": "--concurrency", "requests": "--requests", "time_limit": "--time-limit",
              **{dest: option for dest, (option, _) in SERVER_DEFAULTS.items()}}
MAX_REPEATS = 1000  # per row; more is a typo, not a plan
WARMUP = 2  # untimed runs per row
E2E_REPEATS, REPEATS = 20, 5  # e2e judges TTFT / bound on medians of many runs
DEFAULT_NEW_TOKENS = 16
DEFAULT_PROMPT = "describe the picture ."


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("bench", help="time vision, TTFT, decode and the select/score kernels")
    parser.add_argument(
        "--stage", choices=("e2e", "vision", "select", "score", "serve"), default="e2e",
        help="what to time: e2e (TTFT, decode), vision (stock vs floor vs hivtp vision path), select or score (the ops), "
        "serve (a Triton server on loopback, torch flavour; default model: the shipped tiny one)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=path, help="local HF LLaVA-1.5 / LLaVA-NeXT checkpoint directory")
    source.add_argument("--random-init", choices=PRESETS, help="real architecture, random weights (no download)")
    parser.add_argument("--backend", choices=("torch", "trtllm"), default="torch", help="what runs the model")
    parser.add_argument("--engine", type=path, help="TensorRT-LLM engine directory (--backend trtllm)")
    parser.add_argument(
        "--ops", choices=("auto", "reference", "triton"), default="auto",
        help="torch backend's scoring/selection: auto = Triton kernels on CUDA, the torch reference elsewhere",
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=("auto", *DTYPES), help="weights dtype (default auto: float16 on CUDA, float32 on CPU)")
    parser.add_argument("--batch", type=comma_ints,
                        help="batch sizes, e.g. 1,8 (default: 1 for e2e, 1,8 for vision, 1,8,32 for select/score)")
    parser.add_argument("--budgets", type=comma_ints, help="budgets per image (per crop for NeXT); default per model")
    parser.add_argument("--new-tokens", type=positive_int, help=f"fixed output length, e2e and serve (default: {DEFAULT_NEW_TOKENS})")
    parser.add_argument("--warmup", type=non_negative_int, default=WARMUP, help=f"untimed runs before the timed ones (at most {MAX_REPEATS})")
    parser.add_argument(
        "--repeats", type=positive_int,
        help=f"timed runs per row, medians reported (default: {E2E_REPEATS} for e2e, where TTFT / bound is judged; "
        f"{REPEATS} otherwise; vision: interleaved rounds; at most {MAX_REPEATS})",
    )
    parser.add_argument(
        "--compile", action="store_true",
        help="e2e, torch backend: prefill and decode under torch.compile on a static KV cache (CUDA graphs on CUDA) "
        "and the vision step replayed as a CUDA graph (CUDA); the first calls compile (minutes on a CPU)",
    )
    parser.add_argument("--threads", type=positive_int,
                        help="CPU threads for torch (default: the CPUs this process may use; printed with the results)")
    parser.add_argument("--image", type=path, help="image file, e2e, vision and serve (default: the bundled sample image)")
    parser.add_argument("--prompt", type=prompt, help=f"prompt of every request, e2e and serve (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--out-dir", type=path, help="folder for the JSON and PNG (default: the per-user results folder, see README)")
    serve = parser.add_argument_group("--stage serve")
    serve.add_argument("--concurrency", type=comma_ints, help=f"concurrent clients per point, at most {MAX_CONCURRENCY} (default: 1,4,16,64)")
    serve.add_argument("--requests", type=positive_int, help=f"requests per point, at least 2 x concurrency (default: {SERVE_REQUESTS})")
    serve.add_argument("--time-limit", type=seconds, help=f"seconds per point; no new request after it (default: {SERVE_TIME_LIMIT})")
    add_server_arguments(serve)
    add_config_arguments(parser)
    parser.set_defaults(run=run)


def check_serve_arguments(args: argparse.Namespace) -> None:
    """--stage serve runs a real server over a checkpoint (torch flavour); the model-timing options do not apply."""
    if args.random_init or args.backend != "torch":
        raise ValueError("--stage serve serves a checkpoint (--model DIR, default: the shipped tiny model) with the torch flavour")
    refuse_unused(args, {"engine": "--engine", "dtype": "--dtype", "device": "--device", "batch": "--batch",
                         "threads": "--threads"}, "in the serve stage: the server's own settings decide")
    if args.ops != "auto" or args.warmup != WARMUP or args.repeats is not None or args.compile:
        raise ValueError("--ops, --warmup, --repeats and --compile have no effect in the serve stage (see --requests, --time-limit)")
    if args.budget is not None:
        raise ValueError("the serve stage compares several budgets: pass --budgets K1,K2,...")
    if args.concurrency and max(args.concurrency) > MAX_CONCURRENCY:
        raise ValueError(f"--concurrency {max(args.concurrency)}: at most {MAX_CONCURRENCY} clients")
    fill_server_defaults(args)
    args.requests = args.requests or SERVE_REQUESTS
    args.time_limit = args.time_limit or SERVE_TIME_LIMIT


def check_arguments(args: argparse.Namespace) -> None:
    """Every option is used by the run it is given to, and every size is sane, before a model is built."""
    config_from(args)  # the HIVTP options on their own (ValueError names the bad one)
    if args.stage == "serve":
        check_serve_arguments(args)
    else:
        refuse_unused(args, SERVE_ONLY, f"in the {args.stage} stage: it is an option of --stage serve")
        check_model_arguments(args)
    args.new_tokens = args.new_tokens or DEFAULT_NEW_TOKENS
    args.prompt = args.prompt if args.prompt is not None else DEFAULT_PROMPT
    args.out_dir = check_output_folder(args.out_dir or results_dir("bench"), "--out-dir")


def check_model_arguments(args: argparse.Namespace) -> None:
    """The e2e, select and score stages: the backend, the stage's own options, repeats and threads."""
    if args.backend == "trtllm":
        if args.stage != "e2e":
            raise ValueError("--backend trtllm times the e2e stage only; select/score time the torch and Triton paths")
        if not args.engine:
            raise ValueError("--backend trtllm needs --engine DIR (a TensorRT-LLM engine folder)")
        refuse_unused(args, {"model": "--model", "random_init": "--random-init", "budgets": "--budgets", "dtype": "--dtype",
                             **CONFIG_OPTIONS}, "with --backend trtllm: the engine fixes the model, precision and pruning")
        if args.ops != "auto":
            raise ValueError("--ops has no effect with --backend trtllm: the engine runs the hivtp plugins")
    else:
        if not (args.model or args.random_init):
            raise ValueError("pass --model DIR (a checkpoint) or --random-init tiny|llava-1.5-7b|llava-next-7b")
        refuse_unused(args, {"engine": "--engine"}, "with --backend torch (pass --backend trtllm)")
    if args.compile and (args.backend != "torch" or args.stage != "e2e"):
        raise ValueError("--compile applies to the torch backend's e2e stage (an engine is compiled by hivtp build)")
    if args.stage == "vision":
        refuse_unused(args, {"new_tokens": "--new-tokens", "budgets": "--budgets", "prompt": "--prompt"},
                      "in the vision stage: it times the vision path alone (use --budget for a budget)")
    elif args.stage != "e2e":
        refuse_unused(args, {"new_tokens": "--new-tokens", "budgets": "--budgets", "image": "--image", "prompt": "--prompt"},
                      f"in the {args.stage} stage: it times the op alone on random inputs (use --budget for select)")
        if args.ops != "auto":
            raise ValueError(f"--ops has no effect in the {args.stage} stage: it times the reference and, on CUDA, the kernel")
    if args.stage == "e2e" and args.budget is not None:
        if args.budgets is not None:
            raise ValueError("pass --budgets K1,K2,... or --budget K, not both")
        args.budgets, args.budget = (args.budget,), None  # one budget row beside full and paper
    args.repeats = args.repeats or (E2E_REPEATS if args.stage == "e2e" else REPEATS)
    if max(args.warmup, args.repeats) > MAX_REPEATS:
        raise ValueError(f"--warmup / --repeats: at most {MAX_REPEATS} runs per row")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if args.threads and args.threads > cpus:
        raise ValueError(f"--threads {args.threads}: this process may use {cpus} CPUs; more threads only add noise")
    args.threads = args.threads or cpus


def run(args: argparse.Namespace) -> None:
    check_arguments(args)
    if args.stage == "serve":
        from hivtp.runtime.triton.bench import run_serve_bench

        run_serve_bench(args)
        return
    import torch

    from hivtp.bench_e2e import run_e2e
    from hivtp.bench_kernels import run_kernels
    from hivtp.bench_vision import run_vision

    torch.set_num_threads(args.threads)
    {"e2e": run_e2e, "vision": run_vision}.get(args.stage, run_kernels)(args)
