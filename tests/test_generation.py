"""Batched greedy generation, a split's generation metrics and predictions.jsonl, and the held-out loss,
on the tiny random Llama (embedded tokenizer and chat template)."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
from transformers import AutoModelForCausalLM

from adaptive_lora.config import EvalConfig
from adaptive_lora.data.prompts import render
from adaptive_lora.data.tokenization import build_example
from adaptive_lora.evaluation import (
    evaluate_generation,
    greedy_generate,
    held_out_loss,
    prompt_ids_for,
    read_predictions,
    split_metrics,
    stop_token_ids,
    write_predictions,
)
from adaptive_lora.models import load_tokenizer
from adaptive_lora.schema import PREDICTIONS_FILE

RECORDS = [
    {"row": 1, "instruction": "Add 2 and 3.", "input": "", "output": "5", "meta": {"task": "add", "verifiable": True}},
    {
        "row": 2,
        "instruction": "Repeat the words.",
        "input": "apple river stone cloud maple tiger lemon piano",
        "output": "apple river stone cloud maple tiger lemon piano",
        "meta": {"task": "repeat", "verifiable": True},
    },
    {"row": 3, "instruction": "Hi", "input": "", "output": "Hello! How can I help?", "meta": {"task": "chat"}},
    {"row": 4, "instruction": "Add 10 and 32.", "input": "", "output": "42", "meta": {"task": "add", "verifiable": True}},
    {"row": 5, "instruction": "Name a colour.", "input": "", "output": "Blue."},
]


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    return model, load_tokenizer(str(tiny_llama_dir))


def greedy_by_hand(model, prompt: list[int], steps: int) -> list[int]:
    """Reference greedy decoding: a full forward per step, no cache, no padding, argmax."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


def test_batched_equals_one_at_a_time_and_greedy_by_hand(tiny):
    model, tokenizer = tiny
    prompts = prompt_ids_for(RECORDS, tokenizer, "chat")
    assert len({len(p) for p in prompts}) >= 4  # different lengths, so batches are padded
    model.train()  # generation must switch to eval and back
    batched = greedy_generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=2)
    assert model.training
    model.eval()
    singles = [greedy_generate(model, tokenizer, [p], max_new_tokens=6, batch_size=1) for p in prompts]
    assert batched.texts == [s.texts[0] for s in singles]
    assert batched.new_tokens == [s.new_tokens[0] for s in singles]
    assert all(1 <= n <= 6 for n in batched.new_tokens)
    assert batched.tokens_per_s > 0
    # the KV-cached, left-padded decode is plain greedy decoding
    by_hand = greedy_by_hand(model, prompts[1], 6)
    assert eos_free(by_hand, tokenizer) and batched.new_tokens[1] == 6
    assert batched.texts[1] == tokenizer.decode(by_hand, skip_special_tokens=True)
    # a checkpoint's sampling / penalty defaults do not leak into greedy decoding
    saved = copy.deepcopy(model.generation_config)
    model.generation_config.update(do_sample=True, temperature=0.3, top_k=5, repetition_penalty=3.0, no_repeat_ngram_size=1)
    try:
        assert greedy_generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=5).texts == batched.texts
    finally:
        model.generation_config = saved
    # bf16 autocast goes through the same path (on CPU here)
    assert len(greedy_generate(model, tokenizer, prompts[:2], 2, 2, "cpu", torch.bfloat16).texts) == 2


def eos_free(ids: list[int], tokenizer) -> bool:
    return tokenizer.eos_token_id not in ids


def test_generation_stops_at_eos_and_nothing_after_it_appears(tiny):
    model, tokenizer = tiny
    prompts = prompt_ids_for(RECORDS[:3], tokenizer, "chat")
    raw = greedy_by_hand(model, prompts[0], 4)
    assert eos_free(raw, tokenizer)
    # Make EOS's output row twice the row of the token greedy picks at step 4: wherever that token wins
    # with a positive logit, EOS now wins, so prompt 0 stops at step 4 at the latest (earlier is fine).
    stopping = copy.deepcopy(model)
    with torch.no_grad():
        head = stopping.get_output_embeddings().weight  # (V, d)
        head[tokenizer.eos_token_id] = 2 * head[raw[3]]
    out = greedy_generate(stopping, tokenizer, prompts, max_new_tokens=12, batch_size=3)
    stopped_at = out.new_tokens[0]
    assert stopped_at <= 4
    # the same greedy tokens up to EOS, then nothing: not the padding nor any token after it
    assert out.texts[0] == tokenizer.decode(raw[: stopped_at - 1], skip_special_tokens=True)
    assert max(out.new_tokens) <= 12
    unbatched = [greedy_generate(stopping, tokenizer, [p], 12, 1) for p in prompts]
    assert out.texts == [u.texts[0] for u in unbatched] and out.new_tokens == [u.new_tokens[0] for u in unbatched]


def test_end_of_turn_token_is_a_stop_token(tiny_llama_dir):
    tokenizer = load_tokenizer(str(tiny_llama_dir))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(tokenizer) == [im_end]  # SmolLM2: <|im_end|> is EOS itself
    tokenizer.eos_token = "<|endoftext|>"  # a tokenizer whose end-of-turn marker is not its EOS
    assert stop_token_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|endoftext|>"), im_end]


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _rouge_l_by_hand(prediction: str, reference: str) -> float:
    p, r = _tokens(prediction), _tokens(reference)
    lcs = [[0] * (len(r) + 1) for _ in range(len(p) + 1)]
    for i, a in enumerate(p):
        for j, b in enumerate(r):
            lcs[i + 1][j + 1] = lcs[i][j] + 1 if a == b else max(lcs[i][j + 1], lcs[i + 1][j])
    common = lcs[len(p)][len(r)]
    return 0.0 if common == 0 else 2 * (common / len(p)) * (common / len(r)) / (common / len(p) + common / len(r))


