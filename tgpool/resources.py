"""Where tgpool's data folders are: from a checkout or from an installed wheel.

The checkout keeps ``templates/`` and ``autotune_cache/`` at the top level; a wheel maps them into
the package as ``tgpool/_templates`` and ``tgpool/_autotune_cache`` (see pyproject.toml). The
package copy wins, so an installed tgpool never picks up an unrelated top-level folder.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(packaged: str, checkout: str) -> Path:
    for candidate in (_PACKAGE / packaged, _PACKAGE.parent / checkout):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"tgpool data folder {checkout!r} not found next to {_PACKAGE} "
        f"(looked for {_PACKAGE / packaged} and {_PACKAGE.parent / checkout})"
    )


def templates_dir() -> Path:
    return _data_dir("_templates", "templates")


def autotune_cache_dir() -> Path:
    return _data_dir("_autotune_cache", "autotune_cache")


def user_cache_dir() -> Path:
    """``TGPOOL_CACHE_DIR``, else ``$XDG_CACHE_HOME/tgpool``, else ``~/.cache/tgpool``."""
    env = os.environ.get("TGPOOL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tgpool"
