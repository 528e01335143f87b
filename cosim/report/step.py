"""Step results as plain data (``cosim step --json``): step time, breakdown, per-group figures,
memory, tokens/s per GPU and the hottest links (:func:`cosim.engine.summary.step_summary`, which
the exploration's finalist records use too)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cosim.engine.summary import step_summary
from cosim.io_atomic import atomic_write_text

__all__ = ["step_summary", "write_step_json"]


def write_step_json(result, path: str | Path, top_links: int = 8) -> Path:
    """Write :func:`step_summary` to ``path`` atomically (:func:`cosim.io_atomic.atomic_write_text`)."""
    data = step_summary(result, top_links)
    return atomic_write_text(path, json.dumps(data, indent=2, default=lambda v: None if isinstance(v, float) and
                                              math.isnan(v) else (v.item() if hasattr(v, "item") else str(v))))
