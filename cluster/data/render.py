"""Conversations to token ids and labels with the tokenizer's own chat template; only assistant turns are trained.

Any template works, with or without `{% generation %}` markers: each assistant turn's characters are found by
rendering the conversation prefix by prefix (up to the turn with the generation prompt, then through the turn) and
diffing, and the full conversation is tokenized once with offsets, so the ids are exactly what
`apply_chat_template(messages, tokenize=True)` gives. The turn's span is then cut just after its last special
token (the end-of-turn token: <|im_end|> for ChatML, <|eot_id|> for Llama-3), so the model learns to stop but not
the template's separator that follows it.
"""

from __future__ import annotations

from cluster.errors import UserError

IGNORE = -100


def special_ids(tokenizer) -> set[int]:
    """Ids of every special token (eos, added special tokens such as <|im_end|> or <|eot_id|>)."""
    ids = set(tokenizer.all_special_ids)
    ids |= {i for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)}
    return ids


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_char_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character span of each assistant turn in it."""
    full = _render(tokenizer, messages, False)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:k], True)
        through = _render(tokenizer, messages[: k + 1], False)
        if not (full.startswith(through) and through.startswith(before)):
            raise UserError(
                "the chat template does not render a conversation's prefixes as prefixes of the whole (it rewrites "
                f"earlier turns), so assistant turns cannot be located for loss masking (turn {k}). Fix: use a "
                "tokenizer whose template renders turns independently, or set the model's chat template.")
        spans.append((len(before), len(through)))
    return full, spans


def render_conversation(tokenizer, messages: list[dict], specials: set[int] | None = None) -> tuple[list[int], list[int]]:
    """Token ids of the templated conversation and labels: -100 except assistant turns through their end-of-turn token."""
    specials = special_ids(tokenizer) if specials is None else specials
    text, spans = assistant_char_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE] * len(ids)
    for start, end in spans:
        # Overlap, not containment: a SentencePiece token like "▁Hello" may start on the space the prompt ends with.
        inside = [i for i, (s, e) in enumerate(offsets) if s < end and e > start and e > s]
        ends = [i for i in inside if ids[i] in specials]
        if not ends:
            raise UserError(
                "the chat template puts no end-of-turn special token after an assistant message, so a tuned model "
                f"would not learn to stop (rendered turn: {text[start:end]!r}). Fix: use a chat template that closes "
                "assistant turns with a special token (e.g. <|im_end|> or <|eot_id|>).")
        for i in inside:
            if i <= ends[-1]:
                labels[i] = ids[i]
    return ids, labels


def render_text(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """Plain text: the tokenizer's own special tokens, then eos, every token trained."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids = [*ids, tokenizer.eos_token_id]
    return ids, list(ids)


def render_sample(tokenizer, sample: dict, specials: set[int]) -> tuple[list[int], list[int]]:
    """Ids and labels of a sample from cluster.data.formats.to_sample."""
    if sample["messages"] is None:
        return render_text(tokenizer, sample["text"])
    return render_conversation(tokenizer, sample["messages"], specials)


def tokenize_batch(batch: dict, tokenizer, specials: list[int]) -> dict:
    """datasets.map function (batched): adds input_ids, labels, length, trained (count of trained tokens) and error.

    A template that refuses one conversation (a jinja `raise_exception`, e.g. "system role not supported") marks
    that row with `error` so it is dropped and reported; problems of the template itself raise UserError.
    """
    specials_set = set(specials)
    out = {"input_ids": [], "labels": [], "length": [], "trained": [], "error": []}
    for messages, text in zip(batch["messages"], batch["text"], strict=True):
        try:
            ids, labels = render_sample(tokenizer, {"messages": messages, "text": text}, specials_set)
            error = None
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - any template failure on one row is that row's problem
            ids, labels, error = [], [], f"{type(e).__name__}: {e}"
        out["error"].append(error)
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["length"].append(len(ids))
        out["trained"].append(sum(label != IGNORE for label in labels))
    return out


def show_mask(tokenizer, ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """The sample as text segments, each marked trained or not, for the report's rendered example."""
    segments: list[tuple[str, bool]] = []
    run: list[int] = []
    for i, (tok, label) in enumerate(zip(ids, labels, strict=True)):
        run.append(tok)
        last = i == len(ids) - 1
        if last or (labels[i + 1] != IGNORE) != (label != IGNORE):
            segments.append((tokenizer.decode(run), label != IGNORE))
            run = []
    return segments
