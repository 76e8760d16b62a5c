"""Render a kernel family's Jinja template for one variant, write it to a real file, import it.

Triton reads a kernel's source with ``inspect``, so generated code must live in a file: each
rendering is written to ``<cache>/kernels/<family>_<sha256 of the source>.py`` atomically (a
temporary file and ``os.replace``), and an existing file is used only if its bytes are exactly
the rendering (a truncated or edited file is rewritten, never trusted). Identical variants share
the file and, within a process, the imported module.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import jinja2

from .resources import templates_dir, user_cache_dir

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def template_path(family: str) -> Path:
    return templates_dir() / f"{family}.py.jinja"


def render(family: str, **context) -> str:
    """The generated Python source of ``family`` for ``context`` (deterministic)."""
    return _environment().get_template(f"{family}.py.jinja").render(**context)


def kernel_dir() -> Path:
    return user_cache_dir() / "kernels"


def source_path(family: str, source: str) -> Path:
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    return kernel_dir() / f"{family}_{digest}.py"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_file(family: str, source: str) -> Path:
    """The cache file holding exactly ``source``, (re)written if missing or different."""
    path = source_path(family, source)
    try:
        if path.read_text(encoding="utf-8") == source:
            return path
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    _write_atomic(path, source)
    return path


def _import(path: Path) -> ModuleType:
    name = f"tgpool_generated.{path.stem}"
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


_loaded: dict[tuple[str, str], ModuleType] = {}


def load(family: str, context: dict) -> ModuleType:
    """The imported generated module of ``family`` for ``context`` (JSON-able render values)."""
    key = (family, json.dumps(context, sort_keys=True))
    module = _loaded.get(key)
    if module is None:
        source = render(family, **context)
        with _lock:
            module = _loaded.setdefault(key, _import(ensure_file(family, source)))
    return module
