"""Model loading: the embedded model's cache (atomic, process-safe, fast reload), paths, errors."""

from __future__ import annotations

import json
import threading
import time

import pytest

from adaptive_lora import models
from adaptive_lora.errors import UserError


def test_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTIVE_LORA_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ADAPTIVE_LORA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "adaptive-lora"


def test_concurrent_first_use_converts_once(monkeypatch, tmp_path):
    """Two callers at once: one converts (into a temporary dir, then renames), the other waits."""
    monkeypatch.setenv("ADAPTIVE_LORA_CACHE", str(tmp_path))
    calls = []

    def slow_convert(target):
        calls.append(target)
        time.sleep(0.3)
        staging = target.parent / ".staging"
        staging.mkdir()
        (staging / "config.json").write_text(json.dumps({"model_type": "llama"}))
        staging.rename(target)

    monkeypatch.setattr(models, "_convert_embedded", slow_convert)
    results = []
    threads = [threading.Thread(target=lambda: results.append(models.embedded_model_dir())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1]
    assert (results[0] / "config.json").is_file()


def test_missing_paths_and_directories_without_config_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        models.resolve_model_path(str(tmp_path / "nope" / "model"))
    with pytest.raises(UserError, match="has no config.json"):
        models.resolve_model_path(str(tmp_path))
    assert models.resolve_model_path("org/name") == "org/name"  # a hub id passes through


@pytest.mark.embedded
def test_embedded_model_reloads_from_the_cache_without_converting(monkeypatch):
    models.embedded_model_dir()  # converts once if needed

    def no_second_conversion(target):
        raise AssertionError("the cached conversion should have been reused")

    monkeypatch.setattr(models, "_convert_embedded", no_second_conversion)
    model = models.load_model("embedded")
    assert model.config.num_hidden_layers == 30 and not hasattr(model.config, "quantization_config")
    assert (models.embedded_model_dir() / "model.safetensors").is_file()
