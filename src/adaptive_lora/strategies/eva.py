"""`eva`: Explained Variance Adaptation (Paischer et al., 2024) through PEFT's implementation.

Plan time: PEFT's incremental SVD of every targeted module's *inputs* on a few training batches, with
rank redistribution (rho > 1): each module may take up to rho * r components and the r * n_modules
components that explain the most variance win. That pattern is the rank *shape*; EVA balances summed
ranks, not parameters, so `plan()` rescales it to the parameter budget like any other shape. Modules
EVA gives rank 0 stay in the record as `meta["zero_rank_modules"]` (not adapted).

Training: the LoRA A matrices are initialised with the top right-singular vectors of each module's
inputs at the final, budget-matched ranks (B = 0, so training starts from the base model). PEFT's
rho = 1 would still move ranks between modules that share an input (q/k/v, gate/up), so we run its
SVD with every module at the largest final rank (rho = 1: nothing is redistributed), keep each
module's leading `rank` components - the prefix EVA itself would keep - and load them with
`initialize_lora_eva_weights`. Both SVDs count into `probe_time_s`.

PEFT cycles over the batches until the components converge (cosine similarity >= tau between two
updates), a test meant for a stream of fresh data. Our probe is a fixed handful of batches, and
repeating them does not change the PCA they define, so after `passes` passes (default 2) over them
our forward function marks the components converged and PEFT takes them as they are then
(`meta["eva_forced_convergence"]` says whether this happened, `meta["eva_iterations"]` counts the
forward passes, the first of which only detects modules that share an input).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Any

import torch
from torch import nn

from ..allocation import Allocation, verify
from ..anatomy import Anatomy
from ..errors import UserError
from ..loss import causal_lm_of, supports_sparse_head
from ..schema import IGNORE_INDEX
from .base import Attached, Param, Strategy, StrategyOutput, TrainingContext, register
from .scoring import PROBE_PARAMS, draw_probe_batches

log = logging.getLogger(__name__)


class _GuardedForward:
    """PEFT's EVA forward function, running only the decoder body (EVA hooks the linear layers'
    inputs; the vocabulary projection is not needed), and ending the SVD loop after `limit` passes."""

    def __init__(self, limit: int):
        self.limit, self.calls, self.forced = limit, 0, False

    def __call__(self, model: nn.Module, inputs: dict) -> None:
        from peft.tuners.lora.eva import SVDHook

        if self.calls >= self.limit:
            hooks = [h for m in model.modules() for h in m._forward_hooks.values() if isinstance(h, SVDHook)]
            if all(hasattr(h.svd, "components_") for h in hooks):  # else feed the batch: every hook needs components
                for hook in hooks:
                    hook.converged = torch.ones_like(hook.converged)
                self.forced = self.forced or bool(hooks)
                return
        self.calls += 1
        causal_lm = causal_lm_of(model)
        kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs.get("attention_mask")}
        if supports_sparse_head(causal_lm):
            causal_lm.base_model(**kwargs)
        else:
            model(**kwargs)


def eva_components(
    model: nn.Module,
    ranks: dict[str, int],
    batches: list[dict],
    *,
    rho: float,
    tau: float,
    use_label_mask: bool,
    whiten: bool,
    passes: int,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """PEFT's `get_eva_state_dict` on a plain (not PEFT-wrapped) model: module name -> (rank', in) components,
    where rank' comes from EVA's redistribution of sum(ranks) over modules (each capped at round(rank * rho))."""
    from peft import EvaConfig, LoraConfig
    from peft.tuners.lora.eva import get_eva_state_dict

    names = list(ranks)
    widest = max(round(r * rho) for r in ranks.values())
    tokens = [int(_token_mask(b, use_label_mask).sum()) for b in batches]
    if not tokens or max(tokens) < widest:
        raise UserError(
            f"eva: every probe batch has fewer {'supervised ' if use_label_mask else ''}tokens ({max(tokens or [0])}) than the "
            f"{widest} components EVA estimates; raise probe_batch_size, or set use_label_mask=false"
        )
    base_r = max(set(ranks.values()), key=list(ranks.values()).count)
    config = LoraConfig(
        r=base_r,
        target_modules=names,
        rank_pattern={_escape(n): r for n, r in ranks.items() if r != base_r},
        init_lora_weights="eva",
        eva_config=EvaConfig(rho=rho, tau=tau, use_label_mask=use_label_mask, whiten=whiten),
    )
    forward = _GuardedForward(1 + passes * len(batches))
    was_training = model.training
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(_Quiet()):
            warnings.simplefilter("ignore")
            state = get_eva_state_dict(model, batches, peft_config=config, forward_fn=forward, show_progress_bar=False)
    finally:
        model.train(was_training)
    state = {name: u.detach() for name, u in state.items()}
    return state, {"eva_iterations": forward.calls, "eva_forced_convergence": forward.forced}


def eva(
    anatomy: Anatomy,
    *,
    rank: int,
    rho: float,
    tau: float,
    probe_batches: int,
    probe_batch_size: int,
    passes: int,
    use_label_mask: bool,
    whiten: bool,
    init: bool,
    model: nn.Module,
    data: Any,
    seed: int,
) -> StrategyOutput:
    """The rank pattern EVA's redistribution gives r per module (rho x r at most), as a shape."""
    if isinstance(model, str):
        raise UserError("eva needs the loaded model (real weights), not a model name")
    if rho < 1:
        raise UserError(f"eva: rho must be >= 1 (1 = no redistribution), got {rho}")
    if not 0 <= tau <= 1:
        raise UserError(f"eva: tau is a cosine similarity in [0, 1], got {tau}")
    start = time.perf_counter()
    batches, rows = draw_probe_batches(data, model, seed, probe_batches, probe_batch_size)
    state, info = eva_components(
        model,
        {n: rank for n in anatomy.names},
        batches,
        rho=rho,
        tau=tau,
        use_label_mask=use_label_mask,
        whiten=whiten,
        passes=passes,
    )
    eva_ranks = {n: int(state[n].shape[0]) if n in state else 0 for n in anatomy.names}
    meta = {
        "method": "eva",
        "eva_ranks": eva_ranks,
        "eva_rank_budget": rank * len(anatomy.names),
        **info,
        "probe_time_s": time.perf_counter() - start,
        "probe_batches": len(batches),
        "probe_rows": [i for chunk in rows for i in chunk],
    }
    return StrategyOutput({n: float(r) for n, r in eva_ranks.items()}, {n: float(r) for n, r in eva_ranks.items()}, meta)


