"""`hivtp ask`: one question about one image to a running `hivtp serve` (gRPC; streamed with --stream)."""

from __future__ import annotations

import argparse
import re
from typing import Any

from hivtp.args import path, positive_int, prompt, seconds


def url(text: str) -> str:
    """HOST:PORT (no scheme: the client speaks gRPC)."""
    if not re.fullmatch(r"[A-Za-z0-9.\-]+:\d{1,5}|\[[0-9A-Fa-f:]+\]:\d{1,5}", text) or not 0 < int(text.rsplit(":", 1)[1]) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. 127.0.0.1:8001, got {text!r}")
    return text


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("ask", help="ask a running `hivtp serve` about an image (gRPC)")
    parser.add_argument("--url", type=url, default="127.0.0.1:8001", help="the server's gRPC HOST:PORT")
    parser.add_argument("--image", type=path, help="image file (default: the bundled sample image)")
    parser.add_argument("--prompt", type=prompt, default="what color is the circle ?", help="question about the image")
    parser.add_argument("--stream", action="store_true", help="print the answer token by token as it is generated")
    parser.add_argument("--budget", type=positive_int, help="visual tokens kept per image (per crop for NeXT); default: the server's")
    parser.add_argument("--pruning-mode", choices=("paper", "budget", "none"), help="override the server's default pruning")
    parser.add_argument("--max-new-tokens", type=positive_int, default=16, help="most tokens to generate")
    parser.add_argument("--timeout", type=seconds, default=120, help="seconds to wait for the answer")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    if args.budget is not None and args.pruning_mode in ("paper", "none"):
        raise ValueError(f"--budget has no effect with --pruning-mode {args.pruning_mode}")
    if args.pruning_mode == "budget" and args.budget is None:
        raise ValueError("--pruning-mode budget needs --budget K")
    import sys

    from hivtp.demo import sample_image_path
    from hivtp.runtime.triton.client import GrpcSession, Question, read_image_bytes

    question = Question(
        read_image_bytes(args.image or sample_image_path()), args.prompt, args.max_new_tokens, args.budget,
        args.pruning_mode, args.stream,
    )
    try:
        session = GrpcSession(args.url, float(args.timeout))
    except Exception as err:  # tritonclient raises its own types for a bad address
        raise ValueError(f"cannot connect to {args.url}: {err}") from None
    try:
        started = [False]

        def show(piece: str) -> None:
            print(piece if started[0] else piece.lstrip(), end="", flush=True)
            started[0] = True

        reply = session.ask(question, show if args.stream else None)
    finally:
        session.close()
    if args.stream:
        print()
    else:
        print(f"answer: {reply.text}")
    print(f"TTFT: {reply.ttft_s * 1e3:.1f} ms, latency: {reply.latency_s * 1e3:.1f} ms (client side)", file=sys.stderr)
