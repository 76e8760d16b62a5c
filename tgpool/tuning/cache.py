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
moved aside (``autotune.json.bad-N``, never deleted) before the next write. A file cut short
(a crash mid-write of an old non-atomic writer, a full disk) still gives up every entry written
in full (``salvage``): lookups use them and the next write keeps them. Entries that do not parse
are skipped when looking up but kept when merging: no write loses someone else's data. A cache
that cannot be written (read-only folder, full disk) warns once (``TgpoolCacheWarning``) and keeps
the new entries in memory (``Store``); the file on disk is left as it was. Shipped files are
read-only inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
from pathlib import Path

from ..cache_io import warn_once, write_atomic
from ..launch import LaunchConfig
from ..resources import autotune_cache_dir, user_cache_dir

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


_ENTRIES = re.compile(r'"entries"\s*:\s*\{')
_HEADER = (re.compile(rf'"kind"\s*:\s*"{KIND}"'), re.compile(rf'"format"\s*:\s*{FORMAT}\b'))


def salvage(text: str) -> dict:
    """The raw entries written in full before a file of this format was cut short: each
    ``"key": {...}`` pair of "entries" up to the first that does not parse. {} for anything
    else (another format, another kind of file, nothing complete)."""
    found = _ENTRIES.search(text)
    if found is None or not all(h.search(text, 0, found.start()) for h in _HEADER):
        return {}
    decoder, out, i = json.JSONDecoder(), {}, found.end()

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    try:
        while True:
            key, i = decoder.raw_decode(text, skip(i))
            i = skip(i)
            if not isinstance(key, str) or text[i] != ":":
                break
            value, i = decoder.raw_decode(text, skip(i + 1))
            if isinstance(value, dict):
                out[key] = value
            i = skip(i)
            if text[i] != ",":
                break
            i += 1
    except (ValueError, IndexError):  # the cut: everything before it is kept
        pass
    return out


def read_entries(path: Path | None) -> dict:
    """Raw entries of a cache file: {} when it is missing, or (one warning) unreadable; the
    complete entries of a truncated file (one warning)."""
    if path is None:
        return {}
    try:
        stat = path.stat()
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        warn_once((str(path), "read", e.errno), f"tgpool: cannot read autotune cache {path}: {e}")
        return {}
    try:
        return parse(text, path)
    except ValueError as e:
        kept = salvage(text)
        how = f"using the {len(kept)} complete entries it holds" if kept else "ignoring it"
        warn_once(
            (str(path), stat.st_mtime_ns, stat.st_size),
            f"tgpool: {e}; {how} (it is moved to {path.name}.bad-N at the next write)",
        )
        return kept


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
        warn_once((str(path), tuple(bad)), f"tgpool: {path}: skipping {len(bad)} bad entries")
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


def write_file(path: Path, entries: dict, *, set_aside: bool = False) -> Path | None:
    """Write ``entries`` as a cache file, atomically (cache_io.write_atomic: on an OSError the
    existing file is untouched). ``set_aside``: keep the file it replaces as ``.bad-N``."""
    data = {"kind": KIND, "format": FORMAT, "entries": dict(sorted(entries.items()))}
    text = json.dumps(data, indent=1) + "\n"
    return write_atomic(path, text.encode(), set_aside=set_aside)


def merge_into(path: Path, new: dict, *, replace: bool = False) -> dict:
    """Add raw ``new`` entries to the file at ``path`` under its lock; returns what it holds.
    An entry for a key already there keeps the timings of both (the new ones win), so a
    candidate measured by one process is never measured again by another. ``replace``: write
    ``new`` alone (``tgpool cache clear`` writes {})."""
    with locked(path):
        current, unusable, salvaged = {}, None, 0
        if path.exists() and not replace:
            text = path.read_text()
            try:
                current = parse(text, path)
            except ValueError as e:
                current, unusable = salvage(text), str(e)
                salvaged = len(current)
        for text, entry in new.items():
            old = current.get(text)
            if isinstance(old, dict) and isinstance(old.get("timings"), dict):
                entry = {**entry, "timings": {**old["timings"], **entry.get("timings", {})}}
            current[text] = entry
        backup = write_file(path, current, set_aside=unusable is not None)
        if backup is not None:
            warn_once(
                str(backup),
                f"tgpool: {unusable}; moved it to {backup} (its {salvaged} complete "
                "entries are kept in the new file)",
            )
        return current


