"""Where the project's data files live (models, shaders, web pages)."""

from __future__ import annotations

import os
from pathlib import Path

#: Repository root; ``MASKPROXY_HOME`` overrides it for unusual installs.
ROOT = Path(os.environ.get("MASKPROXY_HOME", Path(__file__).resolve().parent.parent))
MODELS = ROOT / "models"
SHADERS = ROOT / "shaders"
WEB = ROOT / "web"


def model_path(name: str) -> Path:
    """Path of a shipped model file, with a clear error when it is missing."""
    path = MODELS / name
    if not path.exists():
        raise FileNotFoundError(f"model file {path} is missing; run models/convert.py (see models/README.md)")
    return path
