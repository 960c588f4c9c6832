"""`train()`: one fine-tuning run with any allocation, into a complete run directory.

    base = prepare_base(config)          # model, tokenizer, tokenised data: shareable across runs
    result = train(config, base=base)    # plan -> attach -> Trainer -> eval -> adapter/ + result.json

A run that goes wrong says so: `result["status"]` is `done`, `diverged` (with the step and the
last finite loss), `oom`, `error` or `interrupted`, and no number in result.json is NaN. A run that an
`on_eval` hook stops early (a search's pruner) ends `pruned`, never `done`.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft.utils.warning import PeftWarning
from transformers import PrinterCallback, set_seed

from ..allocation import Allocation
from ..config import RunConfig, dump_yaml, load_run_config
from ..data import Collator
from ..environment import autocast_dtype, environment, resolve_packing, resolve_token_budget, resolved_precision_override
from ..errors import UserError
from ..io import write_json
from ..planning import plan_from_config
from ..schema import ADAPTER_DIR, CHECKPOINT_DIR, DATA_REPORT_FILE, LOG_FILE, read_result, write_predictions, write_result
from ..strategies import Attached, TrainingContext, hooks_for
from ..workdirs import check_run_dir, claimed_run_dir, clear_run_dir
from .base import BaseContext, prepare_base
from .engine import AdapterTrainer, Diverged, GuardCallback, MetricsCallback, Pruned, StepStats, timed_eval, training_arguments
from .phases import PhaseTimer
from .scoring import base_scores, result_fields, score

log = logging.getLogger(__name__)
Progress = Callable[[int, int, "float | None"], None]
OnEval = Callable[[int, float, int], None]  # (step, validation loss, training tokens so far); may raise Pruned


def finished_result(run_dir: str | Path) -> dict | None:
    result, _ = read_result(run_dir)
    return result if result and result["status"] == "done" else None


def finished_run_of(cfg: RunConfig) -> dict | None:
    """The result in cfg.output.dir if it is a finished run of this config; an error if it is another config's."""
    done = finished_result(cfg.output.dir)
    if done and _without_output(done.get("config")) != _without_output(cfg.to_dict()):
        raise UserError(
            f"{cfg.output.dir} holds a finished run of a different config; choose another output.dir (--out) or overwrite it (--overwrite)"
        )
    return done


def _without_output(config: dict | None) -> dict | None:
    return {k: v for k, v in config.items() if k != "output"} if isinstance(config, dict) else None


def train(
    config: RunConfig | dict | str | Path | None = None,
    *,
    overrides: list[str] | None = None,
    base: BaseContext | None = None,
    allocation: Allocation | None = None,
    progress: Progress | None = None,
    run_id: str | None = None,
    labels: dict[str, Any] | None = None,
    keep_failures: bool = False,
    on_eval: OnEval | None = None,
) -> dict:
    """Train one adapter and return the result dict that is also written to result.json.

    A finished run directory is never overwritten: its result is returned as it is, unless
    `output.overwrite` is set. A directory that is not an adaptive-lora run directory is refused, and
    so is one that another process is training (the run claims its directory under a lock).
    Bad input (data, model, strategy) fails before the run directory is created, unless
    `keep_failures` (sweeps: every run of the grid leaves its result, a failure with its reason).
    `on_eval` hears every intermediate validation (training.eval_steps) and may end the run with `Pruned`.
    """
    cfg = resolved_config(_as_config(config, overrides))
    check_run_dir(cfg.output.dir)
    done = None if cfg.output.overwrite else finished_run_of(cfg)
    if done:
        log.info("%s already holds a finished run; returning its result", cfg.output.dir)
        return done
    timer = PhaseTimer()
    try:
        with timer.phase("load"):
            if base is None or not base.compatible_with(cfg):
                base = prepare_base(cfg)
        with timer.phase("plan"):
            allocation = allocation or plan_from_config(base.model, cfg.allocation, data=base.data, seed=cfg.training.seed)
    except UserError as exc:
        if not keep_failures:
            raise
        failure: Exception | None = exc
    else:
        failure = None
    with claimed_run_dir(cfg.output.dir) as run_dir:
        done = None if cfg.output.overwrite else finished_run_of(cfg)  # finished while we prepared
        if done:
            return done
        clear_run_dir(run_dir, keep_checkpoints=cfg.output.resume)
        run = _Run(cfg, run_dir, run_id or cfg.config_id(), labels or {}, timer)
        return run.execute(base, allocation, progress, failure, on_eval)


