"""Quiet, fast failure for Hugging Face hub look-ups on machines without network."""

from __future__ import annotations

import contextlib
import logging
import socket
from urllib.parse import urlparse


@contextlib.contextmanager
def quiet_hub():
    """Hide huggingface_hub's per-retry warnings: the user gets our one-line error instead."""
    loggers = [logging.getLogger(n) for n in ("huggingface_hub", "datasets", "fsspec", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def offline_if_unreachable():
    """When the hub's host does not even resolve (no network), switch the hub libraries to offline
    mode for this call: a cached copy still loads, and an uncached one fails at once instead of
    after ~25 s of retries. The flags are read at call time and restored afterwards."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
        reachable = True
    except OSError:
        reachable = False
    if reachable or constants.HF_HUB_OFFLINE:
        yield
        return
    modules = [constants]
    try:
        import datasets

        modules.append(datasets.config)
    except ImportError:
        pass
    saved = [m.HF_HUB_OFFLINE for m in modules]
    for m in modules:
        m.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for m, value in zip(modules, saved):
            m.HF_HUB_OFFLINE = value


@contextlib.contextmanager
def hub_call():
    with quiet_hub(), offline_if_unreachable():
        yield
