"""Cache faults, for both caches (tuned configs: tune_cache; generated kernel sources: codegen):
a read-only folder, a full disk, a file cut short mid-write, two processes tuning the same key.

Every fault must leave pooling working and correct, the tuner's result usable in memory, one
TgpoolCacheWarning per cause (not one per call), and every entry the user already had in place.
Faults are real where the OS lets a test make them (chmod, when not root) and simulated at the
system-call seam otherwise (os.open / open / os.replace refusing, os.write running out of space).
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import triton_only
from processes import GPU, PROBLEM, FakePlan, python_child

import tgpool
from tgpool import cache_io, codegen
from tgpool.cache_io import TgpoolCacheWarning
from tgpool.launch import LaunchConfig
from tgpool.tuning import cache as tune_cache
from tgpool.tuning import tuner
from tgpool.tuning.cache import Store


def bench(plan, config: LaunchConfig) -> float:
    """Deterministic: the widest inner block wins (not the heuristic's choice)."""
    return 1.0 / config.block_inner + 0.001 * config.num_warps


def user_entry(variant: str = "the user's own") -> tuple[str, dict]:
    key = tuner.plan_key(FakePlan(variant), GPU)
    config = LaunchConfig(8, 64, 2)
    return key.text, tune_cache.make_entry(key, config, config, {config: 0.25})


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    """Each test is a fresh process as far as once-per-process warnings go."""
    monkeypatch.setattr(cache_io, "_warned", set())
    monkeypatch.setattr(codegen, "_fallback", None)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """TGPOOL_CACHE_DIR in a fresh folder, nothing generated loaded in this process."""
    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv("TGPOOL_CACHE_DIR", str(root))
    forget_generated(monkeypatch)
    return root


def forget_generated(monkeypatch) -> None:
    monkeypatch.setattr(codegen, "_loaded", {})
    for name in [n for n in sys.modules if n.startswith("tgpool_generated.")]:
        monkeypatch.delitem(sys.modules, name)


def cache_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, TgpoolCacheWarning)]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --- the faults, made real or simulated ----------------------------------------------------------


def _inside(path, folder: Path) -> bool:
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(folder.resolve())
    except (TypeError, ValueError):
        return False


def simulate_read_only(monkeypatch, folder: Path) -> None:
    """What a read-only folder does to a process that may not write it: creating, opening for
    writing and renaming into it raise PermissionError (reading works)."""

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

    real_os_open, real_open, real_replace = os.open, builtins.open, os.replace
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def os_open(path, flags, *args, **kwargs):
        if flags & writing and _inside(path, folder):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def py_open(file, mode="r", *args, **kwargs):
        if (
            isinstance(file, (str, os.PathLike))
            and set(mode) & set("wax+")
            and _inside(file, folder)
        ):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if _inside(dst, folder) or _inside(src, folder):
            refuse(dst)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", py_open)
    monkeypatch.setattr(os, "replace", replace)


def make_read_only(how: str, monkeypatch, folder: Path) -> None:
    if how == "simulated":
        simulate_read_only(monkeypatch, folder)
        return
    folder.chmod(0o500)
    probe = folder / "probe"
    try:
        probe.touch()
    except PermissionError:
        return
    probe.unlink()
    folder.chmod(0o700)
    pytest.skip("running as root: chmod does not stop writes (the simulated variant runs)")


@pytest.fixture
def restore_mode():
    folders: list[Path] = []
    yield folders.append
    for folder in folders:
        folder.chmod(0o700)


def simulate_full_disk(monkeypatch, folder: Path) -> None:
    """A disk that fills up mid-write: a write to a file in ``folder`` puts down part of its
    bytes, then fails with ENOSPC."""
    real_write = os.write

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = None
        if target is not None and _inside(target, folder):
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="the full-disk simulation reads /proc/self/fd"
)


# --- tuned configs --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["chmod", "simulated"])
def test_read_only_tune_cache_keeps_results_in_memory_and_warns_once(
    how, tmp_path, monkeypatch, restore_mode
):
    folder = tmp_path / "user"
    store = Store(user=folder / "autotune.json", shipped_dir=tmp_path / "shipped")
    mine = dict([user_entry()])
    assert store.store(mine)
    before = store.user.read_bytes()
    restore_mode(folder)
    make_read_only(how, monkeypatch, folder)

    t = tuner.Tuner(bench, repeats=1, device=GPU, store=store)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first = t.ensure([FakePlan("max k3")])[0]
        second = t.ensure([FakePlan("avg k3")])[0]
    assert len(cache_warnings(record)) == 1, cache_warnings(record)
    assert "cannot write the autotune cache" in cache_warnings(record)[0]
    plan = FakePlan("max k3")
    timings = {c: bench(plan, c) for c in tuner.candidates_of(plan)}
    expected = tuner.select(timings, tuner.launch.heuristic(plan.family, plan.variant, PROBLEM))
    assert first.source == second.source == "tuned" and first.config == expected
    assert store.exact(first.key)[0] == first.config  # held in memory for later lookups
    assert store.user.read_bytes() == before and leftovers(folder) == []

    monkeypatch.undo()  # writable again: the next store writes what memory held
    folder.chmod(0o700)
    assert store.store(dict([user_entry("later")]))
    entries = json.loads(store.user.read_text())["entries"]
    assert set(entries) == {*mine, first.key.text, second.key.text, user_entry("later")[0]}
    assert entries[user_entry()[0]] == mine[user_entry()[0]]


