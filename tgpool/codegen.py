"""Render a kernel family's Jinja template for one variant, write it to a real file, import it.

Triton reads a kernel's source with ``inspect``, so generated code must live in a file: each
rendering is written to ``<cache>/kernels/<family>_<sha256 of the source>.py`` atomically (a
temporary file and ``os.replace``, cache_io.write_atomic), and an existing file is used only if
its bytes are exactly the rendering: a file whose name (its hash) does not match its bytes (cut
short by a crash, edited) is written again, with one warning. Unlike the tuned-config file it is
not kept aside: it holds nothing but a rendering, which is regenerated exactly. Where
the cache folder cannot be written (read-only, full disk) the kernels go to a private temporary
folder for this process, with one ``TgpoolCacheWarning``: pooling never fails for a cache fault.
Identical variants share the file and, within a process, the imported module.
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

from .cache_io import warn_once, write_atomic
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


_fallback: Path | None = None  # this process's private kernel folder, once the cache failed


def _fallback_dir() -> Path:
    global _fallback
    if _fallback is None:
        _fallback = Path(tempfile.mkdtemp(prefix=f"tgpool-kernels-{os.getpid()}-"))
    return _fallback


def _write_atomic(path: Path, text: str) -> None:
    write_atomic(path, text.encode())


def _matches(path: Path, source: str) -> bool | None:
    """Whether ``path`` holds exactly ``source``; None when there is no readable file."""
    try:
        return path.read_bytes() == source.encode()
    except OSError:
        return None


def ensure_file(family: str, source: str) -> Path:
    """A file holding exactly ``source``: the cache's, (re)written if missing or different, or
    (the cache folder failing) one in this process's private folder."""
    path = source_path(family, source)
    found = _matches(path, source)
    if found:
        return path
    try:
        _write_atomic(path, source)
    except OSError as e:
        fallback = _fallback_dir() / path.name
        warn_once(
            ("kernels", str(path.parent), e.errno),
            f"tgpool: cannot write generated kernels to {path.parent} ({e}); using "
            f"{fallback.parent} for this process (set TGPOOL_CACHE_DIR to a writable folder)",
        )
        if not _matches(fallback, source):
            _write_atomic(fallback, source)
        return fallback
    if found is False:
        warn_once(
            (str(path), "damaged"),
            f"tgpool: the generated kernel {path} did not hold its source (cut short or "
            "edited); wrote it again",
        )
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


def loaded_generation() -> int:
    """Changes when the in-process module cache is replaced (as a new process would start):
    part of every launch plan's key (tgpool/plans.py), so a plan never outlives its kernels."""
    return id(_loaded)


def load(family: str, context: dict) -> ModuleType:
    """The imported generated module of ``family`` for ``context`` (JSON-able render values)."""
    key = (family, json.dumps(context, sort_keys=True))
    module = _loaded.get(key)
    if module is None:
        source = render(family, **context)
        with _lock:
            module = _loaded.setdefault(key, _import(ensure_file(family, source)))
    return module
