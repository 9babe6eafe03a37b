"""Number formatting shared by the Markdown reports (one place decides how NaN, ∞ and missing values look)."""

from __future__ import annotations

import math
from typing import Any


def fmt(value: Any, digits: int = 4, missing: str = "–") -> str:
    if value is None:
        return missing
    if isinstance(value, float):
        if math.isnan(value):
            return missing
        if math.isinf(value):
            return "∞"
        return f"{value:.{digits}f}"
    return str(value)
