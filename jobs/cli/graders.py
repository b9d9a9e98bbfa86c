"""`rayfit graders run SPEC --sample TEXT --item JSON` (or `--file ROWS.jsonl`): try graders without training."""

from __future__ import annotations

import argparse
import json

from cluster.errors import UserError

EPILOG = """examples:
  rayfit graders run my-job.yaml --sample '42' --item '{"answer": "42"}'
  rayfit graders run my-grader.yaml --file answers.jsonl   # each line: {"sample": "...", "item": {...}}
SPEC is a job spec (its train.grpo.graders), one grader, or a list of graders, in OpenAI's grader shapes."""


def register(subparsers) -> None:
    """Add the `graders` subcommand group (`graders run`)."""
    p = subparsers.add_parser("graders", help="try reward graders on answers without training")
    sub = p.add_subparsers(dest="graders_command", required=True, metavar="ACTION")
    run = sub.add_parser(
        "run",
        help="score answers with the graders of a spec or grader file",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("spec", help="a job spec (YAML), or a YAML/JSON file with one grader or a list")
    given = run.add_mutually_exclusive_group(required=True)
    given.add_argument("--sample", help="the answer text graded ({{sample.output_text}})")
    given.add_argument("--file", help='JSON Lines of {"sample": TEXT, "item": {...}}, one answer per line')
    run.add_argument("--item", default="{}", help="the data row as JSON ({{item.FIELD}}), with --sample")
    run.set_defaults(run=run_graders)


def _rows(args) -> list[tuple[str, str, dict]]:
    if args.sample is not None:
        return [("--item", args.sample, _json(args.item, "--item"))]
    out = []
    try:
        with open(args.file, encoding="utf-8") as f:
            lines = list(f)
    except OSError as e:
        raise UserError(f"cannot read {args.file} ({e.strerror}). Fix: check the path.") from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            row = _json(line, f"{args.file}:{n}")
            if not isinstance(row, dict) or not isinstance(row.get("sample"), str) or not isinstance(row.get("item"), dict):
                raise UserError(f'{args.file}:{n}: expected {{"sample": TEXT, "item": {{...}}}}. Fix: write each line so.')
            out.append((f"{args.file}:{n}", row["sample"], row["item"]))
    return out


def _json(text: str, where: str):
    try:
        return json.loads(text)
    except ValueError as e:
        raise UserError(f'{where} is not JSON ({e}). Fix: pass a JSON object, e.g. \'{{"answer": "42"}}\'.') from None


def summarize(results: list) -> dict:
    """Means over answers: reward, pass rate and each grader's reward_<name>."""
    n = max(len(results), 1)
    out = {"answers": len(results), "reward": sum(r.reward for r in results) / n, "pass_rate": sum(r.passed for r in results) / n}
    for name in results[0].scores if results else ():
        out[f"reward_{name}"] = sum(r.scores[name] for r in results) / n
    return out


def run_graders(args) -> int:
    """Print one JSON line per answer (reward, pass, each grader's score, failures), then the means over a file."""
    from cluster.graders.grading import Grading
    from cluster.graders.load import load_graders

    graders, weights = load_graders(args.spec)
    rows = _rows(args)
    results = []
    with Grading(graders, weights, max_failures=len(rows) * len(graders)) as grading:
        for where, text, item in rows:
            before = len(grading.failures)
            got = grading.score(text, item, where)
            results.append(got)
            line = {"where": where, "reward": got.reward, "passed": got.passed, "scores": got.scores}
            print(json.dumps({**line, "failures": grading.failures[before:]}))
    if args.file:
        print(json.dumps({"summary": summarize(results)}))
    return 1 if grading.failures else 0
