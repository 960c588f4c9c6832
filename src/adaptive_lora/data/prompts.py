"""Prompt formats: a record -> (prompt text, response text). The prompt is masked from the loss.

- `alpaca`: the Stanford Alpaca template (with / without input);
- `chat`: the tokenizer's own chat template; the response is followed by the template's
  end-of-turn marker (for SmolLM2 `<|im_end|>`, which is also its EOS);
- `seed`: the original study's `Human: ...\\n\\nContext: ...\\n\\nAssistant: ...`.
The EOS token is added at tokenization, not here.
"""

from __future__ import annotations

import weakref

from ..errors import UserError

FORMATS = ("alpaca", "chat", "seed")

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
SENTINEL = "\u2063ADAPTIVE_LORA_RESPONSE\u2063"  # a response text no real data contains

_END_OF_TURN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_prompt_format(prompt_format: str, tokenizer) -> str:
    """`auto` -> `chat` when the tokenizer has a chat template, else `alpaca`."""
    if prompt_format == "auto":
        return "chat" if has_chat_template(tokenizer) else "alpaca"
    if prompt_format not in FORMATS:
        raise UserError(f"unknown prompt format {prompt_format!r}: use auto, {', '.join(FORMATS)}")
    if prompt_format == "chat" and not has_chat_template(tokenizer):
        raise UserError("prompt format 'chat' needs a tokenizer with a chat template and this one has none: use alpaca or seed")
    return prompt_format


def render(record: dict, tokenizer, prompt_format: str) -> tuple[str, str]:
    """(prompt, response) texts. Their concatenation is the full example, minus the EOS token."""
    if prompt_format == "alpaca":
        template = ALPACA_WITH_INPUT if record["input"].strip() else ALPACA_NO_INPUT
        return template.format(instruction=record["instruction"], input=record["input"]), record["output"]
    if prompt_format == "seed":
        prompt = f"Human: {record['instruction']}"
        if record["input"].strip():
            prompt += f"\n\nContext: {record['input']}"
        # The space after "Assistant:" goes with the response: BPE merges it into the first word.
        return prompt + "\n\nAssistant:", " " + record["output"]
    if prompt_format == "chat":
        return _chat_prompt(record, tokenizer), record["output"] + end_of_turn(tokenizer)
    raise UserError(f"unknown prompt format {prompt_format!r}: use {', '.join(FORMATS)}")


def chat_messages(record: dict) -> list[dict]:
    """The prompt turns: a chat record's own, or one user turn built from instruction + input."""
    if "messages" in record:
        return record["messages"]
    content = record["instruction"]
    if record["input"].strip():
        content += "\n\n" + record["input"]
    return [{"role": "user", "content": content}]


def _chat_prompt(record: dict, tokenizer) -> str:
    try:
        return tokenizer.apply_chat_template(chat_messages(record), add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # noqa: BLE001 - jinja raises for e.g. non-alternating roles
        raise UserError(
            f"row {record.get('row', '?')}: the tokenizer's chat template rejected the conversation "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); use prompt format alpaca or seed"
        ) from None


def end_of_turn(tokenizer) -> str:
    """What the chat template writes right after an assistant message, minus trailing whitespace
    (`<|im_end|>` for SmolLM2). Found by rendering a sentinel reply; "" if the template hides it."""
    try:
        return _END_OF_TURN[tokenizer]
    except (KeyError, TypeError):
        pass
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": SENTINEL}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # noqa: BLE001 - then EOS alone ends the response
        text = ""
    marker = text.split(SENTINEL, 1)[1].rstrip() if SENTINEL in text else ""
    try:
        _END_OF_TURN[tokenizer] = marker
    except TypeError:
        pass  # not weak-referenceable: recompute next time
    return marker
