"""After training: the numbers a run reports, for the adapter and (once per base) for the untrained base.

    validation   response-token loss on the validation split (selection and curves)
    test         loss on the test split, and greedy-generation metrics (exact match on verifiable rows,
                 ROUGE-L F1 on every row); the prediction rows go to predictions.jsonl. Reported only:
                 nothing is ever selected on it.
    forgetting   response loss on held-out text the run never trained on (by default the other built-in
                 data set), before and after: delta = after - before, positive = the adapter forgot.

The base model's values on the same rows are computed once per BaseContext and reported with every
run, so each metric has its "improvement over base".
"""

from __future__ import annotations

import random
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..config import RunConfig
from ..data import Collator, load_records
from ..data.sources import BUILTIN
from ..environment import autocast_dtype
from ..errors import UserError
from ..evaluation import evaluate_generation, held_out_loss
from ..loss import evaluate_loss, safe_exp
from .base import BaseContext
from .base_store import base_store_key, stored_base_scores

SKILLS = "skills"


def forgetting_source(cfg: RunConfig) -> str | None:
    """The held-out text of the forgetting measure: eval.forgetting, where `auto` is the other built-in set."""
    source = cfg.eval.forgetting
    if source in (None, "", "none", "off"):
        return None
    if source == "auto":
        return SKILLS if cfg.data.source == BUILTIN else BUILTIN
    if source == cfg.data.source:
        raise UserError(f"eval.forgetting={source!r} is the training data itself; name other text, or set eval.forgetting=null")
    return source


def forgetting_records(cfg: RunConfig) -> list[dict]:
    """eval.forgetting_rows rows of the forgetting source, chosen by a fixed seed (the same for every run)."""
    source = forgetting_source(cfg)
    if source is None:
        return []
    records, _ = load_records(source)
    random.Random(0).shuffle(records)
    return records[: cfg.eval.forgetting_rows]


def _loader(base: BaseContext, examples: list[dict]) -> DataLoader:
    return DataLoader(
        examples, batch_size=base.config.training.micro_batch_size, shuffle=False, collate_fn=Collator(base.tokenizer)
    )


def _loss_block(metrics: dict) -> dict[str, Any]:
    loss = metrics["loss"] if metrics["tokens"] else None
    return {"loss": loss, "perplexity": safe_exp(loss) if loss is not None else None, "n_tokens": metrics["tokens"]}


def score(
    model: torch.nn.Module, base: BaseContext, cfg: RunConfig, source: str, validation: dict | None = None
) -> tuple[dict[str, Any], list[dict]]:
    """Validation, test and forgetting numbers for `model`, and its prediction rows (tagged with `source`).

    `validation`: an evaluate_loss result for the validation split already computed (not redone).
    """
    started = time.perf_counter()
    autocast = autocast_dtype(base.precision)
    validation = validation or evaluate_loss(model, base.eval_loader(), base.device, autocast)
    scores: dict[str, Any] = {"validation": _loss_block(validation)}
    rows: list[dict] = []
    splits = [("test", base.data.test, base.data.test_records)]
    if cfg.eval.on_validation:
        splits.append(("validation", base.data.eval, base.data.eval_records))
    for name, examples, records in splits:
        if not examples:
            scores.setdefault(name, None)
            continue
        block = (
            scores[name]
            if name == "validation"
            else _loss_block(evaluate_loss(model, _loader(base, examples), base.device, autocast))
        )
        if cfg.eval.generate:
            metrics, split_rows = evaluate_generation(
                model, base.tokenizer, records, base.data.prompt_format, cfg.eval, base.device, name, autocast
            )
            rows += [{**row, "source": source} for row in split_rows]
            block.update({k: metrics[k] for k in ("exact_match", "rouge_l", "n_rows", "n_verifiable", "exact_match_by_task")})
            block["generation_tokens_per_s"] = metrics.get("tokens_per_s")
        scores[name] = block
    held_out = base.cache.setdefault("forgetting_records", forgetting_records(cfg))
    if held_out:
        loss = held_out_loss(
            model,
            base.tokenizer,
            held_out,
            base.data.prompt_format,
            cfg.training.sequence_len,
            cfg.training.micro_batch_size,
            base.device,
            autocast,
        )
        scores["forgetting"] = {"source": forgetting_source(cfg), "loss": loss["loss"], "n_tokens": loss["tokens"]}
    else:
        scores["forgetting"] = None
    scores["seconds"] = time.perf_counter() - started
    return scores, rows


def base_scores(base: BaseContext, cfg: RunConfig) -> tuple[dict[str, Any], list[dict]]:
    """`score` of the untrained base, computed once per BaseContext and evaluation settings, and once per
    sweep when the base has a store (a sweep directory: base_store.py), where workers and restarts reuse it."""
    key = ("base_scores", repr(cfg.eval))
    if key not in base.cache:

        def compute() -> dict[str, Any]:
            scores, rows = score(base.model, base, cfg, "base", validation=base.base_eval())
            return {"validation": base.base_eval(), "scores": scores, "rows": rows}

        if base.store is None:
            value = compute()
        else:
            store_key = base_store_key(cfg, base.precision, base.device, base.data.report.split_hashes, forgetting_source(cfg))
            value = stored_base_scores(base.store, store_key, compute)
        base.remember_base_eval(value["validation"])
        base.cache[key] = (value["scores"], value["rows"])
    return base.cache[key]


def result_fields(adapter: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """result.json's validation / test / forgetting / base sections (docs/run-format.md)."""
    forgetting = None
    if adapter.get("forgetting") and base.get("forgetting"):
        before, after = base["forgetting"]["loss"], adapter["forgetting"]["loss"]
        forgetting = {
            "source": adapter["forgetting"]["source"],
            "base_loss": before,
            "loss": after,
            "delta": after - before if before is not None and after is not None else None,
            "n_tokens": adapter["forgetting"]["n_tokens"],
        }
    return {
        "validation": adapter["validation"],
        "test": adapter.get("test"),
        "forgetting": forgetting,
        "base": {"validation": base["validation"], "test": base.get("test")},
        "eval_time_s": adapter["seconds"],
    }
