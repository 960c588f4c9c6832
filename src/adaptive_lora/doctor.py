"""`adaptive-lora doctor`: is this machine ready for the embedded main job? The checks, as data.

Each check returns `Check`s with a status: `ok`, `warn` (works, with a limitation worth knowing) or
`fail` (a required piece is missing: the main job would not run). Nothing here downloads anything or
waits long: the hub probe is a DNS look-up and a TCP connect with a short timeout.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import psutil
import torch
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from .environment import cpu_features
from .errors import UserError
from .models import EMBEDDED_DIRNAME, cache_dir, embedded_gguf_path

DISTRIBUTION = "adaptive-lora"

# What the embedded main job (SmolLM2-135M, the seed-study suite) needs. RAM: the peak RSS measured by
# benchmarks/bench_memory.py (one fp32 base shared by the runs, passes of <= 256 tokens), about 2.2 GB. Disk: the converted model cache (fp32 safetensors,
# about 0.55 GB) plus the sweep outputs (adapters of a few MB per run, metrics, reports), 1 GB in all.
RAM_NEEDED_BYTES = int(2.5e9)
MODEL_CACHE_BYTES = int(0.6e9)
SWEEP_OUTPUT_BYTES = int(0.4e9)
HUB_TIMEOUT_S = 2.0  # per step (DNS, then TCP connect): `doctor` answers within a few seconds offline


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str  # what was found, and for warn/fail how to fix it

    def to_dict(self) -> dict:
        return asdict(self)


def exit_code(checks: list[Check]) -> int:
    """1 when a required check failed; warnings do not fail."""
    return 1 if any(c.status == "fail" for c in checks) else 0


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


# --- versions -----------------------------------------------------------------------------------


def installed_version(package: str) -> str | None:
    """The installed version of a distribution, or None (the one place tests patch)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def requirements() -> list[Requirement] | None:
    """adaptive-lora's declared requirements (extras included, with their markers); None when not installed."""
    try:
        return [Requirement(r) for r in metadata.requires(DISTRIBUTION) or []]
    except metadata.PackageNotFoundError:
        return None


def extra_of(req: Requirement) -> str | None:
    """The extra a requirement belongs to (`ray>=2.9; extra == "ray"` -> "ray"), None for a core one."""
    if req.marker is None:
        return None
    for extra in metadata.metadata(DISTRIBUTION).get_all("Provides-Extra") or []:
        if req.marker.evaluate({"extra": extra}):
            return extra
    return None


def _version_problem(req: Requirement) -> str | None:
    version = installed_version(req.name)
    if version is None:
        return f"{req.name} is not installed"
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return f"{req.name} {version} does not satisfy {req.specifier}"
    return None


def check_python() -> list[Check]:
    try:
        floor = metadata.metadata(DISTRIBUTION)["Requires-Python"] or ""
    except metadata.PackageNotFoundError:
        floor = ""
    version = platform.python_version()
    if floor and not SpecifierSet(floor).contains(version, prereleases=True):
        return [Check("python", "fail", f"Python {version} does not satisfy {floor}: use a newer Python")]
    return [Check("python", "ok", f"Python {version}" + (f" (needs {floor})" if floor else ""))]


def check_packages() -> list[Check]:
    reqs = requirements()
    if reqs is None:
        return [
            Check(
                "packages",
                "warn",
                f"{DISTRIBUTION} is not installed as a distribution, so its version floors are unknown: run `pip install -e .`",
            )
        ]
    checks = []
    for req in (r for r in reqs if r.marker is None):
        problem = _version_problem(req)
        if problem:
            checks.append(Check(req.name, "fail", f"{problem}: pip install '{req}'"))
        else:
            checks.append(Check(req.name, "ok", f"{installed_version(req.name)} ({req.specifier or 'any version'})"))
    return checks


def check_extras() -> list[Check]:
    """Optional extras (ray, tensorboard, ...): a missing one only limits what can be used."""
    reqs = requirements() or []
    by_extra: dict[str, list[Requirement]] = {}
    for req in reqs:
        extra = extra_of(req)
        if extra and extra != "dev":
            by_extra.setdefault(extra, []).append(req)
    checks = []
    for extra, members in sorted(by_extra.items()):
        problems = [p for p in map(_version_problem, members) if p]
        if problems:
            checks.append(Check(f"extra {extra}", "warn", f"{'; '.join(problems)}: pip install '{DISTRIBUTION}[{extra}]'"))
        else:
            versions = ", ".join(f"{r.name} {installed_version(r.name)}" for r in members)
            checks.append(Check(f"extra {extra}", "ok", versions))
    return checks


# --- device, memory, disk -------------------------------------------------------------------------


def check_device() -> list[Check]:
    threads = f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        bf16 = "bf16 supported" if torch.cuda.is_bf16_supported() else "no bf16 (fp16 with loss scaling)"
        return [Check("device", "ok", f"CUDA {name} ({torch.cuda.device_count()} device(s), {bf16}); {threads}")]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return [Check("device", "ok", f"Apple MPS (use model.device=mps; auto picks the CPU); {threads}")]
    features = cpu_features()
    units = [name for name, key in (("AMX", "amx_bf16"), ("AVX512-BF16", "avx512_bf16")) if features[key]]
    precision = (
        f"bf16 units ({', '.join(units)}): precision auto trains in bf16"
        if units
        else "no bf16 units (no AMX or AVX512-BF16): precision auto trains in fp32"
    )
    return [Check("device", "ok", f"CPU only ({features['cpu_capability']}, {precision}); {threads}")]


