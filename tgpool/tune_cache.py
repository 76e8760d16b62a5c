"""The autotuner's cache: keys, the JSON files, and the lookup order.

A tuned config is valid for one GPU, one Triton, one kernel template and one variant at one size,
so the key is all of them (``TuneKey``). Lookup order (``Store.lookup``): the user's cache, the
file shipped for this GPU in ``autotune_cache/``, then the nearest shape bucket of the same
variant in either; the caller falls back to the heuristic.

Both kinds of file share one format (documented in autotune_cache/README.md)::

    {"kind": "tgpool-autotune", "format": 1, "entries": {"<TuneKey.text>": {...}, ...}}

The user's file (``<user cache>/autotune.json``) is written by merging: under an exclusive lock
(``fcntl.flock`` on a sibling ``.lock`` file) the file is read again, the new entries are added,
and the result replaces the file atomically (temporary file + ``os.replace``). Two processes
tuning at once therefore keep each other's entries, and a reader never sees half a file. A file
that is not JSON, or of another format version, is warned about once, ignored when reading, and
moved aside (``autotune.json.bad-N``, never deleted) before the next write. Entries that do not
parse are skipped when looking up but kept when merging: no write loses someone else's data.
Shipped files are read-only inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import tempfile
import warnings
from pathlib import Path

from .launch import LaunchConfig
from .resources import autotune_cache_dir, user_cache_dir

KIND = "tgpool-autotune"
FORMAT = 1
USER_FILE = "autotune.json"


@dataclasses.dataclass(frozen=True)
class TuneKey:
    """Everything a tuned config depends on. ``bucket`` is (outer, inner) rounded up to powers
    of two (see tuner.bucket)."""

    gpu: str  # torch.cuda.get_device_name
    capability: str  # e.g. "9.0"
    triton: str  # triton.__version__
    family: str  # kernel family (template name)
    template: str  # sha256 prefix of the family's template text
    variant: str  # the variant's describe()
    dtype: str
    layout: str
    bucket: tuple[int, int]

    @property
    def text(self) -> str:
        """The key as stored in the JSON files."""
        fields = dataclasses.astuple(self)[:-1]
        return "|".join((*fields, "x".join(map(str, self.bucket))))

    def same_variant(self) -> tuple:
        """Every field but the bucket: entries that agree on it differ only in size."""
        return dataclasses.astuple(self)[:-1]

    @classmethod
    def from_entry(cls, entry: dict) -> TuneKey:
        fields = {f.name: entry[f.name] for f in dataclasses.fields(cls)}
        bucket = tuple(int(b) for b in fields.pop("bucket"))
        if len(bucket) != 2 or not all(isinstance(v, str) for v in fields.values()):
            raise ValueError(f"malformed key fields: {entry}")
        return cls(**fields, bucket=bucket)


def config_from(data: dict) -> LaunchConfig:
    """A LaunchConfig from its JSON form, checked (a cache must never produce a bad launch)."""
    config = LaunchConfig(
        int(data["block_outer"]),
        int(data["block_inner"]),
        int(data.get("num_warps", 4)),
        int(data.get("num_stages", 1)),
    )
    powers = (config.block_outer, config.block_inner, config.num_warps)
    if any(v < 1 or v & (v - 1) for v in powers) or config.num_warps > 32:
        raise ValueError(f"not a valid launch config: {data}")
    if not 1 <= config.num_stages <= 8:
        raise ValueError(f"not a valid launch config: {data}")
    return config


def make_entry(key: TuneKey, config: LaunchConfig, heuristic: LaunchConfig, timings: dict) -> dict:
    """The JSON entry of one tuned key; ``timings``: LaunchConfig -> median ms (inf: failed)."""
    return {
        **{f.name: getattr(key, f.name) for f in dataclasses.fields(key)},
        "bucket": list(key.bucket),
        "config": dataclasses.asdict(config),
        "heuristic": dataclasses.asdict(heuristic),
        "timings": {
            c.describe(): (t if math.isfinite(t) else None)
            for c, t in sorted(timings.items(), key=lambda ct: ct[0].simplicity())
        },
    }


def entry_timings(entry: dict) -> dict[LaunchConfig, float]:
    """LaunchConfig -> ms of an entry (None, a failed config, reads as inf)."""
    return {
        LaunchConfig.parse(text): (math.inf if ms is None else float(ms))
        for text, ms in entry.get("timings", {}).items()
    }


def slug(gpu: str) -> str:
    """The shipped file's name for a GPU: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    return re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") or "unknown-gpu"


def shipped_path(gpu: str) -> Path | None:
    try:
        return autotune_cache_dir() / f"{slug(gpu)}.json"
    except FileNotFoundError:
        return None


def user_path() -> Path:
    return user_cache_dir() / USER_FILE


# --- reading --------------------------------------------------------------------------------------

_warned: set = set()


