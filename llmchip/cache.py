"""Where llmchip keeps what it can reuse across runs (simulator builds, chosen schedules)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """Return the cache folder: ``$LLMCHIP_CACHE`` or ``~/.cache/llmchip``."""
    root = os.environ.get("LLMCHIP_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "llmchip"