@needs_proc
def test_full_disk_leaves_the_tune_cache_as_it_was(tmp_path, monkeypatch):
    store = Store(user=tmp_path / "user" / "autotune.json", shipped_dir=tmp_path / "shipped")
    assert store.store(dict([user_entry()]))
    before = store.user.read_bytes()
    simulate_full_disk(monkeypatch, store.user.parent)

    t = tuner.Tuner(bench, repeats=1, device=GPU, store=store)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        results = [t.ensure([FakePlan(v)])[0] for v in ("max k2", "max k3", "avg k2")]
    messages = cache_warnings(record)
    assert len(messages) == 1 and "No space left" in messages[0], messages
    assert store.user.read_bytes() == before  # nothing half-written replaced it
    assert leftovers(store.user.parent) == []  # the temporary files were removed
    assert all(store.exact(r.key)[0] == r.config for r in results)


def _write_old_style(path: Path, entries: dict, cut: float) -> str:
    """A cache file as an old, non-atomic writer left it when it crashed ``cut`` of the way."""
    data = {"kind": "tgpool-autotune", "format": 1, "entries": entries}
    text = json.dumps(data, indent=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text[: int(len(text) * cut)])
    return path.read_text()


def test_truncated_tune_cache_warns_once_keeps_its_entries_and_is_set_aside(tmp_path):
    store = Store(user=tmp_path / "user" / "autotune.json", shipped_dir=tmp_path / "shipped")
    entries = dict(user_entry(f"own {i}") for i in range(3))
    cut = _write_old_style(store.user, entries, 0.9)  # inside the last entry
    complete = list(entries)[:2]

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            for text in complete:
                assert store.exact(TuneKey_of(entries[text]))[0] == LaunchConfig(8, 64, 2)
        assert Store(user=store.user).exact(TuneKey_of(entries[complete[0]])) is not None
    messages = cache_warnings(record)
    assert len(messages) == 1 and "not valid JSON" in messages[0], messages
    assert "2 complete entries" in messages[0]

    new_text, new_entry = user_entry("tuned after the crash")
    with pytest.warns(TgpoolCacheWarning, match="moved it to"):
        assert store.store({new_text: new_entry})
    written = json.loads(store.user.read_text())["entries"]  # valid JSON again
    assert set(written) == {*complete, new_text}
    assert all(written[t] == entries[t] for t in complete)
    assert store.user.with_name("autotune.json.bad-1").read_text() == cut  # kept, byte for byte


def TuneKey_of(entry: dict) -> tune_cache.TuneKey:  # noqa: N802
    return tune_cache.TuneKey.from_entry(entry)


def test_a_crash_between_write_and_rename_leaves_the_file_intact(tmp_path):
    """The atomic writer's crash leaves a stray temporary file beside an intact cache file."""
    store = Store(user=tmp_path / "user" / "autotune.json", shipped_dir=tmp_path / "shipped")
    mine = dict([user_entry()])
    store.store(mine)
    stray = store.user.with_name(".autotune.json.crashed.tmp")
    stray.write_text('{"kind": "tgpool-autotune", "format": 1, "entr')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        assert store.exact(TuneKey_of(mine[user_entry()[0]])) is not None
        assert store.store(dict([user_entry("next")]))
    assert set(json.loads(store.user.read_text())["entries"]) == {*mine, user_entry("next")[0]}


