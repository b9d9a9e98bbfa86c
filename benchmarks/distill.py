"""The distillation example measured: jobs/specs/distill-cpu.yaml's three steps, as its header gives them.

    RAY_AUTH_MODE=disabled PYTHONPATH=. .venv/bin/python benchmarks/distill.py [--storage DIR]

1. `rayfit generate embedded:smollm2-135m-instruct --input embedded:construction-faq --as-training-data
   --system-prompt SYSTEM ...`: the teacher (the embedded model told SYSTEM) answers every FAQ question; its answers
   become training records without SYSTEM;
2. `rayfit data check` on the spec: the data report over the distilled records;
3. `python -m jobs.finetune` on the spec: the student (the same model, LoRA) trains on them, is merged, and is
   evaluated against the base on the held-out teacher answers, both asked WITHOUT the system prompt.
The spec's storage and data path are pointed at --storage (default: a new temporary folder). The effect is the
evaluation's own: format compliance (answers that follow the teacher's habit, the spec's format_regex) and ROUGE-L
against the teacher's answers, base vs student, with 95% bootstrap intervals; the teacher's own compliance is counted
over every distilled record. Writes benchmarks/results/distill.json (table `distill`), which the README quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "jobs" / "specs" / "distill-cpu.yaml"
MODEL = "embedded:smollm2-135m-instruct"
ENV = {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "PYTHONPATH": str(REPO)}


def header_command() -> list[str]:
    """Step 1's arguments exactly as the spec's header gives them (so the benchmark runs what users read)."""
    lines = [line.removeprefix("#").strip() for line in SPEC.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith("rayfit generate"))
    text = ""
    for line in lines[start:]:
        text += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            break
    import shlex

    return shlex.split(text)


def run(argv: list[str], log: Path) -> float:
    """Run a command with the benchmark's environment, its output to `log`; the seconds it took."""
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(argv, cwd=REPO, env={**os.environ, **ENV}, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"{' '.join(argv[:4])}... failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - started


def main() -> None:
    """The three steps, then the results file."""
    from benchmarks.results import table, write_results
    from cluster.evaluation.scoring import compliant
    from cluster.spec import EvaluateSpec

    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", default=None, help="where the run goes (default: a new temporary folder)")
    args = parser.parse_args()
    storage = Path(args.storage or tempfile.mkdtemp(prefix="rayfit-distill-")).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    distilled = storage / "distilled.jsonl"
    spec = yaml.safe_load(SPEC.read_text())
    spec["data"]["train"][0]["path"] = str(distilled)
    spec["output"]["storage"] = str(storage)
    spec_path = storage / "distill-cpu.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))

    generate = header_command()
    generate[generate.index("--output") + 1] = str(distilled)
    seconds = {"generate": run([sys.executable, "-m", "jobs.cli", *generate[1:]], storage / "generate.log")}
    seconds["data_check"] = run([sys.executable, "-m", "jobs.cli", "data", "check", str(spec_path)], storage / "check.log")
    seconds["finetune"] = run([sys.executable, "-m", "jobs.finetune", str(spec_path), "--address", "local"], storage / "job.log")

    records = [json.loads(line) for line in distilled.read_text().splitlines()]
    rejected_file = Path(str(distilled) + ".rejected.jsonl")
    rejected = [json.loads(line) for line in rejected_file.read_text().splitlines()] if rejected_file.exists() else []
    habit = EvaluateSpec(format_regex=spec["evaluate"]["format_regex"])
    teacher = sum(compliant(r["messages"][-1]["content"], habit) for r in records) / len(records)
    report = json.loads((storage / "distill-cpu" / "eval" / "report.json").read_text())
    data = json.loads((storage / "distill-cpu" / "data_report.json").read_text())
    base, tuned, iv = report["base"], report["tuned"], report["intervals"]

    def cell(value: float, interval: list[float]) -> str:
        return f"{value:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]"

    system = generate[generate.index("--system-prompt") + 1]
    rows = [
        [
            "base, untold",
            cell(base["format_compliance"], iv["format_compliance"]["base"]),
            cell(base["rouge_l"], iv["rouge_l"]["base"]),
        ]
        + [f"{base['eval_loss']:.3f}"],
        [
            "student (distilled), untold",
            cell(tuned["format_compliance"], iv["format_compliance"]["tuned"]),
            cell(tuned["rouge_l"], iv["rouge_l"]["tuned"]),
            f"{tuned['eval_loss']:.3f}",
        ],
        [
            "student - base",
            cell(tuned["format_compliance"] - base["format_compliance"], iv["format_compliance"]["difference"]),
            cell(tuned["rouge_l"] - base["rouge_l"], iv["rouge_l"]["difference"]),
            f"{tuned['eval_loss'] - base['eval_loss']:+.3f}",
        ],
        [f"teacher (told the system prompt), all {len(records)} records", f"{teacher:.2f}", "1 (its own)", "n/a"],
    ]
    write_results(
        "distill",
        runs=[{"seconds": seconds, "records": len(records), "rejected": len(rejected), "report": report, "data_report": data}],
        summary={
            "system_prompt": system,
            "format_regex": spec["evaluate"]["format_regex"],
            "records": len(records),
            "rejected": len(rejected),
            "held_out": report["generation_samples"],
            "teacher_compliance": teacher,
            "base_compliance": base["format_compliance"],
            "student_compliance": tuned["format_compliance"],
            "compliance_difference_interval": iv["format_compliance"]["difference"],
            "gate_passed": report["gate"]["passed"],
            "data_report_dropped": {k: v["count"] for k, v in data["dropped"].items()},
            "contamination": data["contamination"]["count"],
            "near_duplicates": data["near_duplicates"]["count"],
            "load_average": os.getloadavg(),
        },
        tables={
            "distill": table(
                [
                    "model (asked without the system prompt unless said)",
                    "follows the habit (95% CI)",
                    "ROUGE-L vs teacher (95% CI)",
                ]
                + ["eval loss on teacher answers"],
                rows,
            )
        },
    )


if __name__ == "__main__":
    main()