def _warn_once(token, message: str) -> None:
    if token not in _warned:
        _warned.add(token)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def parse(text: str, path: Path) -> dict:
    """The raw entries of a cache file's text; ValueError saying why when it is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ValueError(f'{path} is not a tgpool autotune file (no "kind": "{KIND}")')
    if data.get("format") != FORMAT:
        raise ValueError(
            f"{path} has format {data.get('format')!r}; this tgpool reads format {FORMAT}"
        )
    entries = data.get("entries")
    if not isinstance(entries, dict):
        raise ValueError(f'{path} has no "entries" object')
    return entries


def read_entries(path: Path | None) -> dict:
    """Raw entries of a cache file: {} when it is missing, or (one warning) unreadable."""
    if path is None:
        return {}
    try:
        stat = path.stat()
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        _warn_once((str(path), "os"), f"tgpool: cannot read autotune cache {path}: {e}")
        return {}
    try:
        return parse(text, path)
    except ValueError as e:
        _warn_once((str(path), stat.st_mtime_ns, stat.st_size), f"tgpool: ignoring {e}")
        return {}


def valid(entries: dict, path) -> dict[str, tuple[TuneKey, LaunchConfig, dict]]:
    """key text -> (key, config, entry) for the entries that parse; one warning for the rest."""
    found, bad = {}, []
    for text, entry in entries.items():
        try:
            key = TuneKey.from_entry(entry)
            if key.text != text:
                raise ValueError("key does not match its fields")
            found[text] = (key, config_from(entry["config"]), entry)
        except (KeyError, TypeError, ValueError):
            bad.append(text)
    if bad:
        _warn_once((str(path), tuple(bad)), f"tgpool: {path}: skipping {len(bad)} bad entries")
    return found


# --- writing --------------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on ``path``'s sibling ``.lock`` file (fcntl.flock; where fcntl does
    not exist, no lock: writes stay atomic, concurrent merges may then drop entries)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _set_aside(path: Path, reason: str) -> Path:
    """Rename an unusable file to the first free ``<name>.bad-N`` (under the lock)."""
    n = 1
    while path.with_name(f"{path.name}.bad-{n}").exists():
        n += 1
    backup = path.with_name(f"{path.name}.bad-{n}")
    os.replace(path, backup)
    warnings.warn(f"tgpool: {reason}; moved it to {backup}", RuntimeWarning, stacklevel=3)
    return backup


def write_file(path: Path, entries: dict) -> None:
    """Write ``entries`` as a cache file, atomically (temporary file + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"kind": KIND, "format": FORMAT, "entries": dict(sorted(entries.items()))}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def merge_into(path: Path, new: dict, *, replace: bool = False) -> dict:
    """Add raw ``new`` entries to the file at ``path`` under its lock; returns what it holds.
    An entry for a key already there keeps the timings of both (the new ones win), so a
    candidate measured by one process is never measured again by another. ``replace``: write
    ``new`` alone (``tgpool cache clear`` writes {})."""
    with locked(path):
        current = {}
        if path.exists() and not replace:
            try:
                current = parse(path.read_text(), path)
            except ValueError as e:
                _set_aside(path, str(e))
        for text, entry in new.items():
            old = current.get(text)
            if isinstance(old, dict) and isinstance(old.get("timings"), dict):
                entry = {**entry, "timings": {**old["timings"], **entry.get("timings", {})}}
            current[text] = entry
        write_file(path, current)
        return current


# --- lookup ---------------------------------------------------------------------------------------


class Store:
    """The user's file and the shipped files, read once per change of the user's file."""

    def __init__(self, user: Path | None = None, shipped_dir: Path | None = None):
        self._user = user
        self._shipped_dir = shipped_dir
        self._seen: dict = {}

    @property
    def user(self) -> Path:
        return self._user or user_path()

    def shipped(self, gpu: str) -> Path | None:
        if self._shipped_dir is not None:
            return self._shipped_dir / f"{slug(gpu)}.json"
        return shipped_path(gpu)

    def _valid(self, path: Path | None) -> dict:
        if path is None:
            return {}
        try:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None
        cached = self._seen.get(path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, valid(read_entries(path), path))
            self._seen[path] = cached
        return cached[1]

    def user_entries(self) -> dict:
        return self._valid(self.user)

    def shipped_entries(self, gpu: str) -> dict:
        return self._valid(self.shipped(gpu))

    def exact(self, key: TuneKey) -> tuple[LaunchConfig, dict, str] | None:
        """(config, entry, "user" | "shipped") for exactly ``key``, user first."""
        for source, entries in (
            ("user", self.user_entries()),
            ("shipped", self.shipped_entries(key.gpu)),
        ):
            hit = entries.get(key.text)
            if hit is not None:
                return hit[1], hit[2], source
        return None

    def nearest(self, key: TuneKey) -> tuple[LaunchConfig, dict, str] | None:
        """The same variant's entry whose bucket is nearest ``key``'s (distance in powers of two
        summed over both sides; ties: the user's first, then the smaller bucket)."""
        best = None
        for rank, source in enumerate(("user", "shipped")):
            entries = self.user_entries() if source == "user" else self.shipped_entries(key.gpu)
            for other, config, entry in entries.values():
                if other.same_variant() != key.same_variant():
                    continue
                distance = sum(
                    abs(math.log2(a) - math.log2(b))
                    for a, b in zip(other.bucket, key.bucket)
                    if a > 0 and b > 0
                )
                order = (distance, rank, other.bucket)
                if best is None or order < best[0]:
                    best = (order, (config, entry, f"{source} (nearest {other.bucket})"))
        return best[1] if best else None

    def lookup(self, key: TuneKey) -> tuple[LaunchConfig, dict, str] | None:
        return self.exact(key) or self.nearest(key)

    def store(self, entries: dict) -> None:
        """Merge raw entries (key text -> entry) into the user's file."""
        if entries:
            merge_into(self.user, entries)
