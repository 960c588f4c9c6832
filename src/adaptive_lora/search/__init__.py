"""`adaptive-lora search`: the best budget-matched allocation of the `profile` family by multi-fidelity
search (Optuna), judged against uniform by an honest final stage (docs/search.md).

    settings.py   SearchConfig: the search's own settings and their defaults (torch-free)
    space.py      the space: knot and role weights, the learning rate (torch-free)
    study.py      the engine: Optuna study, TPE, pruner, storage, workers, resume (no training)
    trial.py      one trial: a training run on the training and validation splits, reporting to its trial
    progress.py   a progress line per trial
    final.py      the final stage's choices and suite, and search.json for the report
    runner.py     run_search(): trials, then the final stage as an ordinary sweep

This package's __init__ imports nothing, so `search --list` stays quick.
"""
