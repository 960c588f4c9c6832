"""Take a finished run elsewhere: the merged model, the adapter alone, a TRL snippet, an axolotl fragment.

    run = open_run("runs/linear_decay-3f2a9c1d7e5b")     # one-line UserError unless it is finished
    export_merged(run, "merged/")                       # base + adapter folded into plain weights
    export_peft(run, "adapter/")                        # adapter_config.json + adapter_model.safetensors
    print(trl_snippet(run, load_run_allocation(run)))   # SFTTrainer(peft_config=LoraConfig(...))

The per-module ranks and alphas travel as PEFT's `rank_pattern` / `alpha_pattern`. Written out for
people, one key per module is long (210 modules for SmolLM2-135M), so `compact_patterns` folds
modules that share a value into one regex per group of layers; every module still matches exactly
one key, and the tests check that the compact config builds the same adapter as the long one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from peft import PeftModel

from .allocation import Allocation
from .config import RunConfig, load_run_config
from .environment import cpu_has_bf16
from .errors import UserError
from .io import atomic_write_text
from .models import load_model, load_tokenizer, resolve_model_path
from .planning import anatomy_of
from .schema import ADAPTER_DIR, CONFIG_FILE, read_allocation, read_result
from .strategies import hooks_for

DTYPES = ("float32", "bfloat16", "float16")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class FinishedRun:
    dir: Path
    config: RunConfig
    result: dict[str, Any]

    @property
    def adapter_dir(self) -> Path:
        return self.dir / ADAPTER_DIR


def open_run(run_dir: str | Path) -> FinishedRun:
    """A finished run directory (result.json says done, adapter saved); else a one-line UserError."""
    path = Path(run_dir).expanduser()
    what = f"{path} is not a finished run directory"
    if not path.is_dir():
        raise UserError(f"{what} (it does not exist): give a directory written by `adaptive-lora train` or a sweep's runs/<id>")
    result, why = read_result(path)
    if result is None:
        raise UserError(f"{what} ({why}): give a directory written by `adaptive-lora train` or a sweep's runs/<id>")
    if result["status"] != "done":
        raise UserError(f"{what} (status {result['status']}: {result.get('error')}): train it again, or export another run")
    if not (path / CONFIG_FILE).is_file():
        raise UserError(f"{what} (no {CONFIG_FILE}): give a directory written by `adaptive-lora train`")
    missing = [f for f in ADAPTER_FILES if not (path / ADAPTER_DIR / f).is_file()]
    if missing:
        raise UserError(
            f"run {path} has no saved adapter ({ADAPTER_DIR}/{missing[0]} is missing; output.save_adapter was false?)"
        )
    return FinishedRun(path, load_run_config(path / CONFIG_FILE), result)


def load_run_allocation(run: FinishedRun) -> Allocation:
    """The run's final allocation.json on the anatomy of its model (its config alone is read)."""
    anatomy = anatomy_of(run.config.model.name, trust_remote_code=run.config.model.trust_remote_code)
    return Allocation.from_record(read_allocation(run.dir), anatomy, str(run.dir / "allocation.json"))


# What the TRL snippet and the axolotl fragment cannot carry: they train plain LoRA at the final ranks.
_NOT_CARRIED = {
    "initialisation": "initialisation of the LoRA weights",
    "dynamics": "training dynamics (ranks and loss terms that change during training)",
}


def dropped_by_retraining(run: FinishedRun, allocation: Allocation) -> str | None:
    """One line when the run used more than its ranks, which a from-scratch LoRA export (TRL, axolotl) drops."""
    changes = hooks_for(allocation.strategy).changes_in(allocation.params)
    if not changes:
        return None
    what = " and ".join(_NOT_CARRIED.get(c, c) for c in changes)
    return (
        f"{run.dir} used {allocation.strategy}'s {what}; the TRL snippet and the axolotl fragment train plain LoRA "
        f"at its final ranks without it (--peft and --merged keep the trained weights)"
    )


def check_new_output(path: str | Path, kind: str = "directory") -> Path:
    """An output path that is new, or an empty directory (or empty file): never a user's files."""
    path = Path(path).expanduser()
    if not path.exists():
        return path
    if kind == "directory" and path.is_dir() and not any(path.iterdir()):
        return path
    if kind == "file" and path.is_file() and path.stat().st_size == 0:
        return path
    held = "is not empty" if path.is_dir() else "already exists"
    raise UserError(f"{path} {held}: export never overwrites files; choose a new or empty {kind}")


