"""Training one adapter: `train()` writes a complete run directory (docs/run-format.md).

base.py     BaseContext: model, tokenizer and data loaded once, shared by runs
engine.py   the transformers Trainer subclass: response-token loss, divergence guard, metrics
run.py      train(): plan -> attach (the strategy's hook) -> train -> evaluate -> result.json
"""

from .base import BaseContext, prepare_base
from .engine import Diverged, Pruned
from .run import finished_result, finished_run_of, resolved_config, train

__all__ = ["BaseContext", "Diverged", "Pruned", "finished_result", "finished_run_of", "prepare_base", "resolved_config", "train"]