def test_evaluate_generation_rows_reproduce_the_metrics(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    base, tokenizer = tiny
    torch.manual_seed(1)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # non-zero B: outputs change
    model = get_peft_model(copy.deepcopy(base), lora)
    # make two of the three verifiable answers right: their references become the model's own answers
    answers = greedy_generate(model, tokenizer, prompt_ids_for(RECORDS, tokenizer, "alpaca"), 5).texts
    records = copy.deepcopy(RECORDS)
    records[0]["output"], records[1]["output"] = answers[0].strip(), answers[1].strip()
    assert records[0]["output"] and records[1]["output"] and records[3]["output"] != answers[3].strip()
    config = EvalConfig(max_new_tokens=5, batch_size=3)

    metrics, rows = evaluate_generation(model, tokenizer, records, "alpaca", config, "cpu", "test")

    assert [row["exact_match"] for row in rows] == [True, True, None, False, None]
    assert metrics["exact_match"] == pytest.approx(2 / 3)
    assert metrics["exact_match_by_task"] == {"add": 0.5, "repeat": 1.0}
    assert (metrics["n_rows"], metrics["n_verifiable"]) == (5, 3)
    # ROUGE-L F1 by hand: rouge-score's tokens (lowercase ASCII letters and digits), longest common subsequence
    for row in rows:
        assert row["rouge_l"] == pytest.approx(_rouge_l_by_hand(row["prediction"], row["reference"])), row
    # rows 0 and 1: the reference is the model's own answer (which has words to score), so ROUGE-L is 1
    assert rows[0]["prediction"] == records[0]["output"] and _tokens(answers[0])
    assert rows[0]["rouge_l"] == rows[1]["rouge_l"] == pytest.approx(1.0)
    row = rows[2]
    assert (row["split"], row["row"], row["task"], row["reference"]) == ("test", 3, "chat", "Hello! How can I help?")
    assert row["prompt"] == render(records[2], tokenizer, "alpaca")[0] and row["prediction"] == answers[2].strip()
    assert rows[4]["task"] is None and all(1 <= r["new_tokens"] <= 5 for r in rows)
    assert metrics["tokens_per_s"] > 0 and metrics["seconds"] > 0

    write_predictions(tmp_path, rows)
    assert len((tmp_path / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()) == 5
    read_back = read_predictions(tmp_path)
    assert read_back == rows
    verifiable = [r["exact_match"] for r in read_back if r["exact_match"] is not None]
    assert sum(verifiable) / len(verifiable) == pytest.approx(metrics["exact_match"])
    assert sum(r["rouge_l"] for r in read_back) / 5 == pytest.approx(metrics["rouge_l"])
    assert split_metrics(read_back) == {k: v for k, v in metrics.items() if k not in ("tokens_per_s", "seconds")}
    # the base model's rows for the same data rows: their prompt, reference and task are written once
    base_rows = [{**row, "source": "base", "prediction": "", "rouge_l": 0.0} for row in rows]
    write_predictions(tmp_path, base_rows + rows)
    lines = [json.loads(line) for line in (tmp_path / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()]
    assert all({"prompt", "reference", "task"} <= set(line) for line in lines[:5])
    assert not any({"prompt", "reference", "task"} & set(line) for line in lines[5:])
    assert read_predictions(tmp_path) == base_rows + rows
    # one object a line even for text with Unicode line separators; NaN is written as null
    write_predictions(tmp_path, [{"prediction": "one\u2028two\nthree", "rouge_l": float("nan")}])
    assert read_predictions(tmp_path) == [{"prediction": "one\u2028two\nthree", "rouge_l": None}]
    assert read_predictions(tmp_path / "missing") == []

    capped, capped_rows = evaluate_generation(
        model, tokenizer, records, "alpaca", EvalConfig(max_new_tokens=5, max_rows=2), "cpu", "validation"
    )
    assert capped["n_rows"] == 2 and [r["prediction"] for r in capped_rows] == [r["prediction"] for r in rows[:2]]
    empty, _ = evaluate_generation(model, tokenizer, [], "alpaca", config, "cpu", "test")
    assert (empty["exact_match"], empty["rouge_l"], empty["n_rows"]) == (None, None, 0)


def test_held_out_loss_is_the_token_weighted_response_loss(tiny):
    model, tokenizer = tiny
    model.train()
    result = held_out_loss(model, tokenizer, RECORDS, "chat", sequence_len=64, batch_size=2, device="cpu")
    assert model.training
    # independently: transformers' own mean loss per example, weighted by its supervised tokens
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for record in RECORDS:
            example = build_example(record, tokenizer, "chat", 64)
            n = sum(label != -100 for label in example["labels"][1:])
            out = model(input_ids=torch.tensor([example["input_ids"]]), labels=torch.tensor([example["labels"]]))
            total, count = total + float(out.loss) * n, count + n
    assert result["tokens"] == count
    assert result["loss"] == pytest.approx(total / count, rel=1e-5)
    assert held_out_loss(model, tokenizer, [], "chat", 64, 2, "cpu") == {"loss": None, "tokens": 0}
