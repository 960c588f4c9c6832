"""Batched greedy decoding with the KV cache, for answers to score.

Prompts are the exact token ids the model saw before the response in training (`prompt_ids_for`).
They are sorted by length and decoded in batches, left-padded with an attention mask, so every
batch wastes little padding; results come back in input order. Decoding stops at EOS, at the chat
template's end-of-turn token when it has one, or after `max_new_tokens`.

    prompts = prompt_ids_for(records, tokenizer, "chat")
    out = greedy_generate(model, tokenizer, prompts, max_new_tokens=48, batch_size=16)
    out.texts[0], out.new_tokens[0]
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig

from ..data.prompts import end_of_turn, has_chat_template, render
from ..data.tokenization import encode_texts, eos_id


@dataclass
class Generation:
    texts: list[str]  # decoded continuations, special tokens stripped, in input order
    new_tokens: list[int]  # tokens generated per prompt, the stop token included
    seconds: float  # wall time of the whole decode

    @property
    def tokens_per_s(self) -> float | None:
        return sum(self.new_tokens) / self.seconds if self.seconds > 0 else None


def prompt_ids_for(records: list[dict], tokenizer, prompt_format: str) -> list[list[int]]:
    """Token ids of each record's prompt, tokenized exactly as in training (BOS rule included)."""
    encoded = encode_texts([render(record, tokenizer, prompt_format) for record in records], tokenizer)
    return [e.prompt_ids for e in encoded]


def stop_token_ids(tokenizer) -> list[int]:
    """EOS, plus the chat end-of-turn marker when it is a single token other than EOS."""
    stops = [eos_id(tokenizer)]
    marker = end_of_turn(tokenizer) if has_chat_template(tokenizer) else ""
    if marker:
        ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and ids[0] not in stops:
            stops.append(int(ids[0]))
    return stops


def greedy_config(tokenizer, max_new_tokens: int) -> GenerationConfig:
    """Plain greedy search: the settings a checkpoint's generation_config.json may change are pinned."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id(tokenizer)
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        temperature=1.0,
        top_p=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        min_length=0,  # (not min_new_tokens=0: generate turns it into a min_length check at every step)
        eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=pad,
        use_cache=True,
    )


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def greedy_generate(
    model: nn.Module,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Generation:
    """Greedy continuations of token-id prompts, in eval mode; the model's train/eval mode is restored."""
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens} and {batch_size}")
    device = torch.device(device) if device is not None else model_device(model)
    config = greedy_config(tokenizer, max_new_tokens)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first: memory trouble shows at once
    texts, counts = [""] * len(prompts), [0] * len(prompts)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            input_ids, attention_mask = left_pad([prompts[i] for i in batch], config.pad_token_id, device)
            with _autocast(device, autocast_dtype):
                output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
            for i, ids in zip(batch, output[:, input_ids.shape[1] :].tolist()):  # (B, n_new)
                texts[i], counts[i] = _cut(ids, config.eos_token_id, tokenizer)
    finally:
        model.train(was_training)
    return Generation(texts, counts, time.perf_counter() - start)


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T): prompts right-aligned so generation continues each one."""
    if any(not p for p in prompts):
        raise ValueError("cannot generate from an empty prompt")
    longest = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, longest - len(prompt) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def _cut(ids: list[int], stop_ids: list[int], tokenizer) -> tuple[str, int]:
    """Text before the first stop token, and the number of tokens generated (the stop included)."""
    stop = next((pos for pos, token in enumerate(ids) if token in stop_ids), None)
    kept = ids if stop is None else ids[:stop]
    text = tokenizer.decode(kept, skip_special_tokens=True)
    marker = end_of_turn(tokenizer) if has_chat_template(tokenizer) else ""
    if marker and marker in text:  # a multi-token end-of-turn marker is not a stop token
        text = text.split(marker, 1)[0]
    return text, len(ids) if stop is None else stop + 1


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
