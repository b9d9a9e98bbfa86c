"""`rayfit data pairs SPEC --source SFT_DATA`: on-policy DPO pairs (chosen = reference, rejected = the model's answer).

The model is SPEC's starting model (model.init_from, e.g. the SFT export, else model.base); generation runs as Ray
Data batch inference on the cluster (RAY_ADDRESS, a running local Ray, or a new local one). The pairs go to --out
(default: SPEC's first data.train path, so the DPO spec reads them unchanged), with OUT.report.json beside them.
"""

from __future__ import annotations

import os

from cluster.spec import load_spec


def add_pairs_action(sub) -> None:
    """Add `pairs` to the `rayfit data` actions."""
    p = sub.add_parser("pairs", help="build on-policy preference pairs from SFT data with the spec's starting model")
    p.add_argument("spec", help="the DPO job spec (YAML); its model.init_from or model.base generates")
    p.add_argument("--source", required=True, help="SFT data: a file, folder or URI, or embedded:construction-faq")
    p.add_argument("--out", help="where the pairs go (JSON Lines); default: the spec's first data.train path")
    p.add_argument("--max-new-tokens", type=int, default=96, help="generation length of the rejected answers")
    p.add_argument("--limit", type=int, help="use only the first N SFT rows")
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster address (default: RAY_ADDRESS, else a running local Ray, else a new local one); "
        "'local' always starts a new local Ray",
    )
    p.set_defaults(run=run_pairs)


def run_pairs(args) -> int:
    """Generate, write the pairs and their report, and print the report."""
    import ray

    from cluster.data.pairs import build_pairs

    spec = load_spec(args.spec)
    out = args.out or spec.data.train[0].path
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    if args.address not in (None, "local"):
        ray.init(address=args.address)
    elif args.address is None:
        try:
            ray.init(address="auto")
        except ConnectionError:  # no running cluster: this machine alone
            pass
    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False)
    report = build_pairs(spec, args.source, os.path.expanduser(out), args.max_new_tokens, limit=args.limit)
    print(report.to_table())
    return 0
