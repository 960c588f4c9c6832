"""Prompt-masked tokenization, over-length handling and the padding collator.

Prompt and response are tokenized separately and concatenated, so the mask boundary is exact.
The prompt gets the tokenizer's own special prefix (BOS) unless the text already starts with it
(chat templates often write BOS themselves); the response gets no special tokens and always ends
with EOS, which is supervised. Masking is by position, never by token id: for SmolLM2 the pad
token IS the EOS token, and masking by id would silently stop the model learning to stop.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from ..errors import UserError
from ..schema import IGNORE_INDEX
from .prompts import render
from .report import BadRow

IGNORE = IGNORE_INDEX  # label of a position without loss
OVERLENGTH = ("truncate", "drop", "error")
BATCH = 1024  # texts per tokenizer call

_PREFIX: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class Encoded:
    prompt_ids: list[int]
    response_ids: list[int]  # ends with EOS

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token, so examples cannot end: use a model whose tokenizer defines eos_token")
    return int(tokenizer.eos_token_id)


def special_prefix(tokenizer) -> list[int]:
    """Ids the tokenizer puts before text with add_special_tokens=True (e.g. [BOS]; [] for SmolLM2)."""
    try:
        return _PREFIX[tokenizer]
    except (KeyError, TypeError):
        pass
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    start = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), 0)
    prefix = list(full[:start])
    try:
        _PREFIX[tokenizer] = prefix
    except TypeError:
        pass
    return prefix


def encode_texts(pairs: list[tuple[str, str]], tokenizer) -> list[Encoded]:
    """Tokenize (prompt, response) text pairs in batches; no truncation yet."""
    prefix, eos = special_prefix(tokenizer), eos_id(tokenizer)
    encoded = []
    for start in range(0, len(pairs), BATCH):
        chunk = pairs[start : start + BATCH]
        prompts = tokenizer([p for p, _ in chunk], add_special_tokens=False)["input_ids"]
        responses = tokenizer([r for _, r in chunk], add_special_tokens=False)["input_ids"]
        for prompt, response in zip(prompts, responses):
            if prefix and prompt[: len(prefix)] != prefix:
                prompt = prefix + prompt
            if not response or response[-1] != eos:
                response = response + [eos]  # chat responses usually end with it already (<|im_end|>)
            encoded.append(Encoded(list(prompt), list(response)))
    return encoded


def fit(encoded: Encoded, sequence_len: int, overlength: str) -> tuple[Encoded, bool]:
    """Make the example fit `sequence_len`: (result, truncated?) or BadRow.

    `truncate` cuts the response (the whole prompt is kept, and at least one supervised token);
    `drop` and `error` raise BadRow("over_length") and the caller drops the row or stops.
    """
    if len(encoded) <= sequence_len:
        return encoded, False
    if overlength != "truncate":
        raise BadRow("over_length", f"{len(encoded)} tokens > sequence_len {sequence_len}")
    room = sequence_len - len(encoded.prompt_ids)
    if room < 1:
        raise BadRow(
            "no_supervised_tokens", f"the prompt alone is {len(encoded.prompt_ids)} tokens >= sequence_len {sequence_len}"
        )
    return Encoded(encoded.prompt_ids, encoded.response_ids[:room]), True


def to_example(encoded: Encoded, train_on_prompt: bool = False) -> dict:
    prompt_labels = list(encoded.prompt_ids) if train_on_prompt else [IGNORE] * len(encoded.prompt_ids)
    return {"input_ids": encoded.prompt_ids + encoded.response_ids, "labels": prompt_labels + list(encoded.response_ids)}


def build_example(
    record: dict, tokenizer, prompt_format: str, sequence_len: int, overlength: str = "truncate", train_on_prompt: bool = False
) -> dict:
    """One training example {"input_ids", "labels"} from a normalized record.

    Raises BadRow (reason over_length or no_supervised_tokens) when the row must be dropped, and
    UserError under overlength="error".
    """
    check_overlength(overlength)
    encoded = encode_texts([render(record, tokenizer, prompt_format)], tokenizer)[0]
    try:
        fitted, _ = fit(encoded, sequence_len, overlength)
    except BadRow as bad:
        if bad.reason == "over_length" and overlength == "error":
            raise overlength_error(f"row {record.get('row', '?')}", bad) from None
        raise
    return to_example(fitted, train_on_prompt)


def check_overlength(overlength: str) -> None:
    if overlength not in OVERLENGTH:
        raise UserError(f"data.overlength must be one of {', '.join(OVERLENGTH)}, got {overlength!r}")


def overlength_error(where: str, bad: BadRow) -> UserError:
    return UserError(f"{where} is too long ({bad.detail}): raise training.sequence_len, or set data.overlength=truncate or drop")


class Collator:
    """Pads a batch to its longest example (right padding). Padding positions get attention 0
    and label -100 by POSITION, so a real EOS (== pad for SmolLM2) inside an example stays supervised."""

    def __init__(self, tokenizer_or_pad_id, pad_to_multiple_of: int | None = None):
        if isinstance(tokenizer_or_pad_id, int):
            self.pad_id = tokenizer_or_pad_id
        else:
            tok = tokenizer_or_pad_id
            self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(features), longest), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE, dtype=torch.long)
        attention = torch.zeros((len(features), longest), dtype=torch.long)
        for i, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[i, :n] = torch.tensor(feature["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.tensor(feature["labels"], dtype=torch.long)
            attention[i, :n] = 1
        # Position 0 has no previous token, so no logit predicts it: ignoring its label makes the
        # count of supervised labels (what Trainer normalises by) equal the count the loss sums over.
        labels[:, 0] = IGNORE
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
