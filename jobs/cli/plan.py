"""`rayfit plan SPEC`: memory per GPU, host RAM, storage, speed, wall time and cost, before any GPU is held."""

from __future__ import annotations

import json
import sys

from cluster.errors import UserError
from cluster.planner import GPUS, check_fit, find_gpu, format_plan, make_plan, suggest_changes
from cluster.planner.plan import with_changes
from cluster.spec import load_spec


def register(subparsers) -> None:
    """Add the `plan` subcommand."""
    p = subparsers.add_parser("plan", help="memory, time and cost of a spec per GPU, and whether it fits")
    p.add_argument("spec", help="path to the YAML job spec")
    p.add_argument(
        "--gpu",
        help=f"GPU model to plan for: {', '.join(g.name for g in GPUS)} (default: plan.gpu, then cluster.accelerator_type)",
    )
    p.add_argument("--gpus", type=int, help="number of GPUs, one per worker (default: cluster.num_workers)")
    p.add_argument(
        "--price-per-gpu-hour", type=float, help="price of one GPU hour, for the cost (default: plan.price_per_gpu_hour)"
    )
    p.add_argument("--dataset-tokens", type=int, help="tokens in the training set (default: counted by the data check)")
    p.add_argument(
        "--no-data", action="store_true", help="skip the data check; time and cost then need --dataset-tokens or train.max_steps"
    )
    p.add_argument("--json", action="store_true", help="print JSON for machines instead of a table")
    p.set_defaults(run=run)


def run(args) -> int:
    """Print the plan; exit 1 with the smallest change that fits when it does not fit."""
    spec = load_spec(args.spec)
    if args.gpus is not None and args.gpus < 1:
        raise UserError(f"--gpus {args.gpus}: the number of GPUs must be at least 1.")
    if args.gpu:
        find_gpu(args.gpu)  # an unknown name fails before the data check spends time
    tokens, note = args.dataset_tokens, None
    if tokens is None and not args.no_data and spec.train.max_steps is None:
        tokens, note = _count_tokens(spec)
    plan = make_plan(spec, gpu=args.gpu, num_gpus=args.gpus, price_per_gpu_hour=args.price_per_gpu_hour, dataset_tokens=tokens)
    if args.json:
        out = plan.to_json()
        out["suggestions"] = [
            {"change": c.description, "set": c.changes, "total": c.total}
            for c in (suggest_changes(plan) if plan.fits is False else [])
        ]
        out["note"] = note
        print(json.dumps(out, indent=2))
    else:
        print(format_plan(plan), end="")
        if note:
            print(f"note         {note}")
    # The advice check_fit gives, whatever plan.enforce says: the user asked whether it fits (GPU memory, the fewest
    # workers of an elastic run, host RAM for offload).
    try:
        check_fit(plan, with_changes(plan.spec, {"plan": {"enforce": True}}))
    except UserError as e:
        print(f"rayfit: {e}", file=sys.stderr)
        return 1
    return 0


def _count_tokens(spec) -> tuple[int | None, str | None]:
    """Training tokens from the data check, or None and why when the data or tokenizer cannot be read here."""
    from cluster.data import check_data
    from cluster.model.source import HUB_ID

    base = spec.model.base
    if HUB_ID.match(base) and not base.startswith((".", "/", "~")) and not _tokenizer_cached(base, spec.model.revision):
        return None, (
            f"data check skipped: the tokenizer of {base} is not in the local hub cache; pass --dataset-tokens for time and cost"
        )
    try:
        report = check_data(spec)
    except (UserError, OSError, ValueError) as e:
        return None, f"data check skipped ({str(e).splitlines()[0][:200]}); pass --dataset-tokens for time and cost"
    return report.train_tokens, f"{report.train_tokens:,} training tokens counted by the data check"


def _tokenizer_cached(repo: str, revision: str | None) -> bool:
    """Whether the hub cache holds the model's tokenizer, so the data check will not wait on the network."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "tokenizer_config.json", revision=revision), str)
