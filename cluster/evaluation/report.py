"""The base-versus-tuned report: report.json for machines, report.md and chart.png for people, and the gate."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from cluster import storage
from cluster.errors import UserError
from cluster.spec import EvaluateSpec

# (key, label, higher is better)
ROWS = [
    ("eval_loss", "eval loss", False),
    ("perplexity", "perplexity", False),
    ("rouge_l", "ROUGE-L", True),
    ("bleu", "BLEU", True),
    ("exact_match", "exact match", True),
    ("format_compliance", "format compliance", True),
    # preference runs (cluster/evaluation/preference.py)
    ("preference_accuracy", "preference accuracy", True),
    ("reward_margin", "reward margin", True),
    ("logp_accuracy", "log-prob preference accuracy", True),
    ("chosen_logp", "chosen log-prob per token", True),
    # GRPO runs (cluster/evaluation/rewards.py); each grader's own mean follows as reward_<name>
    ("reward", "reward (graders' weighted mean)", True),
    ("pass_rate", "pass rate (every grader passed)", True),
]
UNBOUNDED = {"reward_margin", "chosen_logp"}  # not 0-1 scores, so not in the chart's score panel
HIGHER_IS_BETTER = {key: higher for key, _, higher in ROWS}


def rows_of(report: dict) -> list[tuple[str, str, bool]]:
    """The report's metric rows: the fixed ones, then each grader's mean (reward_<name>) of a GRPO run."""
    graders = [(f"reward_{name}", f"reward of grader {name}", True) for name in report.get("graders", [])]
    return ROWS + graders


def gate(base: dict, tuned: dict, cfg: EvaluateSpec, intervals: dict | None = None) -> dict:
    """How much worse tuned is than base on the gate metric, as a fraction of base, and whether that passes.

    With `intervals` (cluster/evaluation/intervals.py) the gate reads the 95% interval of tuned - base, not the point
    values: a regression fails only when even the interval's best end is worse than allowed, and min_improvement
    passes only when its worst end clears it, so a difference within noise never passes an improvement gate."""
    metric = cfg.gate_metric
    b, t = base.get(metric), tuned.get(metric)
    interval = (intervals or {}).get(metric)
    worse = None
    if b is not None and t is not None:
        diff = (b - t) if HIGHER_IS_BETTER[metric] else (t - b)
        if interval is not None:  # the end of the interval most favourable to tuned
            diff = -interval["difference"][1] if HIGHER_IS_BETTER[metric] else interval["difference"][0]
        worse = diff / abs(b) if b else (0.0 if diff <= 0 else float("inf"))
    passed = cfg.max_regression is None or worse is None or worse <= cfg.max_regression
    out = {"metric": metric, "max_regression": cfg.max_regression, "worse_by": worse, "passed": passed}
    if interval is None and cfg.min_improvement is None:
        return out
    improved = None
    if cfg.min_improvement is not None:
        improved = interval is not None and interval["difference"][0] > cfg.min_improvement
    return out | {
        "difference_interval": interval["difference"] if interval else None,
        "within_noise": interval["within_noise"] if interval else None,
        "min_improvement": cfg.min_improvement,
        "improved": improved,
        "passed": passed and improved is not False,
    }


def held_out(report: dict) -> str:
    """What the scores were computed on, in samples (the unit the user gave), with the packed rows beside."""
    samples, rows = report.get("eval_samples", report["eval_rows"]), report["eval_rows"]
    return f"{samples} held-out samples" + (f" ({rows} packed rows)" if rows != samples else "")


def markdown(report: dict) -> str:
    """The report as a Markdown table of metrics, then sample generations side by side."""
    base, tuned = report["base"], report["tuned"]
    tokens = f" ({base['eval_tokens']} scored tokens)" if "eval_tokens" in base else ""
    graders = f", scored by the graders {', '.join(report['graders'])}" if report.get("graders") else ""
    lines = [
        f"# Evaluation: {report['run']}",
        "",
        f"Base `{base['model']}` vs tuned `{tuned['model']}` on {held_out(report)}{tokens}; generation metrics on "
        f"{report['generation_samples']} prompts, greedy, up to {report['max_new_tokens']} new tokens{graders}.",
        "",
        "| metric | base | tuned | change |",
        "|---|---:|---:|---:|",
    ]
    g = report.get("generation")
    if g:  # which engines answered (cluster/evaluation/answers.py)
        failed = f"; {g['failed']} answers failed (scored as empty): {'; '.join(g['failures'])}" if g["failed"] else ""
        lines[4:4] = [f"Answers from {g['engine']}, {g['how']}{failed}.", ""]
    for key, label, higher in rows_of(report):
        b, t = base.get(key), tuned.get(key)
        if b is None and t is None:
            continue
        change = (
            ""
            if b is None or t is None
            else f"{t - b:+.4f} {'better' if (t > b) == higher and t != b else 'worse' if t != b else ''}"
        )
        iv = report.get("intervals", {}).get(key)
        if iv:  # 95% bootstrap intervals over rows (cluster/evaluation/intervals.py)
            low, high = iv["difference"]
            noise = "within noise" if iv["within_noise"] else "beyond noise"
            b, t = f"{_fmt(b)} {_span(iv['base'])}", f"{_fmt(t)} {_span(iv['tuned'])}"
            change = f"{change.strip()} {_span([low, high], signed=True)} {noise}"
        lines.append(f"| {label} | {_fmt(b)} | {_fmt(t)} | {change.strip()} |")
    g = report["gate"]
    if g["max_regression"] is not None:
        verdict = "passed" if g["passed"] else "FAILED"
        w = g["worse_by"]
        moved = "not scored" if w is None else f"worse by {w:.1%}" if w > 0 else f"better by {-w:.1%}" if w else "unchanged"
        lines += ["", f"Gate on {g['metric']}: tuned {moved} of base, allowed {g['max_regression']:.1%} worse: **{verdict}**."]
    if g.get("min_improvement") is not None:
        verdict = "passed" if g["improved"] else "FAILED"
        noise = ", within noise" if g["within_noise"] else ""
        lines += [
            "",
            f"Gate on {g['metric']}: tuned must beat base by more than {g['min_improvement']} with 95% confidence; "
            f"tuned - base in {_span(g['difference_interval'] or [None, None], signed=True)}{noise}: **{verdict}**.",
        ]
    if report.get("intervals"):
        lines += ["", "Brackets: 95% bootstrap intervals over the scored rows; a change whose interval holds 0 is within noise."]
    for i, s in enumerate(report["samples"], 1):
        lines += [
            "",
            f"## Sample {i}",
            "",
            "**Prompt**",
            "",
            _quote(s["prompt"]),
            "",
            "| reference | base | tuned |",
            "|---|---|---|",
            f"| {_cell(s['reference'])} | {_cell(s['base'])} | {_cell(s['tuned'])} |",
        ]
    return "\n".join(lines) + "\n"


def chart(report: dict, path: Path) -> None:
    """A PNG with eval loss and the 0-1 scores of base and tuned as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    base, tuned = report["base"], report["tuned"]
    scores = [
        (label, base[k] / (100 if k == "bleu" else 1), tuned[k] / (100 if k == "bleu" else 1))
        for k, label, higher in rows_of(report)
        if higher and k not in UNBOUNDED and base.get(k) is not None and tuned.get(k) is not None
    ]
    has_loss = base.get("eval_loss") is not None  # a GRPO run has rewards instead
    fig, axes = plt.subplots(
        1, 1 + has_loss, figsize=(10, 4), squeeze=False, gridspec_kw={"width_ratios": [1] * has_loss + [max(len(scores), 1)]}
    )
    axes = axes[0]
    if has_loss:
        axes[0].bar(["base", "tuned"], [base["eval_loss"], tuned["eval_loss"]], color=["#9aa5b1", "#2f7ed8"])
        axes[0].set_title("eval loss (lower is better)")
    xs = range(len(scores))
    axes[-1].bar([x - 0.2 for x in xs], [s[1] for s in scores], 0.4, label="base", color="#9aa5b1")
    axes[-1].bar([x + 0.2 for x in xs], [s[2] for s in scores], 0.4, label="tuned", color="#2f7ed8")
    axes[-1].set_xticks(list(xs), [s[0].split(" (")[0] + (" /100" if s[0] == "BLEU" else "") for s in scores])
    top = max([1.0, *(v for s in scores for v in s[1:])])  # a python grader's reward may exceed 1
    axes[-1].set_ylim(min([0.0, *(v for s in scores for v in s[1:])]), top)
    axes[-1].set_title("generation scores (higher is better)")
    axes[-1].legend()
    fig.suptitle(f"{report['run']}: base vs tuned")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict, out_uri: str, answers: list[dict] | None = None) -> None:
    """Write report.json, report.md, chart.png and answers.jsonl (every scored prompt: reference, base and tuned
    answer; when given) to `out_uri` (local or remote); report.json last."""
    with tempfile.TemporaryDirectory(prefix="rayfit-eval-") as tmp:
        chart(report, Path(tmp) / "chart.png")
        (Path(tmp) / "report.md").write_text(markdown(report), encoding="utf-8")
        if answers is not None:
            lines = "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers)
            (Path(tmp) / "answers.jsonl").write_text(lines, encoding="utf-8")
        storage.upload_dir(Path(tmp), storage.normalize(out_uri))
    storage.write_text(storage.join(storage.normalize(out_uri), "report.json"), json.dumps(report, indent=2))


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _span(interval: list, signed: bool = False) -> str:
    low, high = interval
    if low is None:
        return "[n/a]"
    return f"[{low:+.4f}, {high:+.4f}]" if signed else f"[{low:.4f}, {high:.4f}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>") or "(empty)"


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in text.splitlines()) or "> (empty)"


