"""`rayfit data pairs SPEC --source SFT_DATA`: on-policy DPO pairs (chosen = reference, rejected = the model's answer).

The model is SPEC's starting model (model.init_from, e.g. the SFT export, else model.base); its answers come from the
batch generation pipeline (vLLM engines on Ray Data, as `rayfit generate`) on the cluster at RAY_ADDRESS, else a new
local Ray. The pairs go to --out
(default: SPEC's first data.train path, so the DPO spec reads them unchanged), with OUT.report.json beside them.
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--replicas", type=int, default=1, help="vLLM engine replicas answering the prompts")
    p.add_argument(
        "--enforce-eager",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="vLLM without torch.compile (--no-enforce-eager: compile); default: eager on CPU engines, compiled on GPUs",
    )
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster address (default: RAY_ADDRESS, as inside `ray job submit`; else a new local Ray)",
    )
    p.set_defaults(run=run_pairs)


def run_pairs(args) -> int:
    """Generate, write the pairs and their report, and print the report."""
    from cluster.data.pairs import build_pairs
    from jobs.engine_ray import connect

    spec = load_spec(args.spec)
    out = args.out or spec.data.train[0].path
    connect(args.address)
    report = build_pairs(
        spec,
        args.source,
        os.path.expanduser(out),
        args.max_new_tokens,
        limit=args.limit,
        replicas=args.replicas,
        enforce_eager=args.enforce_eager,
    )
    print(report.to_table())
    return 0