# --- lookup ---------------------------------------------------------------------------------------


class Store:
    """The user's file and the shipped files, read once per change of the user's file.

    Entries that could not be written (read-only folder, full disk: one TgpoolCacheWarning) are
    kept in memory, looked up before the file's, and written with the next successful store.
    ``reread=False`` (used while a CUDA graph is captured) answers from the files as last read,
    without touching the file system, when they were read before."""

    def __init__(self, user: Path | None = None, shipped_dir: Path | None = None):
        self._user = user
        self._shipped_dir = shipped_dir
        self._seen: dict = {}
        self._unsaved: dict = {}  # raw entries a write failed to keep
        self._unsaved_valid: dict = {}

    @property
    def user(self) -> Path:
        return self._user or user_path()

    def shipped(self, gpu: str) -> Path | None:
        if self._shipped_dir is not None:
            return self._shipped_dir / f"{slug(gpu)}.json"
        return shipped_path(gpu)

    def _valid(self, path: Path | None, reread: bool = True) -> dict:
        if path is None:
            return {}
        if not reread and path in self._seen:
            return self._seen[path][1]
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

    def user_entries(self, reread: bool = True) -> dict:
        found = self._valid(self.user, reread)
        return {**found, **self._unsaved_valid} if self._unsaved_valid else found

    def shipped_entries(self, gpu: str, reread: bool = True) -> dict:
        return self._valid(self.shipped(gpu), reread)

    def exact(self, key: TuneKey, reread: bool = True) -> tuple[LaunchConfig, dict, str] | None:
        """(config, entry, "user" | "shipped") for exactly ``key``, user first."""
        for source, entries in (
            ("user", self.user_entries(reread)),
            ("shipped", self.shipped_entries(key.gpu, reread)),
        ):
            hit = entries.get(key.text)
            if hit is not None:
                return hit[1], hit[2], source
        return None

    def nearest(self, key: TuneKey, reread: bool = True) -> tuple[LaunchConfig, dict, str] | None:
        """The same variant's entry whose bucket is nearest ``key``'s (distance in powers of two
        summed over both sides; ties: the user's first, then the smaller bucket)."""
        best = None
        sources = (
            ("user", self.user_entries(reread)),
            ("shipped", self.shipped_entries(key.gpu, reread)),
        )
        for rank, (source, entries) in enumerate(sources):
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

    def lookup(self, key: TuneKey, reread: bool = True) -> tuple[LaunchConfig, dict, str] | None:
        return self.exact(key, reread) or self.nearest(key, reread)

    def store(self, entries: dict) -> bool:
        """Merge raw entries (key text -> entry) into the user's file; whether they were written.
        When they cannot be (an OSError: read-only folder, full disk, ...) they are kept in
        memory for this Store's lookups, with one warning per cause, and never raised."""
        if not entries:
            return True
        pending = {**self._unsaved, **entries}
        try:
            merge_into(self.user, pending)
        except OSError as e:
            self._unsaved = pending
            self._unsaved_valid = valid(pending, "tgpool's in-memory tuned configs")
            warn_once(
                ("write", str(self.user), e.errno),
                f"tgpool: cannot write the autotune cache {self.user} ({e}); tuned configs are "
                "kept in memory for this process only (set TGPOOL_CACHE_DIR to a writable "
                "folder to keep them)",
            )
            return False
        self._unsaved, self._unsaved_valid = {}, {}
        return True
