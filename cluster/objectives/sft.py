"""SFT: next-token loss on the assistant turns of chat-templated, packed rows (TRL's `SFTTrainer`)."""

from __future__ import annotations

from cluster import storage
from cluster.data.cache import PreparedData, cached, content_hash, save
from cluster.data.report import DataReport
from cluster.objectives.recipe import PlanTerms, Recipe
from cluster.spec import JobSpec


def prepare(spec: JobSpec, tokenizer, cache_dir: str) -> PreparedData:
    """Tokenize, mask and pack the data once into `cache_dir/<content-hash>/{train,eval}`; reused when it exists."""
    from cluster.data.assemble import finish
    from cluster.data.pipeline import check_threshold, read_all, tokenize

    loaded = read_all(spec.data)
    key = content_hash(spec, tokenizer, loaded.digests)
    target = storage.join(storage.normalize(cache_dir), key)
    found = cached(target)
    if found is not None:
        return found
    ds = tokenize(loaded, spec.data, tokenizer)
    train, evalset, report = finish(loaded, spec.data, ds, tokenizer)
    report.hash = key
    check_threshold(report)
    save(target, train, evalset, report)
    return PreparedData(storage.join(target, "train"), storage.join(target, "eval") if evalset is not None else None, report)


def check(spec: JobSpec, tokenizer) -> DataReport:
    """Every check of `prepare`, nothing saved."""
    from cluster.data.assemble import finish
    from cluster.data.pipeline import check_threshold, read_all, tokenize

    loaded = read_all(spec.data)
    ds = tokenize(loaded, spec.data, tokenizer)
    report = finish(loaded, spec.data, ds, tokenizer)[2]
    report.hash = content_hash(spec, tokenizer, loaded.digests)
    check_threshold(report)
    return report


def trainer(
    spec: JobSpec,
    tokenizer,
    ds_config,
    on_gpu,
    device_index,
    output_dir,
    train_ds,
    eval_ds,
    eval_on_start,
    callbacks,
    actors=None,
):
    """TRL's SFTTrainer on rows cluster.data already tokenized, masked and packed."""
    from trl import SFTTrainer

    from cluster.training.args import sft_args
    from cluster.training.collator import make_collator
    from cluster.training.warm_start import load_start_model

    model = load_start_model(spec, ds_config, on_gpu, device_index, wrap_adapter=True)
    args = sft_args(spec, output_dir, ds_config, on_gpu, has_eval=eval_ds is not None, eval_on_start=eval_on_start)
    return SFTTrainer(
        model=model,
        args=args,
        data_collator=make_collator(tokenizer),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def plan_terms(spec: JobSpec, config, counts) -> PlanTerms:
    """One sequence of data.max_seq_len tokens per row; no reference model."""
    return PlanTerms(sequences_per_row=1, sequence_tokens=spec.data.max_seq_len)


def evaluate(spec: JobSpec, tuned_uri: str, out_uri: str, cache_dir: str | None = None, step=None) -> dict:
    """Eval loss and generation metrics of base and tuned on the held-out rows."""
    from cluster.evaluation.run import evaluate_generations, in_process

    return evaluate_generations(spec, tuned_uri, out_uri, cache_dir, step or in_process)


RECIPE = Recipe(name="sft", prepare=prepare, check=check, trainer=trainer, plan_terms=plan_terms, evaluate=evaluate)