def check_memory() -> list[Check]:
    available = psutil.virtual_memory().available
    detail = f"{_gb(available)} available, the embedded main job needs about {_gb(RAM_NEEDED_BYTES)}"
    if available < RAM_NEEDED_BYTES:
        return [
            Check("memory", "warn", f"{detail}: close other programs, or lower training.micro_batch_size / training.sequence_len")
        ]
    return [Check("memory", "ok", detail)]


def _existing(path: Path) -> Path:
    """`path`, or its nearest existing parent (what disk_usage can measure before the path exists)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def embedded_converted(cache: Path) -> bool:
    return (cache / "models" / EMBEDDED_DIRNAME / "config.json").is_file()


def check_disk(cache: Path | None = None, cwd: Path | None = None) -> list[Check]:
    cache, cwd = cache or cache_dir(), cwd or Path.cwd()
    model_need = 0 if embedded_converted(cache) else MODEL_CACHE_BYTES
    cache_at, cwd_at = _existing(cache), _existing(cwd)
    if cache_at.stat().st_dev == cwd_at.stat().st_dev:  # one file system holds both
        what = "the converted model and sweep outputs" if model_need else "sweep outputs (model converted)"
        places = [("disk", cwd_at, model_need + SWEEP_OUTPUT_BYTES, what)]
    else:
        places = [
            ("disk cache", cache_at, model_need, "the converted model" if model_need else "nothing more (model converted)"),
            ("disk cwd", cwd_at, SWEEP_OUTPUT_BYTES, "sweep outputs"),
        ]
    checks = []
    for name, path, need, what in places:
        free = shutil.disk_usage(path).free
        detail = f"{_gb(free)} free at {path}, needs {_gb(need)} for {what}"
        status = "fail" if free < need else "ok"
        checks.append(
            Check(
                name,
                status,
                detail + (": free some space or set ADAPTIVE_LORA_CACHE / --out elsewhere" if status == "fail" else ""),
            )
        )
    return checks


# --- model cache ----------------------------------------------------------------------------------


def probe_writable(directory: Path) -> str | None:
    """None when a file can be created and removed in `directory` (created if missing); else why not.

    Tried for real, not with os.access: as root, permission bits do not stop writes."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".doctor-", delete=True):
            pass
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


def check_model_cache(cache: Path | None = None, writable: Callable[[Path], str | None] | None = None) -> list[Check]:
    cache = cache or cache_dir()
    problem = (writable or probe_writable)(cache)
    if problem:
        fix = "set ADAPTIVE_LORA_CACHE to a writable directory"
        return [Check("model cache", "fail", f"cache directory {cache} is not writable ({problem}): {fix}")]
    checks = [Check("model cache", "ok", f"{cache} is writable")]
    if embedded_converted(cache):
        checks.append(Check("embedded model", "ok", f"converted in {cache / 'models' / EMBEDDED_DIRNAME}"))
        return checks
    try:
        gguf = embedded_gguf_path()
    except UserError as exc:
        checks.append(Check("embedded model", "fail", str(exc)))
    else:
        checks.append(Check("embedded model", "ok", f"not converted yet; converts on first use (~20 s) from {gguf}"))
    return checks


# --- hub ------------------------------------------------------------------------------------------


def _resolve(host: str, timeout: float) -> list[str]:
    """getaddrinfo has no timeout of its own: run it in a daemon thread and stop waiting after `timeout`."""
    answer: list = []

    def look_up():
        try:
            answer.extend(info[4][0] for info in socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM))
        except OSError as exc:
            answer.append(exc)

    thread = threading.Thread(target=look_up, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive() or not answer:
        raise TimeoutError(f"DNS look-up of {host} took over {timeout:g} s")
    if isinstance(answer[0], OSError):
        raise answer[0]
    return answer


def hub_problem(endpoint: str, timeout: float = HUB_TIMEOUT_S) -> str | None:
    """None when the hub's host resolves and accepts a TCP connection on 443; else why not."""
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        addresses = _resolve(host, timeout)
        with socket.create_connection((addresses[0], urlparse(endpoint).port or 443), timeout=timeout):
            return None
    except OSError as exc:  # TimeoutError, socket.gaierror and ConnectionError are OSErrors
        return f"{host} is not reachable ({type(exc).__name__}: {exc})"


def check_hub(probe: Callable[[str], str | None] | None = None) -> list[Check]:
    from huggingface_hub import constants

    cached = "only local model directories, the embedded model and cached hub files can be used"
    if constants.HF_HUB_OFFLINE:
        return [Check("hub", "warn", f"HF_HUB_OFFLINE is set: {cached}")]
    problem = (probe or hub_problem)(constants.ENDPOINT)
    if problem:
        return [Check("hub", "warn", f"{problem}: {cached}")]
    return [Check("hub", "ok", f"{constants.ENDPOINT} reachable")]


CHECKS: tuple[Callable[[], list[Check]], ...] = (
    check_python,
    check_packages,
    check_device,
    check_memory,
    check_disk,
    check_model_cache,
    check_extras,
    check_hub,
)


def run_checks(checks: tuple[Callable[[], list[Check]], ...] | None = None) -> list[Check]:
    """Every check's results (default: CHECKS), in order; a check that crashes is reported as a failure, not raised."""
    results: list[Check] = []
    for check in CHECKS if checks is None else checks:
        try:
            results.extend(check())
        except Exception as exc:  # noqa: BLE001 - doctor must report, not crash
            results.append(
                Check(check.__name__.removeprefix("check_"), "fail", f"the check crashed: {type(exc).__name__}: {exc}")
            )
    return results
