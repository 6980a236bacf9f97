"""Where the project's data files live (models, shaders, web pages).

In a checkout they are the folders beside ``proxy/``; an installed wheel carries
them as package data in ``proxy/data/``. ``MASKPROXY_HOME`` names another folder
holding ``models/``, ``shaders/`` and ``web/`` for unusual installs.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_INSTALLED = _PACKAGE / "data"

#: The folder holding models/, shaders/ and web/; in a checkout, the repository root.
ROOT = Path(os.environ.get("MASKPROXY_HOME") or (_INSTALLED if (_INSTALLED / "models").is_dir() else _PACKAGE.parent))
MODELS = ROOT / "models"
SHADERS = ROOT / "shaders"
WEB = ROOT / "web"


def model_path(name: str) -> Path:
    """Path of a shipped model file, with a clear error when it is missing."""
    path = MODELS / name
    if not path.exists():
        raise FileNotFoundError(f"model file {path} is missing; run models/convert.py (see models/README.md)")
    return path
