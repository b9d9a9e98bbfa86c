"""`rayfit ask MODEL_URI "prompt"`: serve a model on this machine, ask it one question, shut down (serve/ask.py)."""

from __future__ import annotations

from jobs.cli._forward import add_forwarding_parser, run_child

EPILOG = """All arguments and --help are those of `python -m serve.ask`, which this runs.

example:
  rayfit ask ~/rayfit-runs/demo-cpu/export "What is a bygglov?"
  rayfit ask embedded:smollm2-135m-instruct "Hello" --adapter faq=~/rayfit-runs/demo-cpu/checkpoint_00000060"""


def register(subparsers) -> None:
    """Add the `ask` subcommand."""
    add_forwarding_parser(
        subparsers,
        "ask",
        usage="rayfit ask MODEL_URI PROMPT [--adapter NAME=URI ...] [--model NAME] (see --help)",
        help="serve a model locally, ask it one question through the OpenAI client, print the answer",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        add_help=False,  # --help goes to serve.ask, whose parser defines the arguments
    ).set_defaults(run=run)


def run(args) -> int:
    """Run `python -m serve.ask` with the arguments given."""
    return run_child(["-m", "serve.ask", *args.forwarded])
