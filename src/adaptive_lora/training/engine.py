"""The training engine: a transformers `Trainer` with our loss, finiteness checks and metrics.

Using `Trainer` keeps accelerate, DDP/FSDP, checkpoint/resume and `report_to` from the ecosystem.
We change four things:
- the loss projects to the vocabulary only at supervised positions (`loss.supervised_loss_sum`);
- each batch is trained in forward/backward passes of at most `token_budget` tokens, padded or
  packed (`batching.micro_batches`): the optimizer step sees the same rows, memory follows the budget;
- every step checks that the loss and the gradients are finite, and stops with `Diverged` on the
  first non-finite value, *before* the optimizer can write NaN into the weights;
- metrics go to `metrics.jsonl` ourselves (`logging_nan_inf_filter` would hide NaN in HF's logs).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.integrations import TensorBoardCallback, is_tensorboard_available

from ..environment import peak_rss_bytes
from ..errors import UserError
from ..loss import evaluate_loss, supervised_loss_sum
from ..schema import TENSORBOARD_DIR, append_metrics
from .batching import micro_batches, supervised_count

# transformers 5 deprecates a method that PEFT's get_peft_model still calls; nothing for a user to act on.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


class Diverged(Exception):
    def __init__(self, step: int, what: str, last_finite_loss: float | None):
        self.step, self.what, self.last_finite_loss = step, what, last_finite_loss
        super().__init__(f"non-finite {what} at step {step}")


class Pruned(Exception):
    """Raised by an `on_eval` hook (a multi-fidelity search's pruner) to end a run early: status `pruned`."""

    def __init__(self, step: int):
        self.step = step
        super().__init__(f"pruned at step {step}")


@dataclass
class StepStats:
    """Counters shared by the trainer and its callbacks."""

    tokens: int = 0
    supervised_tokens: int = 0
    last_finite_loss: float | None = None
    peak_rss: int = 0  # bytes: the process's peak RSS so far (environment.peak_rss_bytes), read at each step end
    history: list[dict[str, Any]] = field(default_factory=list)


class AdapterTrainer(Trainer):
    """Trainer whose loss is a token-weighted mean over response tokens of the whole accumulated batch."""

    def __init__(
        self,
        *args,
        stats: StepStats,
        check_loss: bool = True,
        extra_loss=None,
        token_budget: int | None = None,
        packing: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.stats = stats
        self.check_loss = check_loss
        self.extra_loss = extra_loss  # e.g. AdaLoRA's orthogonality penalty: trained on, never reported as eval loss
        self.token_budget, self.packing = token_budget, packing  # see batching.py
        self._first_pass = True  # the extra loss is added once per batch, on its first pass
        # Let Trainer count supervised tokens across gradient accumulation (num_items_in_batch),
        # so accumulated steps weight every response token equally.
        self.model_accepts_loss_kwargs = True
        # TensorBoard events go to RUN/tensorboard (output_dir is RUN/checkpoints, removed after training),
        # unless the user chose a directory with TENSORBOARD_LOGGING_DIR.
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
                callback.logging_dir = str(Path(self.args.output_dir).parent / TENSORBOARD_DIR)

    def training_step(self, model, inputs, num_items_in_batch=None):
        """One batch in passes of at most `token_budget` tokens (packed when `packing`); gradients accumulate.

        Every pass divides its loss sum by the whole batch's supervised count, so the summed gradient is
        the unsplit batch's (a token-weighted mean over the rows of the optimizer step, as before).
        """
        passes = micro_batches(inputs, self.token_budget, self.packing)
        if len(passes) == 1 and passes[0] is inputs:
            return super().training_step(model, inputs, num_items_in_batch)
        if num_items_in_batch is None:
            num_items_in_batch = supervised_count(inputs)
        total = None
        try:
            for i, chunk in enumerate(passes):
                self._first_pass = i == 0
                loss = super().training_step(model, chunk, num_items_in_batch)
                total = loss if total is None else total + loss
        finally:
            self._first_pass = True
        return total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss_sum, count = supervised_loss_sum(model, inputs)
        if num_items_in_batch is not None:
            self.loss_is_scaled_for_ga = True
            loss = loss_sum / num_items_in_batch
        else:
            self.loss_is_scaled_for_ga = False
            loss = loss_sum / count.clamp(min=1)
        if self.extra_loss is not None and self._first_pass:
            loss = loss + self.extra_loss(model) / max(
                self.args.gradient_accumulation_steps if num_items_in_batch is not None else 1, 1
            )
        if self.check_loss:
            value = float(loss_sum.detach()) / max(int(count), 1)
            if not math.isfinite(value):
                raise Diverged(self.state.global_step + 1, "loss", self.stats.last_finite_loss)
            self.stats.last_finite_loss = value
        self.stats.tokens += int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else inputs["input_ids"].numel()
        self.stats.supervised_tokens += int(count)
        return (loss, None) if return_outputs else loss


class GuardCallback(TrainerCallback):
    """Stops on non-finite gradients before the optimizer step (clipping turns inf into NaN)."""

    def __init__(self, stats: StepStats, check_grads: bool = True):
        self.stats, self.check_grads = stats, check_grads

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.check_grads or model is None:
            return
        for param in model.parameters():
            if param.grad is not None and not torch.isfinite(param.grad).all():
                raise Diverged(state.global_step + 1, "gradient", self.stats.last_finite_loss)


class MetricsCallback(TrainerCallback):
    """Writes metrics.jsonl (and optional periodic eval) and feeds a progress sink."""

    def __init__(
        self,
        stats: StepStats,
        run_dir: Path,
        evaluate: Callable[[], dict] | None,
        eval_steps: int | None,
        progress: Callable[[int, int, float | None], None] | None,
        log: Callable[[str], None],
        on_eval: Callable[[int, float, int], None] | None = None,
    ):
        self.stats, self.run_dir, self.evaluate, self.eval_steps = stats, run_dir, evaluate, eval_steps
        self.progress, self.log = progress, log
        self.on_eval = on_eval  # (step, validation loss, training tokens so far) after each intermediate eval; may raise Pruned

    def write(self, record: dict[str, Any]) -> None:
        record = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in record.items()}
        self.stats.history.append(record)
        append_metrics(self.run_dir, record)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return
        record = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "tokens_seen": self.stats.tokens,
            "train_loss": logs.get("loss"),
            "learning_rate": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
        }
        self.write(record)
        self.log(
            f"step {state.global_step}/{state.max_steps} loss {logs.get('loss'):.4f} lr {logs.get('learning_rate', 0):.2e} grad_norm {logs.get('grad_norm') or float('nan'):.3f}"
        )

    def on_step_end(self, args, state, control, **kwargs):
        self.stats.peak_rss = max(self.stats.peak_rss, peak_rss_bytes())
        if self.progress:
            self.progress(state.global_step, state.max_steps, self.stats.last_finite_loss)
        if self.evaluate and self.eval_steps and state.global_step % self.eval_steps == 0 and state.global_step < state.max_steps:
            metrics = self.evaluate()
            self.write(
                {
                    "step": state.global_step,
                    "epoch": round(state.epoch or 0.0, 4),
                    "tokens_seen": self.stats.tokens,
                    "eval_loss": metrics["loss"],
                }
            )
            self.log(f"step {state.global_step} eval_loss {metrics['loss']:.4f}")
            if self.on_eval and math.isfinite(metrics["loss"]):
                self.on_eval(state.global_step, metrics["loss"], self.stats.tokens)