def test_salvage_reads_only_this_format():
    text, entry = user_entry()
    good = json.dumps({"kind": "tgpool-autotune", "format": 1, "entries": {text: entry}})
    assert tune_cache.salvage(good[:-2]) == {text: entry}  # the closing braces lost
    assert tune_cache.salvage(good[: len(good) // 2]) == {}  # no entry complete
    assert tune_cache.salvage(good.replace('"format": 1', '"format": 2')[:-2]) == {}
    assert tune_cache.salvage('{"entries": {"a": {}}') == {}  # not a tgpool file


_RACER = r"""
import json, sys, time
from pathlib import Path
from processes import FakePlan, GPU
from test_cache_faults import bench
from tgpool.tuning import cache as tune_cache
from tgpool.tuning import tuner
path, tag, other = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def slow(plan, config):  # keeps both processes measuring the shared key at the same time
    time.sleep(0.002)
    return bench(plan, config)

t = tuner.Tuner(slow, repeats=1, device=GPU, store=tune_cache.Store(user=path))
(path.parent / f"ready-{tag}").touch()
while not (path.parent / f"ready-{other}").exists():
    time.sleep(0.001)
results = t.ensure([FakePlan("shared"), FakePlan("only " + tag)])
print(json.dumps([r.config.describe() for r in results]))
"""


def test_two_processes_tuning_the_same_key(tmp_path):
    path = tmp_path / "user" / "autotune.json"
    mine = dict([user_entry()])
    Store(user=path).store(mine)
    procs = [python_child(_RACER, str(path), tag, other) for tag, other in (("a", "b"), ("b", "a"))]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    chosen = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
    assert chosen[0][0] == chosen[1][0]  # the same winner for the shared key in both

    entries = tune_cache.parse(path.read_text(), path)  # valid JSON of this format
    found = tune_cache.valid(entries, path)  # every entry parses
    assert len(found) == len(entries) == 4
    assert {e["variant"] for e in entries.values()} == {
        "the user's own",
        "shared",
        "only a",
        "only b",
    }
    assert entries[user_entry()[0]] == mine[user_entry()[0]]
    shared = next(e for e in entries.values() if e["variant"] == "shared")
    assert tune_cache.config_from(shared["config"]).describe() == chosen[0][0]
    assert set(tune_cache.entry_timings(shared)) == set(tuner.candidates_of(FakePlan("shared")))
    assert leftovers(path.parent) == []


# --- generated kernels ----------------------------------------------------------------------------


def pool_both(x):
    """One window kernel already in the cache (max), one that must be generated now (avg)."""
    with triton_only():
        got_max = tgpool.max_pool2d(x, 3, stride=2, padding=1)
        got_avg = tgpool.avg_pool2d(x, 2)
    torch.testing.assert_close(got_max, F.max_pool2d(x, 3, stride=2, padding=1), atol=0, rtol=0)
    want = F.avg_pool2d(x.double(), 2).float()
    torch.testing.assert_close(got_avg, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("how", ["chmod", "simulated"])
def test_read_only_kernel_cache_still_pools_and_warns_once(how, cache, monkeypatch, restore_mode):
    x = torch.randn(2, 3, 9, 9)
    tgpool.max_pool2d(x, 3, stride=2, padding=1)  # the user's existing kernel file
    kernels = cache / "kernels"
    existing = {p.name: p.read_bytes() for p in kernels.iterdir()}
    assert len(existing) == 1
    forget_generated(monkeypatch)  # as a new process would start
    restore_mode(kernels)
    make_read_only(how, monkeypatch, kernels)

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pool_both(x)
        forget_generated(monkeypatch)
        pool_both(x)  # a second load in the same process: no second warning
        tgpool.avg_pool2d(x, 3)  # another missing kernel, the same cause
    messages = cache_warnings(record)
    assert len(messages) == 1 and "cannot write generated kernels" in messages[0], messages
    assert {p.name: p.read_bytes() for p in kernels.iterdir()} == existing


@needs_proc
def test_full_disk_leaves_a_damaged_kernel_file_untouched(cache, monkeypatch):
    x = torch.randn(2, 3, 9, 9)
    tgpool.avg_pool2d(x, 2)
    kernels = cache / "kernels"
    (path,) = kernels.iterdir()
    damaged = path.read_bytes()[:100]  # cut short by an old crash
    path.write_bytes(damaged)
    forget_generated(monkeypatch)
    simulate_full_disk(monkeypatch, kernels)

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pool_both(x)
    messages = cache_warnings(record)
    assert len(messages) == 1 and "No space left" in messages[0], messages
    assert path.read_bytes() == damaged  # nothing half-written replaced it
    assert sorted(p.name for p in kernels.iterdir()) == [path.name]  # temporaries removed


def test_truncated_kernel_file_is_rewritten_with_one_warning(cache, monkeypatch):
    x = torch.randn(1, 2, 8, 8)
    tgpool.max_pool2d(x, 2)
    (path,) = (cache / "kernels").iterdir()
    good = path.read_bytes()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2):
            path.write_bytes(good[: len(good) // 2])
            forget_generated(monkeypatch)
            with triton_only():
                got = tgpool.max_pool2d(x, 2)
            torch.testing.assert_close(got, F.max_pool2d(x, 2), atol=0, rtol=0)
    messages = cache_warnings(record)
    assert len(messages) == 1 and "did not hold its source" in messages[0], messages
    assert path.read_bytes() == good