def enforce_gate(report: dict, out_uri: str) -> None:
    """Raise a UserError naming the metric, both values and the fix when the report's gate failed."""
    g, base, tuned = report["gate"], report["base"], report["tuned"]
    where = storage.join(storage.normalize(out_uri), "report.md")
    if (
        not g["passed"]
        and g.get("min_improvement") is not None
        and (g["worse_by"] is None or g["max_regression"] is None or g["worse_by"] <= g["max_regression"])
    ):
        noise = " (within noise)" if g.get("within_noise") else ""
        span = _span(g["difference_interval"] or [None, None], signed=True)
        raise UserError(
            f"evaluation gate failed: tuned {g['metric']} does not beat base by more than evaluate.min_improvement "
            f"{g['min_improvement']} with 95% confidence: tuned - base is in {span}{noise}. "
            f"Report: {where}. Fix: improve the run (data, steps, learning rate), evaluate on more held-out rows, or "
            "lower evaluate.min_improvement."
        )
    if not g["passed"]:
        raise UserError(
            f"evaluation gate failed: tuned {g['metric']} is worse than base by {g['worse_by']:.1%} of the base "
            f"value ({base[g['metric']]:.4f} -> {tuned[g['metric']]:.4f}), more than evaluate.max_regression "
            f"{g['max_regression']}. Report: {where}. Fix: improve "
            "the run (data, steps, learning rate) or raise evaluate.max_regression."
        )