class _TrainingArguments(TrainingArguments):
    def get_warmup_steps(self, num_training_steps: int) -> int:
        """A warm-up ratio rounds down, where transformers rounds up: linear warm-up gives its first step
        learning rate 0, so rounding up made a one-step run (max_steps=1) train nothing."""
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        return math.floor(num_training_steps * self.warmup_steps)


def training_arguments(cfg, output_dir: Path, precision: str, device: str, has_checkpoints: bool) -> TrainingArguments:
    t = cfg.training
    if t.report_to == "tensorboard" and not is_tensorboard_available():
        raise UserError(
            "training.report_to=tensorboard needs TensorBoard: pip install 'adaptive-lora[tensorboard]' (or report_to=none)"
        )
    return _TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        lr_scheduler_type=t.lr_scheduler,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        logging_nan_inf_filter=False,
        save_strategy="steps" if has_checkpoints else "no",
        save_steps=t.save_steps or 500,
        report_to=[] if t.report_to in ("none", "", None) else [t.report_to],
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=t.gradient_checkpointing,
        disable_tqdm=True,
        remove_unused_columns=False,
        eval_strategy="no",
        dataloader_num_workers=0,
        use_cpu=device == "cpu",
        train_sampling_strategy="group_by_length" if cfg.data.group_by_length else "random",
    )


def timed_eval(model, loader, device, autocast_dtype) -> Callable[[], dict]:
    def run() -> dict:
        start = time.perf_counter()
        metrics = evaluate_loss(model, loader, device, autocast_dtype)
        metrics["seconds"] = time.perf_counter() - start
        return metrics

    return run
