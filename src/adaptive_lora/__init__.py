"""adaptive-lora: layerwise LoRA rank allocation — plan, train, sweep and report.

    from adaptive_lora import plan, train
    allocation = plan("embedded", "linear_decay", budget_rank=8)
    result = train({"allocation": {"strategy": "linear_decay"}, "training": {"max_steps": 10}})

The package is layered; each layer imports only the ones above it:

    errors, io, schema, config, workdirs        facts, file formats, configuration (torch-free)
    hub, environment, models, anatomy, loss     loading models, finding their modules, the loss
    budget, allocation                          parameter counts, the Allocation value, PEFT export
    data/                                       instruction data: sources, prompts, tokenization, splits
    strategies/                                 rank-allocation strategies behind one interface
    planning                                    plan(): model + strategy + budget -> Allocation
    training/                                   train(): one run into a run directory
    sweep/                                      suites, executors, resumable sweeps
    report/                                     tables, figures, statistics (torch-free)
    cli/                                        the `adaptive-lora` command
"""

from .allocation import Allocation, verify
from .anatomy import Anatomy, LinearModule, inspect_model
from .config import RunConfig, load_run_config
from .errors import UserError
from .planning import plan

__version__ = "0.1.0"


def train(*args, **kwargs):
    """Train one adapter; see `adaptive_lora.training.train` (imported on use: it pulls in transformers.Trainer)."""
    from .training import train as _train

    return _train(*args, **kwargs)


def run_suite(suite: str | None = None, out: str | None = None, overrides: list[str] | None = None, **options):
    """Run a built-in suite or suite YAML and write its report; returns the sweep summary with the report paths."""
    from .report import write_report
    from .sweep.executors import SweepOptions
    from .sweep.runner import run_sweep
    from .sweep.suite import load_suite

    loaded = load_suite(suite, overrides)
    summary = run_sweep(loaded, out or loaded.output_dir, SweepOptions(**options))
    if not summary["interrupted"]:
        summary["report"] = write_report(summary["sweep_dir"])
    return summary


__all__ = [
    "Allocation",
    "Anatomy",
    "LinearModule",
    "RunConfig",
    "UserError",
    "inspect_model",
    "load_run_config",
    "plan",
    "run_suite",
    "train",
    "verify",
]
