"""`rayfit serve model=URI [KEY=VALUE ...]`: the long-running OpenAI-compatible endpoint (`serve run serve.app:build_app`)."""

from __future__ import annotations

from jobs.cli._forward import add_forwarding_parser, run_child

EPILOG = """Every KEY=VALUE is an argument of serve.app:build_app (serve/args.py: model, adapters, adapter_root,
api_keys, dtype, vllm.*, ...); options such as --address or --non-blocking go to Ray Serve's `serve run`, which this
runs as `serve run [OPTIONS] serve.app:build_app KEY=VALUE ...`.

example:
  rayfit serve model=~/rayfit-runs/demo-cpu/export
  rayfit serve model=embedded:smollm2-135m-instruct adapter_root=s3://bucket/adapters --address auto
  # then: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=...)"""


def register(subparsers) -> None:
    """Add the `serve` subcommand."""
    add_forwarding_parser(
        subparsers,
        "serve",
        usage="rayfit serve [serve run OPTIONS] model=URI [KEY=VALUE ...]",
        help="serve a model (and adapters) behind an OpenAI-compatible API with Ray Serve + vLLM",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        add_help=True,
    ).set_defaults(run=run)


def run(args) -> int:
    """Run Ray Serve's `serve run` on rayfit's app builder: options first, then the app and its KEY=VALUE args."""
    app_args = [a for a in args.forwarded if "=" in a and not a.startswith("-")]
    options = [a for a in args.forwarded if a not in app_args]
    return run_child(["-m", "ray.serve.scripts", "run", *options, "serve.app:build_app", *app_args])