class EvaStrategy(Strategy):
    """EVA's rank shape at plan time; at attach time LoRA A is initialised with EVA components (unless init=false)."""

    def changes_in(self, params: dict[str, Any]) -> tuple[str, ...]:
        return self.changes if self.resolve(self._own(params))["init"] else ()

    def _own(self, params: dict[str, Any] | None) -> dict[str, Any]:
        return {k: v for k, v in (params or {}).items() if k in {q.name for q in self.params}}

    def attach(self, model: nn.Module, allocation: Allocation, context: TrainingContext) -> Attached:
        """LoRA at the planned ranks with A initialised by EVA on the same kind of probe batches (see the module doc)."""
        from peft import EvaConfig, get_peft_model, initialize_lora_eva_weights

        p = self.resolve(self._own(allocation.params))
        if not p["init"]:
            attached = super().attach(model, allocation, context)
            attached.notes = {"eva_init": "off: LoRA A has PEFT's default initialisation"}
            return attached
        if context.data is None:
            log.warning("eva: no training data to attach with; LoRA A keeps PEFT's default initialisation")
            attached = super().attach(model, allocation, context)
            attached.notes = {"eva_init": "skipped: no training data in the attach context"}
            return attached
        start = time.perf_counter()
        batches, rows = draw_probe_batches(context.data, model, context.seed, p["probe_batches"], p["probe_batch_size"])
        widest = max(allocation.ranks.values())  # one width for all: rho = 1 then redistributes nothing
        by_name = allocation.anatomy.by_name()
        state, info = eva_components(
            model,
            {n: min(widest, by_name[n].in_features) for n in allocation.ranks},
            batches,
            rho=1.0,
            tau=p["tau"],
            use_label_mask=p["use_label_mask"],
            whiten=p["whiten"],
            passes=p["passes"],
        )
        short = [n for n, r in allocation.ranks.items() if n not in state or state[n].shape[0] < r]
        if short:
            raise RuntimeError(
                f"eva: fewer EVA components than planned ranks for {len(short)} modules, e.g. {short[0]} "
                "(a rank above the module's input size cannot be EVA-initialised; set allocation.params.init=false)"
            )
        eva_state = {f"base_model.model.{n}": state[n][:r] for n, r in allocation.ranks.items()}
        config = allocation.to_peft_config(
            lora_dropout=context.lora_dropout,
            init_lora_weights="eva",
            eva_config=EvaConfig(rho=1.0, tau=p["tau"], adjust_scaling_factors=False),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peft_model = get_peft_model(model, config)
            initialize_lora_eva_weights(peft_model, eva_state_dict=eva_state, show_progress_bar=False)
        verify(peft_model, allocation)
        seconds = time.perf_counter() - start
        notes = {
            "eva_init": "lora_A from EVA components at the final ranks",
            "eva_init_time_s": seconds,
            "eva_init_iterations": info["eva_iterations"],
            "eva_init_forced_convergence": info["eva_forced_convergence"],
            "eva_init_rows": [i for chunk in rows for i in chunk],
        }
        return Attached(peft_model, notes=notes, extra_probe_time_s=seconds)


def _token_mask(batch: dict, use_label_mask: bool) -> torch.Tensor:
    mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"])).bool()
    if use_label_mask and "labels" in batch:
        mask = mask & (batch["labels"] != IGNORE_INDEX)
    return mask


def _escape(name: str) -> str:
    import re

    return re.escape(name)


class _Quiet:
    """PEFT prints (not logs) 'skipping SVD ...' for batches with too few tokens; keep stdout clean."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("peft eva: %s", text.strip())
        return len(text)

    def flush(self) -> None:
        pass


register(
    EvaStrategy(
        "eva",
        "PEFT's EVA: rank pattern from the explained variance of each module's inputs (rho > 1), A initialised by EVA",
        eva,
        (
            Param("rank", int, 8, "r EVA redistributes (summed over modules); the shape is then budget-matched", 1),
            Param("rho", float, 2.0, "a module may take up to rho x r components (1 = no redistribution)", 1.0),
            Param("tau", float, 0.99, "cosine similarity at which PEFT's incremental SVD counts as converged", 0.0),
            *PROBE_PARAMS,
            Param("passes", int, 2, "passes over the probe batches after which the SVD counts as converged", 1),
            Param("use_label_mask", bool, True, "SVD over response tokens only"),
            Param("whiten", bool, False, "whiten the components (EVA option)"),
            Param("init", bool, True, "initialise LoRA A with EVA components at the final ranks when training"),
        ),
        rank_param="rank",
        needs=("weights", "data"),
        changes=("initialisation",),
        controls=(
            {"label": "eva init, uniform ranks", "params": {"rho": 1.0}, "isolates": "initialisation"},
            {"label": "eva ranks, standard init", "params": {"init": False}, "isolates": "allocation"},
        ),
    )
)
