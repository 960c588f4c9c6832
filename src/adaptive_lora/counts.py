"""Parameter counts as people write them ("3.1M", "500k") and as reports print them."""

from __future__ import annotations

import re
from typing import Any

from .errors import UserError

_COUNT = re.compile(r"(\d+(?:\.\d+)?)\s*([kKmMbB]?)")


def parse_count(value: Any, where: str = "budget") -> int:
    """3145728, "3145728", "3.1M", "500k", "1.5B" -> a positive parameter count."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _COUNT.fullmatch(str(value).strip()) if isinstance(value, (str, float)) and not isinstance(value, bool) else None
    if match:
        count = int(round(float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9}[match.group(2).lower()]))
        if count > 0:
            return count
    raise UserError(f"{where}: {value!r} is not a parameter count (e.g. 3145728, 3.1M or 500k)")


def count_label(count: int) -> str:
    """2442240 -> "2.44M", 23040 -> "23k"."""
    return f"{count / 1e6:.3g}M" if count >= 1e6 else f"{count / 1e3:.3g}k"
