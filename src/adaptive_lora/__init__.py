"""adaptive-lora: layerwise LoRA rank allocation — plan, train, sweep and report.

    from adaptive_lora import plan, train
    allocation = plan("embedded", "linear_decay", budget_rank=8)
    result = train({"allocation": {"strategy": "linear_decay"}, "training": {"max_steps": 10}})
"""

from .allocation import Allocation, verify
from .anatomy import Anatomy, LinearModule, inspect_model
from .config import RunConfig, load_run_config
from .errors import UserError
from .planning import plan

__version__ = "0.1.0"


def train(*args, **kwargs):
    """Train one adapter; see `adaptive_lora.training.train` (imported lazily: it pulls in transformers.Trainer)."""
    from .training import train as _train

    return _train(*args, **kwargs)


def run_suite(suite: str | None = None, out: str | None = None, overrides: list[str] | None = None, **options):
    """Run a built-in suite or suite YAML and write its report; returns the sweep summary."""
    from .suite import load_suite
    from .sweep import SweepOptions, run_sweep

    loaded = load_suite(suite, overrides)
    return run_sweep(loaded, out or f"sweeps/{loaded.name}", SweepOptions(**options))


__all__ = ["Allocation", "Anatomy", "LinearModule", "RunConfig", "UserError", "inspect_model", "load_run_config", "plan", "run_suite", "train", "verify"]