def _staging_dir(out: Path) -> Path:
    """A hidden directory beside `out`; written fully, then renamed to `out` (a rename replaces an empty directory)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}-", suffix=".tmp", dir=out.parent))
    staged.chmod(0o755)  # mkdtemp makes it private; a model directory is shared like any other
    return staged


def export_peft(run: FinishedRun, out: str | Path) -> Path:
    """Copy the adapter as PEFT saved it: `PeftModel.from_pretrained(base, out)` loads it."""
    out = check_new_output(out)
    staged = _staging_dir(out)
    try:
        for item in run.adapter_dir.iterdir():
            if item.is_file():
                shutil.copy2(item, staged / item.name)
        os.replace(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return out


def export_merged(run: FinishedRun, out: str | Path, dtype: str = "float32") -> Path:
    """Fold the adapter into the base weights (merged in fp32, saved in `dtype`) and save with the tokenizer.

    The result is a plain transformers model: `AutoModelForCausalLM.from_pretrained(out)`."""
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    out = check_new_output(out)
    model_cfg = run.config.model
    base = load_model(model_cfg.name, "float32", "cpu", model_cfg.trust_remote_code)
    merged = PeftModel.from_pretrained(base, run.adapter_dir).merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    tokenizer = load_tokenizer(model_cfg.name, model_cfg.trust_remote_code)
    staged = _staging_dir(out)
    try:
        merged.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        os.replace(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return out


# --- compact rank/alpha patterns ------------------------------------------------------------------


def _alternatives(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "(?:" + "|".join(items) + ")"


def _split_at_layer(name: str, layer: int) -> tuple[str, str] | None:
    """ "model.layers.3.mlp.up_proj", 3 -> ("model.layers", "mlp.up_proj"); None without a layer segment."""
    parts = name.split(".")
    if layer < 0 or str(layer) not in parts[1:-1]:
        return None
    i = parts.index(str(layer), 1)
    return ".".join(parts[:i]), ".".join(parts[i + 1 :])


def compact_patterns(values: dict[str, Any], layers: dict[str, int]) -> dict[str, Any]:
    """{module name: value} -> {regex: value} with one regex per (value, set of layers, prefix).

    A key is `prefix\\.(?:0|1|5)\\.(?:self_attn\\.q_proj|mlp\\.up_proj)`: it matches the cross product of
    those layers and suffixes, and modules are grouped so that the product is exactly the group's
    modules. Keys of different values never match the same module, so PEFT's first-match order does
    not matter; `\\.` after the layer number keeps layer 1 from matching layer 11."""
    by_value: dict[Any, list[str]] = defaultdict(list)
    for name, value in values.items():
        by_value[value].append(name)
    keys: dict[str, Any] = {}
    for value, names in by_value.items():
        places: dict[tuple[str, str], list[int]] = defaultdict(list)
        for name in names:
            split = _split_at_layer(name, layers[name])
            if split is None:
                keys[re.escape(name)] = value
            else:
                places[split].append(layers[name])
        suffixes_by_layers: dict[tuple[str, tuple[int, ...]], list[str]] = defaultdict(list)
        for (prefix, suffix), found in places.items():
            suffixes_by_layers[(prefix, tuple(sorted(found)))].append(suffix)
        for (prefix, found), suffixes in suffixes_by_layers.items():
            layer_alt = _alternatives([str(i) for i in found])
            keys[rf"{re.escape(prefix)}\.{layer_alt}\.{_alternatives([re.escape(s) for s in suffixes])}"] = value
    return keys


def compact_lora_kwargs(allocation: Allocation, lora_dropout: float = 0.0) -> dict[str, Any]:
    """`Allocation.to_peft_config()` as LoraConfig keyword arguments, with compact patterns.

    target_modules is one regex (PEFT full-matches a string against each module name), so exactly
    the allocated modules are adapted."""
    config = allocation.to_peft_config(lora_dropout=lora_dropout)
    layers = {m.name: m.layer for m in allocation.modules}
    targets = list(compact_patterns({name: True for name in allocation.ranks}, layers))
    return {
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "target_modules": targets[0] if len(targets) == 1 else "|".join(f"(?:{t})" for t in targets),
        "rank_pattern": compact_patterns(allocation.ranks, layers),
        "alpha_pattern": compact_patterns(allocation.alphas, layers),
        "lora_dropout": config.lora_dropout,
        "use_rslora": config.use_rslora,
        "fan_in_fan_out": config.fan_in_fan_out,
        "bias": config.bias,
        "task_type": "CAUSAL_LM",
    }


def _py(value: Any) -> str:
    """Python source for a value of the snippet: regexes as raw strings, whole floats without .0."""
    if isinstance(value, str):
        if "\\" in value and '"' not in value and not value.endswith("\\"):
            return f'r"{value}"'
        return json.dumps(value)  # a double-quoted string is Python source too
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


def lora_config_source(allocation: Allocation, lora_dropout: float = 0.0) -> str:
    """`peft_config = LoraConfig(...)`: Python source that builds the run's adapter shape."""
    lines = ["peft_config = LoraConfig("]
    for key, value in compact_lora_kwargs(allocation, lora_dropout).items():
        if isinstance(value, dict):
            lines.append(f"    {key}={{")
            lines += [f"        {_py(k)}: {_py(v)}," for k, v in value.items()]
            lines.append("    },")
        else:
            lines.append(f"    {key}={_py(value)},")
    return "\n".join([*lines, ")"])


