"""On-policy preference pairs from SFT data: chosen = the reference answer, rejected = the model's own generation.

The rejected answers come from the batch generation pipeline (cluster/generation: ray.data.llm's vLLM processor,
`replicas` engines), as evaluation's do: prompts rendered with the spec's tokenizer and chat template, greedy, the
spec's starting model (model.init_from, a LoRA checkpoint running as base + adapter, else model.base).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cluster.data.drops import Drop, RowProblem
from cluster.data.formats import detect_format, to_sample
from cluster.data.report import Examples
from cluster.data.sources import read_source
from cluster.spec import JobSpec, SourceSpec


@dataclass
class PairsReport:
    """What `rayfit data pairs` made: rows read, pairs kept, drops by reason with file:line, and the length bias."""

    source: str
    out: str
    model: str
    rows_read: int = 0
    rows_over_limit: int = 0  # usable rows left out by --limit
    pairs_kept: int = 0
    dropped: dict[str, Examples] = field(default_factory=dict)
    length_bias: dict[str, float] = field(default_factory=dict)

    def add_drop(self, drop: Drop) -> None:
        """Record one dropped row under its reason."""
        self.dropped.setdefault(drop.reason, Examples()).add(f"{drop.where}" + (f" ({drop.detail})" if drop.detail else ""))

    def to_json(self) -> str:
        """The report as indented JSON."""
        body = {**self.__dict__, "dropped": {k: v.model_dump() for k, v in self.dropped.items()}}
        return json.dumps(body, indent=2)

    def to_table(self) -> str:
        """The report for a terminal."""
        lines = [
            f"Pairs from {self.source} by {self.model} -> {self.out}",
            f"Rows: read {self.rows_read}"
            + (f", left out by --limit {self.rows_over_limit}" if self.rows_over_limit else "")
            + f", pairs kept {self.pairs_kept}",
        ]
        for reason, ex in self.dropped.items():
            lines += [f"  {reason:26} {ex.count:6}", *[f"      {e}" for e in ex.examples]]
        lines.append("Length bias: " + "  ".join(f"{k}={v:.2f}" for k, v in self.length_bias.items()))
        return "\n".join(lines)


def sft_prompts(source: str, spec: JobSpec, report: PairsReport) -> list[dict]:
    """Each SFT record's conversation up to its last answer (the prompt) and that answer (the reference)."""
    rows = read_source(SourceSpec(path=source))
    fmt = detect_format(rows, "auto")
    report.rows_read = rows.rows_read
    for drop in rows.drops:
        report.add_drop(drop)
    out = []
    for rec in rows.records:
        try:
            messages = to_sample(rec.fields, fmt, spec.data.system_prompt)["messages"]
        except RowProblem as p:
            report.add_drop(Drop(p.reason, rec.where, p.detail))
            continue
        if not messages or messages[-1]["role"] != "assistant" or len(messages) < 2:
            report.add_drop(Drop("missing prompt", rec.where, "a plain-text record has no prompt to answer"))
            continue
        out.append({"where": rec.where, "prompt": json.dumps(messages[:-1]), "reference": messages[-1]["content"]})
    return out


def generate_on_cluster(
    prompts: list[dict], spec: JobSpec, max_new_tokens: int, batch_size: int, replicas: int = 1, enforce_eager: bool | None = None
) -> list[dict]:
    """Every prompt answered greedily by the spec's starting model on vLLM engines (Ray must be initialised); a row
    the engine refused keeps its reason in `error`."""
    from cluster.evaluation.answers import start_answerer
    from cluster.generation.answers import answer_prompts
    from cluster.generation.settings import job_engine
    from cluster.model.load import load_tokenizer
    from cluster.training.warm_start import resolve_init

    tokenizer = load_tokenizer(spec)
    ids = [
        tokenizer(
            tokenizer.apply_chat_template(json.loads(p["prompt"]), add_generation_prompt=True, tokenize=False),
            add_special_tokens=False,
        )["input_ids"]
        for p in prompts
    ]
    start = spec.model.init_from and resolve_init(spec.model.init_from)[0]
    engine = job_engine(spec, max_new_tokens, replicas, batch_size, enforce_eager=enforce_eager)
    answers = answer_prompts(ids, [start_answerer(spec, start or None)], engine)
    return [
        p | {"generation": text, "error": error, "prompt_tokens": len(i)}
        for p, text, error, i in zip(prompts, answers.texts[0], answers.errors[0], ids, strict=True)
    ]


def to_pairs(answered: list[dict], tokenizer, report: PairsReport) -> list[dict]:
    """Pairs in TRL's conversational format; a generation equal to the reference (or empty) is dropped."""
    pairs, chosen_len, rejected_len = [], [], []
    for r in answered:
        gen, ref = str(r["generation"]).strip(), r["reference"].strip()
        if r.get("error"):
            report.add_drop(Drop("generation failed", r["where"], r["error"]))
            continue
        if not gen:
            report.add_drop(Drop("empty", r["where"], "the model generated nothing"))
            continue
        if " ".join(gen.lower().split()) == " ".join(ref.lower().split()):
            report.add_drop(Drop("identical chosen/rejected", r["where"], "the model already answers as the reference"))
            continue
        prompt = json.loads(r["prompt"])
        pairs.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": ref}],
                "rejected": [{"role": "assistant", "content": gen}],
                "source": r["where"],
            }
        )
        chosen_len.append(len(tokenizer(ref, add_special_tokens=False)["input_ids"]))
        rejected_len.append(len(tokenizer(gen, add_special_tokens=False)["input_ids"]))
    report.pairs_kept = len(pairs)
    if pairs:
        report.length_bias = {
            "chosen_mean_tokens": sum(chosen_len) / len(pairs),
            "rejected_mean_tokens": sum(rejected_len) / len(pairs),
            "chosen_longer_fraction": sum(c > g for c, g in zip(chosen_len, rejected_len, strict=True)) / len(pairs),
        }
    return pairs


def build_pairs(
    spec: JobSpec,
    source: str,
    out: str,
    max_new_tokens: int = 96,
    batch_size: int = 8,
    limit: int | None = None,
    replicas: int = 1,
    enforce_eager: bool | None = None,
) -> PairsReport:
    """Write on-policy pairs from the SFT `source` to `out` (JSON Lines) and `out`.report.json; returns the report."""
    from cluster import storage
    from cluster.model.load import load_tokenizer

    report = PairsReport(source=source, out=out, model=spec.model.init_from or spec.model.base)
    usable = sft_prompts(source, spec, report)
    prompts = usable[:limit]
    report.rows_over_limit = len(usable) - len(prompts)
    answered = generate_on_cluster(prompts, spec, max_new_tokens, batch_size, replicas, enforce_eager) if prompts else []
    pairs = to_pairs(answered, load_tokenizer(spec), report)  # in file order: answers keep their prompt's place
    storage.write_text(out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    storage.write_text(out + ".report.json", report.to_json())
    return report
