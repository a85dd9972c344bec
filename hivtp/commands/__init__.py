"""The `hivtp` subcommands: one light module each (its parser, and a `run` that imports the library).

Each module defines `add_parser(commands)`, which registers its parser on the CLI's subparsers and
sets `run`; nothing heavy (torch, transformers) is imported until that `run` is called.
"""

COMMANDS = ("generate", "build", "bench", "viz", "fidelity", "serve", "ask")