def precision_lines() -> list[str]:
    """SFTConfig's precision and device for the machine the snippet is written on. TRL turns bf16 on by
    default, which stops the script on a CPU ("doesn't support bf16/gpu") and on GPUs older than Ampere."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        if torch.cuda.is_bf16_supported(including_emulation=False):  # emulated bf16 is slower than fp16
            return [
                f"        bf16=True,  # written on a {name}; on a GPU without bf16 set fp16=True, bf16=False",
                "        use_cpu=False,  # on a CPU: use_cpu=True and bf16=False (unless it has bf16 units: AVX512-BF16 or AMX)",
            ]
        return [
            f"        bf16=False,  # written on a {name} (no bf16): mixed fp16 instead; on an Ampere or newer GPU use bf16=True",
            "        fp16=True,",
            "        use_cpu=False,  # on a CPU: use_cpu=True and fp16=False",
        ]
    bf16 = cpu_has_bf16()
    units = "with bf16 units (AVX512-BF16 or AMX)" if bf16 else "without bf16 units: bf16 would be emulated, slower than fp32"
    return [
        f"        bf16={bf16},  # written on a CPU {units}",
        "        use_cpu=True,  # on a GPU: use_cpu=False, and bf16=True where it supports bf16 (Ampere or newer), else fp16=True",
    ]


def trl_snippet(run: FinishedRun, allocation: Allocation) -> str:
    """A TRL script that trains this run's allocation with SFTTrainer, with precision and device set for this machine."""
    cfg = run.config
    t = cfg.training
    length = f"max_steps={t.max_steps}" if t.max_steps > 0 else f"num_train_epochs={_py(t.num_epochs)}"
    header = (
        f"# TRL: train the allocation of {run.dir} ({allocation.strategy}, {allocation.trainable_params:,} "
        f"trainable parameters over {len(allocation.ranks)} modules) with SFTTrainer"
    )
    return "\n".join(
        [
            header,
            "from peft import LoraConfig",
            "from trl import SFTConfig, SFTTrainer",
            "",
            lora_config_source(allocation, cfg.allocation.lora_dropout),
            "trainer = SFTTrainer(",
            f"    model={_py(resolve_model_path(cfg.model.name))},",
            "    train_dataset=dataset,  # yours, in TRL's prompt/completion or messages format",
            "    args=SFTConfig(",
            f'        output_dir="sft-{allocation.strategy}",',
            f"        learning_rate={t.learning_rate!r},",
            f"        per_device_train_batch_size={t.micro_batch_size},",
            f"        gradient_accumulation_steps={t.gradient_accumulation_steps},",
            f"        {length},",
            f"        lr_scheduler_type={_py(t.lr_scheduler)},",
            f"        max_length={t.sequence_len},",
            *precision_lines(),
            "    ),",
            "    peft_config=peft_config,",
            ")",
            "trainer.train()",
        ]
    )


# --- axolotl --------------------------------------------------------------------------------------


def axolotl_fragment(allocation: Allocation, lora_dropout: float = 0.0) -> dict[str, Any]:
    """The LoRA keys of an axolotl config (axolotl >= 0.19: lora_rank_pattern / lora_alpha_pattern).

    axolotl validates alphas as positive integers; a fractional alpha is a one-line error."""
    kwargs = compact_lora_kwargs(allocation, lora_dropout)
    for name, alpha in [("lora_alpha", allocation.lora_alpha), *allocation.alphas.items()]:
        if not float(alpha).is_integer() or alpha <= 0:
            raise UserError(
                f"axolotl needs whole-number LoRA alphas, but {name} has alpha {alpha:g}; "
                "plan with allocation.alpha_policy=constant or a lora_alpha that is a multiple of lora_r, or use the TRL snippet"
            )
    fragment = {
        "adapter": "lora",
        "lora_r": int(kwargs["r"]),
        "lora_alpha": int(kwargs["lora_alpha"]),
        "lora_dropout": float(kwargs["lora_dropout"]),
        "lora_target_linear": False,  # it would add every linear layer, at rank lora_r
        "lora_target_modules": kwargs["target_modules"],
        "lora_rank_pattern": {k: int(v) for k, v in kwargs["rank_pattern"].items()},
        "lora_alpha_pattern": {k: int(v) for k, v in kwargs["alpha_pattern"].items()},
    }
    if kwargs["use_rslora"]:
        fragment["peft_use_rslora"] = True
    if kwargs["fan_in_fan_out"]:
        fragment["lora_fan_in_fan_out"] = True
    return fragment


def export_axolotl(run: FinishedRun, allocation: Allocation, out: str | Path) -> Path:
    out = check_new_output(out, kind="file")
    fragment = axolotl_fragment(allocation, run.config.allocation.lora_dropout)
    header = (
        f"# LoRA section for an axolotl (>= 0.19) config: the allocation of {run.dir} ({allocation.strategy}).\n"
        f"# base_model: {resolve_model_path(run.config.model.name)}\n"
        "# lora_target_modules is a regex that matches exactly the allocated modules.\n"
    )
    atomic_write_text(out, header + yaml.safe_dump(fragment, sort_keys=False, width=1000))
    return out
