"""Typed run configuration: dataclasses loadable from YAML, with dotted `key=value` overrides.

Key names follow what axolotl / LLaMA-Factory / PEFT users already know (`lora_r`, `lora_alpha`,
`target_modules`, `learning_rate`, `num_epochs`, `micro_batch_size`, `sequence_len`, `seed`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .io import atomic_write_text


@dataclass
class ModelConfig:
    name: str = "embedded"  # "embedded", a hub id or a local model directory
    trust_remote_code: bool = False
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (fp16 keeps adapters in fp32 with loss scaling)
    device: str = "auto"  # auto | cpu | cuda | mps


@dataclass
class DataConfig:
    source: str = "builtin"  # builtin, a JSON/JSONL/CSV/Parquet file, a dataset directory or a hub id
    prompt_format: str = "auto"  # auto | alpaca | chat | seed
    field_map: dict[str, str] = field(default_factory=dict)  # e.g. {instruction: question, output: answer}
    val_set_size: float = 0.1  # fraction (<1) or count (>=1) of rows held out for validation (selection, curves)
    test_set_size: float = 0.0  # fraction or count held out for the test split (reported; never used to select)
    max_samples: int | None = None  # cap on rows used (the original study used 200)
    split_seed: int = 0  # fixed across runs, so every strategy and seed sees the same eval rows
    overlength: str = "truncate"  # truncate | drop | error
    train_on_prompt: bool = False
    strict: bool = False
    max_bad_fraction: float = 0.5
    group_by_length: bool = False


@dataclass
class AllocationConfig:
    strategy: str = "uniform"
    params: dict[str, Any] = field(default_factory=dict)  # strategy parameters
    lora_r: int = 8  # base rank: the rank `uniform` uses and the scale of other strategies
    lora_alpha: float = 16.0
    alpha_policy: str = "proportional"  # proportional | constant | rslora
    budget: int | None = None  # trainable-parameter budget the strategy's shape is rescaled to
    budget_rank: int | None = None  # ... or the budget of uniform rank r
    min_rank: int = 1
    max_rank: int = 256
    target_modules: list[str] | None = None  # leaf names or roles (q,k,v,o,qkv,up,gate,down); None = all
    lora_dropout: float = 0.05


@dataclass
class TrainingConfig:
    learning_rate: float = 5e-4
    num_epochs: float = 1.0
    max_steps: int = -1
    micro_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    sequence_len: int = 256
    warmup_ratio: float = 0.05
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    eval_steps: int | None = None  # None: evaluate at the end only
    logging_steps: int = 5
    save_steps: int | None = None  # None: no intermediate checkpoints
    report_to: str = "none"
    gradient_checkpointing: bool = False
    num_threads: int | None = None  # torch CPU threads; None keeps torch's default
    # Tokens per forward/backward pass; a step's rows are split into passes whose gradients accumulate
    # (same rows per optimizer step, same loss). null: 256 on CPU (memory), no limit on GPU; 0: no limit.
    token_budget: int | None = None
    packing: bool | None = None  # padding-free packed passes; null: on for GPUs, off on CPU (measured slower there)


@dataclass
class EvalConfig:
    generate: bool = True  # generation metrics (exact match, ROUGE-L) on the test split, when there is one
    on_validation: bool = False  # also generate on the validation split
    max_new_tokens: int = 48  # greedy decoding stops at EOS or here
    batch_size: int = 16  # prompts decoded together (KV cache, left padding)
    max_rows: int | None = None  # cap on rows generated per split (None: all)
    forgetting: str | None = "auto"  # held-out text for the forgetting measure: auto (the other built-in set), a source, or null
    forgetting_rows: int = 64  # rows of it scored before and after training


@dataclass
class OutputConfig:
    dir: str | None = None  # None: runs/<strategy>-<config id>
    overwrite: bool = False
    resume: bool = False
    save_adapter: bool = True


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    allocation: AllocationConfig = field(default_factory=AllocationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "config") -> RunConfig:
        return from_dict(cls, data or {}, where)

    def with_overrides(self, overrides: list[str] | dict[str, Any], where: str = "override") -> RunConfig:
        data = self.to_dict()
        apply_overrides(data, overrides, where)
        return RunConfig.from_dict(data, where)

    def config_id(self) -> str:
        """Stable id of what determines a run's outcome (the output section is excluded)."""
        data = self.to_dict()
        data.pop("output", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def with_default_output(self) -> RunConfig:
        """output.dir, when unset: runs/<strategy>-<config id>."""
        if self.output.dir:
            return self
        return self.with_overrides({"output.dir": f"runs/{self.allocation.strategy}-{self.config_id()}"})


def from_dict(cls, data: dict[str, Any], where: str):
    """Build dataclass `cls` from a dict, with one-line errors naming the bad key."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; valid keys are: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(hint, value, where: str):
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0])
    if hint is Any:
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return [_coerce(args[0], v, where) for v in value] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"{where}: expected an integer, got {value!r}") from None
        if not math.isfinite(number) or number != int(number):  # int(nan) / int(inf) would raise
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return int(number)
    if hint is float:
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """`training.max_steps=3` -> ("training.max_steps", 3); values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise UserError(f"override {text!r} is not key=value (e.g. training.max_steps=3)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any], where: str = "override") -> None:
    """Set dotted keys in a nested dict, in place."""
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        parts = key.split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None and part in ("params", "field_map"):
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(
                    f"{where}: {'.'.join(parts[: i + 1])!r} is not a section; valid sections: {', '.join(sorted(k for k, v in node.items() if isinstance(v, dict)))}"
                )
            node = child
        node[parts[-1]] = value


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"config file {path}{line} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path}: expected a mapping at the top level")
    return data


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    data = load_yaml(path) if path else {}
    config = RunConfig.from_dict(data, where=str(path) if path else "config")
    return config.with_overrides(overrides or [])


def dump_yaml(config: RunConfig | dict[str, Any], path: str | Path) -> None:
    data = config.to_dict() if isinstance(config, RunConfig) else config
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
