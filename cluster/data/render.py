"""Conversations to token ids and labels with the tokenizer's own chat template; only assistant turns are trained.

Any template works, with or without `{% generation %}` markers: each assistant turn's characters are found by
rendering the conversation prefix by prefix (up to the turn with the generation prompt, then through the turn) and
diffing, and the full conversation is tokenized once with offsets, so the ids are exactly what
`apply_chat_template(messages, tokenize=True)` gives. The turn's span is then cut just after its last special
token (the end-of-turn token: <|im_end|> for ChatML, <|eot_id|> for Llama-3), so the model learns to stop but not
the template's separator that follows it.
"""

from __future__ import annotations

import json

from cluster.errors import UserError

IGNORE = -100


def special_ids(tokenizer) -> set[int]:
    """Ids of every special token (eos, added special tokens such as <|im_end|> or <|eot_id|>)."""
    ids = set(tokenizer.all_special_ids)
    ids |= {i for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)}
    return ids


def _render(tokenizer, messages: list[dict], generation_prompt: bool, tools: list[dict] | None = None) -> str:
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt)


PROBE_TOOL, PROBE_CALL = "rayfit_probe_schema", "rayfit_probe_call"


def check_tool_support(tokenizer) -> None:
    """Raise UserError unless the chat template renders both the tool schemas (`tools=`) and assistant tool calls."""
    tools = [
        {
            "type": "function",
            "function": {"name": PROBE_TOOL, "description": "probe", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    messages = [
        {"role": "user", "content": "probe"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": PROBE_CALL, "arguments": {"x": 1}}}],
        },
        {"role": "tool", "content": "probe result"},
        {"role": "assistant", "content": "ok"},
    ]
    try:
        text = _render(tokenizer, messages, False, tools)
    except Exception as e:  # noqa: BLE001 - a template that fails on tools has no tool support
        text, failure = "", f" (it fails: {type(e).__name__}: {e})"
    else:
        failure = ""
    missing = [
        what for what, name in (("tool schemas (tools=)", PROBE_TOOL), ("assistant tool calls", PROBE_CALL)) if name not in text
    ]
    if missing:
        raise UserError(
            f"the data has tool calls, but the model's chat template has no tool support: it does not render "
            f"{' or '.join(missing)}{failure}, so they would be silently lost. Fix: set model.chat_template "
            "to a tool-capable template (e.g. Qwen2.5's or Llama 3.1's), or use a model whose template "
            "supports tools."
        )


def assistant_char_spans(
    tokenizer, messages: list[dict], trained: list[bool] | None = None, tools: list[dict] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character span of each trained assistant turn in it."""
    full = _render(tokenizer, messages, False, tools)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant" or (trained is not None and not trained[k]):
            continue
        before = _render(tokenizer, messages[:k], True, tools)
        through = _render(tokenizer, messages[: k + 1], False, tools)
        if not (full.startswith(through) and through.startswith(before)):
            raise UserError(
                "the chat template does not render a conversation's prefixes as prefixes of the whole (it rewrites "
                f"earlier turns), so assistant turns cannot be located for loss masking (turn {k}). Fix: use a "
                "tokenizer whose template renders turns independently, or set the model's chat template."
            )
        spans.append((len(before), len(through)))
    return full, spans


def render_conversation(
    tokenizer,
    messages: list[dict],
    specials: set[int] | None = None,
    trained: list[bool] | None = None,
    tools: list[dict] | None = None,
) -> tuple[list[int], list[int]]:
    """Token ids of the templated conversation and labels: -100 except trained assistant turns (all of them when
    `trained` is None) through their end-of-turn token; tool calls are part of the turn, tool results never are."""
    specials = special_ids(tokenizer) if specials is None else specials
    text, spans = assistant_char_spans(tokenizer, messages, trained, tools)
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
                "assistant turns with a special token (e.g. <|im_end|> or <|eot_id|>)."
            )
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


def render_completion(tokenizer, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """String prompt/completion as TRL's SFTTrainer does it: plain text (no chat template), eos after the completion,
    loss from where the tokenized prompt and prompt+completion diverge."""
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    ids, _ = render_text(tokenizer, prompt + completion)
    start = 0
    while start < min(len(prompt_ids), len(ids)) and prompt_ids[start] == ids[start]:
        start += 1
    return ids, [IGNORE] * start + ids[start:]


def render_sample(tokenizer, sample: dict, specials: set[int]) -> tuple[list[int], list[int]]:
    """Ids and labels of a sample from cluster.data.formats.to_sample."""
    if sample.get("prompt") is not None:
        return render_completion(tokenizer, sample["prompt"], sample["completion"])
    if sample["messages"] is None:
        return render_text(tokenizer, sample["text"])
    return render_conversation(tokenizer, sample["messages"], specials, sample.get("train"), sample.get("tools"))


def windows(ids: list[int], size: int, overlap: int, min_tokens: int = 1) -> list[tuple[list[int], list[int]]]:
    """A long document as consecutive windows of at most `size` tokens, each starting `overlap` tokens before the
    previous one ended; every token is trained exactly once (the repeated ones are context only).

    A tail that would hold fewer than `min_tokens` new tokens is not a window of its own scraps: the last window
    is the document's last `size` tokens, the ones trained before it repeated as context, so no token is lost.
    """
    out, start, trained_to = [], 0, 0
    while True:
        if start and len(ids) - trained_to < min_tokens:
            start = max(len(ids) - size, 0)
        chunk = ids[start : start + size]
        repeated = trained_to - start
        out.append((chunk, [IGNORE] * repeated + chunk[repeated:]))
        trained_to = start + len(chunk)
        if trained_to >= len(ids):
            return out
        start = trained_to - overlap


def tokenize_batch(batch: dict, tokenizer, specials: list[int], max_seq_len: int, overlap: int, min_tokens: int = 1) -> dict:
    """datasets.map / Ray Data function (batched) from `sample` (JSON) to input_ids, labels, length, trained (count of
    trained tokens), window (index within a split text document) and error, keeping src, where and key.

    A text document longer than max_seq_len becomes several rows (windows). A template that refuses one
    conversation (a jinja `raise_exception`, e.g. "system role not supported") marks that row with `error` so it is
    dropped and reported; problems of the template itself raise UserError.
    """
    specials_set = set(specials)
    out = {k: [] for k in ("input_ids", "labels", "length", "trained", "error", "window", "src", "where", "key")}
    for sample_json, src, where, key in zip(batch["sample"], batch["src"], batch["where"], batch["key"], strict=True):
        sample = json.loads(sample_json)
        try:
            ids, labels = render_sample(tokenizer, sample, specials_set)
            error = None
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - any template failure on one row is that row's problem
            ids, labels, error = [], [], f"{type(e).__name__}: {e}"
        is_text = sample["messages"] is None and sample.get("prompt") is None
        parts = windows(ids, max_seq_len, overlap, min_tokens) if is_text and len(ids) > max_seq_len else [(ids, labels)]
        for k, (w_ids, w_labels) in enumerate(parts):
            for name, value in (
                ("input_ids", w_ids),
                ("labels", w_labels),
                ("length", len(w_ids)),
                ("error", error),
                ("trained", sum(label != IGNORE for label in w_labels)),
                ("src", src),
                ("where", where),
                ("key", key),
                ("window", k if len(parts) > 1 else -1),
            ):
                out[name].append(value)
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
