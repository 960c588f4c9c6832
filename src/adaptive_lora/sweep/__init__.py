"""Sweeps: suites (strategies x budgets x learning rates x seeds) and running them.

    suite.py       loading and expanding a suite into runs with stable ids (torch-free)
    selection.py   choosing each group's learning rate on validation loss (torch-free)
    executors.py   local, worker processes, Ray; every run is claimed under a lock first
    runner.py      run_sweep(): resumable, shareable between processes, staged learning-rate selection
    progress.py    progress bars or log lines

This package's __init__ imports nothing, so the torch-free modules stay torch-free for the report.
"""