def resolved_config(cfg: RunConfig) -> RunConfig:
    """The config a run records: `model.precision: auto` pinned to what this machine runs (so two machines that
    would choose differently never share a run directory or an id), and output.dir defaulted."""
    return cfg.with_overrides(resolved_precision_override(cfg.model.precision, cfg.model.device)).with_default_output()


def _as_config(config, overrides) -> RunConfig:
    if isinstance(config, RunConfig):
        return config.with_overrides(overrides or [])
    if isinstance(config, dict):
        return RunConfig.from_dict(config).with_overrides(overrides or [])
    return load_run_config(config, overrides)


class _Run:
    """One run's lifecycle: set up, train, evaluate, save, and always write result.json."""

    def __init__(self, cfg: RunConfig, run_dir: Path, run_id: str, labels: dict[str, Any], timer: PhaseTimer):
        self.cfg, self.dir, self.run_id, self.labels, self.timer = cfg, run_dir, run_id, labels, timer
        self.result: dict[str, Any] = {
            "run_id": run_id,
            "status": "running",
            "error": None,
            "diverged_step": None,
            "last_finite_loss": None,
        }
        self.base: BaseContext | None = None
        self.allocation: Allocation | None = None
        self.stats: StepStats | None = None
        self.train_seconds: float | None = None
        self.base_scores: dict[str, Any] = {}
        self.steps = 0

    def log(self, message: str) -> None:
        log.info(message)
        with open(self.dir / LOG_FILE, "a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%H:%M:%S')} {message}\n")

    def execute(
        self,
        base: BaseContext,
        allocation: Allocation | None,
        progress: Progress | None,
        failure: Exception | None = None,
        on_eval: OnEval | None = None,
    ) -> dict:
        self.base = base
        try:
            if failure is not None:
                raise failure
            self._record_setup(base, allocation)
            self._train(base, progress, on_eval)
            self.result["status"] = "done"
        except Pruned as exc:
            self.result.update(status="pruned", error=None)
            self.log(f"pruned at step {exc.step}: stopped early by the search's pruner")
        except Diverged as exc:
            self.result.update(status="diverged", error=str(exc), diverged_step=exc.step, last_finite_loss=exc.last_finite_loss)
        except torch.OutOfMemoryError as exc:
            self.result.update(status="oom", error=_one_line(exc))
        except KeyboardInterrupt:
            self.result.update(status="interrupted", error="interrupted by the user (Ctrl-C or a kill)")
            self._finish()
            raise
        except UserError as exc:
            self.result.update(status="error", error=str(exc))
            self._finish()
            raise
        except Exception as exc:  # noqa: BLE001 - any failure becomes status "error" with one line
            log.debug("run %s failed", self.run_id, exc_info=True)
            self.result.update(status="error", error=_one_line(exc))
        self._finish()
        return self.result

    # --- phases ---
    def _record_setup(self, base: BaseContext, allocation: Allocation) -> None:
        dump_yaml(self.cfg, self.dir / "config.yaml")
        write_json(self.dir / DATA_REPORT_FILE, base.data.report.to_dict())
        self.allocation = allocation
        self.allocation.save(self.dir)
        self.log(f"precision {base.precision} on {base.device}")
        self.log(
            f"{self.allocation.strategy}: {self.allocation.trainable_params:,} trainable parameters ({self.allocation.efficiency_pct:.3f}% of base)"
        )

    def _train(self, base: BaseContext, progress: Progress | None, on_eval: OnEval | None = None) -> None:
        with self.timer.phase("base_eval"):  # computed once per sweep and stored (scoring.base_scores)
            self.base_scores, base_rows = base_scores(base, self.cfg)
        base_metrics = base.base_eval()
        self.result.update(base_eval_loss=base_metrics["loss"], base_perplexity=base_metrics["perplexity"])
        self.log(f"base eval loss {base_metrics['loss']:.4f} on {base_metrics['tokens']} response tokens")
        set_seed(self.cfg.training.seed)
        strategy = hooks_for(self.allocation.strategy)
        context = TrainingContext(
            data=base.data,
            seed=self.cfg.training.seed,
            max_steps=self.cfg.training.max_steps,
            lora_dropout=self.cfg.allocation.lora_dropout,
        )
        attached: Attached = base.attach(strategy, self.allocation, context)  # on the shared base: _finish releases it
        peft_model = attached.model
        if self.cfg.training.gradient_checkpointing:
            peft_model.enable_input_require_grads()
        self.stats = stats = StepStats()
        evaluate = timed_eval(peft_model, base.eval_loader(), base.device, autocast_dtype(base.precision))
        metrics = MetricsCallback(stats, self.dir, evaluate, self.cfg.training.eval_steps, progress, self.log, on_eval)
        resume_from = self._checkpoint_to_resume()
        if not resume_from:  # the base's eval loss is the eval curve's first point
            metrics.write({"step": 0, "epoch": 0.0, "tokens_seen": 0, "eval_loss": base_metrics["loss"]})
        trainer = AdapterTrainer(
            model=peft_model,
            args=training_arguments(
                self.cfg, self.dir / CHECKPOINT_DIR, base.precision, base.device, bool(self.cfg.training.save_steps)
            ),
            train_dataset=base.data.train,
            data_collator=Collator(base.tokenizer),
            callbacks=[
                GuardCallback(stats, check_grads=base.precision != "fp16"),  # fp16's loss scaler skips inf steps itself
                metrics,
                *attached.callbacks,
            ],
            stats=stats,
            extra_loss=attached.extra_loss,
            token_budget=resolve_token_budget(self.cfg.training.token_budget, base.device),
            packing=resolve_packing(self.cfg.training.packing, base.device),
        )
        trainer.remove_callback(PrinterCallback)  # our MetricsCallback logs; HF's printer would dump dicts to stdout
        if base.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            with self.timer.phase("train"):
                trainer.train(resume_from_checkpoint=resume_from)
        finally:
            self.train_seconds = time.perf_counter() - start
            self.steps = trainer.state.global_step
        with self.timer.phase("eval"):
            self._evaluate(peft_model, base, evaluate, metrics, trainer.state, (strategy, attached), base_rows)
        self.log(
            f"eval loss {self.result['eval_loss']:.4f} (base {base_metrics['loss']:.4f}) after {self.steps} steps in {self.train_seconds:.1f}s"
        )
        with self.timer.phase("save"):
            if self.cfg.output.save_adapter:
                self._save_adapter(peft_model)
        shutil.rmtree(self.dir / CHECKPOINT_DIR, ignore_errors=True)  # the adapter is the product

    def _evaluate(self, peft_model, base, evaluate, metrics, state, hooks, base_rows) -> None:
        """Final validation loss (the eval curve's last point), the learned allocation, test and forgetting scores."""
        strategy, attached = hooks
        final = evaluate()
        metrics.write(
            {
                "step": self.steps,
                "epoch": round(state.epoch or 0.0, 4),
                "tokens_seen": self.stats.tokens,
                "eval_loss": final["loss"],
            }
        )
        self.allocation = strategy.finalize(attached, self.allocation)
        self.allocation.save(self.dir)
        if not math.isfinite(final["loss"]):
            raise Diverged(self.steps, "eval loss", self.stats.last_finite_loss)
        scores, rows = score(peft_model, base, self.cfg, "adapter", validation=final)
        write_predictions(self.dir, base_rows + rows)
        self.result.update(eval_loss=final["loss"], perplexity=final["perplexity"], **result_fields(scores, self.base_scores))

    def _checkpoint_to_resume(self) -> str | None:
        if not self.cfg.output.resume:
            return None
        checkpoints = sorted((self.dir / CHECKPOINT_DIR).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        complete = [c for c in checkpoints if (c / "trainer_state.json").is_file()]
        return str(complete[-1]) if complete else None

    def _save_adapter(self, peft_model) -> None:
        tmp = self.dir / f".{ADAPTER_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with warnings.catch_warnings():
            if self.allocation is not None and self.allocation.meta.get("zero_rank_modules"):
                # Modules pruned to rank 0 save as empty lora_A/lora_B on purpose; PEFT takes any empty
                # tensor for an ungathered ZeRO-3 shard and warns that the adapter is incomplete. It is not.
                warnings.filterwarnings("ignore", message=r"Adapter .* invalid shape", category=PeftWarning)
            peft_model.save_pretrained(tmp)
        shutil.rmtree(self.dir / ADAPTER_DIR, ignore_errors=True)
        tmp.rename(self.dir / ADAPTER_DIR)

    def _finish(self) -> None:
        if self.base is not None:
            self.base.release()  # the shared base loses this run's adapters, whatever happened
        self.result.update(self._summary())
        write_result(self.dir, self.result)
        self.log(f"status {self.result['status']}" + (f": {self.result['error']}" if self.result.get("error") else ""))

    def _summary(self) -> dict[str, Any]:
        cfg, alloc, stats, seconds = self.cfg, self.allocation, self.stats, self.train_seconds
        base_loss, loss = self.result.get("base_eval_loss"), self.result.get("eval_loss")
        probe_time = float(alloc.meta.get("probe_time_s") or 0.0) if alloc else 0.0
        return {
            "strategy": cfg.allocation.strategy,
            "label": self.labels.get("label", cfg.allocation.strategy),
            "budget_label": self.labels.get("budget_label", "own"),
            "strategy_params": alloc.params if alloc else cfg.allocation.params,
            "budget": {
                "target": alloc.budget.get("target") if alloc else None,
                "budget_rank": cfg.allocation.budget_rank,
                "achieved": alloc.trainable_params if alloc else None,
            },
            "seed": cfg.training.seed,
            "model": cfg.model.name,
            "eval_loss": loss,
            "perplexity": self.result.get("perplexity"),
            "improvement": base_loss - loss if base_loss is not None and loss is not None else None,
            "improvement_pct": 100 * (base_loss - loss) / base_loss if base_loss and loss is not None else None,
            "final_train_loss": _final_train_loss(stats),
            "trainable_params": alloc.trainable_params if alloc else None,
            "total_params": alloc.total_params if alloc else None,
            "efficiency_pct": alloc.efficiency_pct if alloc else None,
            "allocation_summary": {k: v for k, v in alloc.summary().items() if k != "params_by_layer"} if alloc else None,
            "steps": self.steps,
            "train_time_s": seconds + probe_time if seconds is not None else None,
            "probe_time_s": probe_time,
            "wall_time_s": self.timer.elapsed(),
            "time_by_phase_s": self.timer.seconds(),
            "tokens_seen": stats.tokens if stats else 0,
            "supervised_tokens_seen": stats.supervised_tokens if stats else 0,
            "tokens_per_s": stats.tokens / seconds if stats and seconds else None,
            "supervised_tokens_per_s": stats.supervised_tokens / seconds if stats and seconds else None,
            "peak_memory_mb": self._peak_memory_mb(),
            "data": self._data_summary(),
            "precision": self.base.precision if self.base else None,
            "environment": environment(self.base.device, self.base.precision) if self.base else environment("cpu"),
            "config": cfg.to_dict(),
        }

    def _peak_memory_mb(self) -> float | None:
        if self.base and self.base.device.startswith("cuda"):
            return torch.cuda.max_memory_allocated() / 2**20
        return self.stats.peak_rss / 2**20 if self.stats and self.stats.peak_rss else None

    def _data_summary(self) -> dict[str, Any]:
        if self.base is None:
            return {"source": self.cfg.data.source}
        report = self.base.data.report
        return {
            "source": report.source,
            "hash": report.content_hash,
            "split_hashes": report.split_hashes,
            "n_train": report.n_train,
            "n_eval": report.n_eval,
            "n_test": report.n_test,
        }


def _final_train_loss(stats: StepStats | None) -> float | None:
    if not stats:
        return None
    losses = [h["train_loss"] for h in stats.history if h.get("train_loss") is not None]
    return losses[-1] if losses else stats.last_finite_loss


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
