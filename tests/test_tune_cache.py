"""The autotune cache files: format, merging writes from concurrent processes, corrupt and
foreign-version files (one warning, set aside, never lost), and read-only shipped files."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tgpool.launch import LaunchConfig
from tgpool.tuning import cache as tune_cache
from tgpool.tuning.cache import Store, TuneKey

ROOT = Path(__file__).resolve().parents[1]
KEY = TuneKey(
    gpu="Test GPU",
    capability="8.0",
    triton="3.9.0",
    family="window_pool_fwd",
    template="0123456789abcdef",
    variant="max k3x3 s2x2 p1x1 d1x1 float16 channels_last",
    dtype="float16",
    layout="channels_last",
    bucket=(4096, 64),
)
CONFIG = LaunchConfig(16, 64, 4)


def entry(key=KEY, config=CONFIG, ms=1.0) -> dict:
    return tune_cache.make_entry(key, config, config, {config: ms})


def keyed(n: int) -> TuneKey:
    return dataclasses.replace(KEY, bucket=(2**n, 64))


@pytest.fixture
def store(tmp_path):
    return Store(user=tmp_path / "autotune.json", shipped_dir=tmp_path / "shipped")


def test_file_format(store):
    store.store({KEY.text: entry()})
    data = json.loads(store.user.read_text())
    assert data["kind"] == "tgpool-autotune" and data["format"] == tune_cache.FORMAT
    stored = data["entries"][KEY.text]
    assert stored["config"] == {
        "block_outer": 16,
        "block_inner": 64,
        "num_warps": 4,
        "num_stages": 1,
    }
    assert stored["bucket"] == [4096, 64] and stored["timings"] == {"16x64 w4 s1": 1.0}
    assert TuneKey.from_entry(stored) == KEY
    assert store.exact(KEY)[0] == CONFIG


def test_writes_merge_and_keep_timings_of_both(store):
    other = LaunchConfig(8, 64, 2)
    store.store({KEY.text: entry()})
    store.store({keyed(20).text: entry(keyed(20))})
    store.store({KEY.text: entry(config=other, ms=0.5)})
    entries = json.loads(store.user.read_text())["entries"]
    assert set(entries) == {KEY.text, keyed(20).text}
    assert entries[KEY.text]["timings"] == {"16x64 w4 s1": 1.0, "8x64 w2 s1": 0.5}
    assert store.exact(KEY)[0] == other


_WRITER = r"""
import dataclasses, sys, time
sys.path.insert(0, {tests!r})
from test_tune_cache import KEY, entry
from tgpool.tuning import cache as tune_cache
from pathlib import Path
path, tag, other = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
(path.parent / f"ready-{{tag}}").touch()
while not (path.parent / f"ready-{{other}}").exists():  # start together: the writes overlap
    time.sleep(0.001)
for i in range(150):
    key = dataclasses.replace(KEY, variant=f"{{tag}} {{i}}")
    tune_cache.merge_into(path, {{key.text: entry(key)}})
"""


def test_two_processes_writing_lose_no_entry(tmp_path):
    path = tmp_path / "autotune.json"
    code = _WRITER.format(tests=str(ROOT / "tests"))
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path), tag, other], cwd=ROOT)
        for tag, other in (("a", "b"), ("b", "a"))
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    entries = json.loads(path.read_text())["entries"]
    variants = {e["variant"] for e in entries.values()}
    assert variants == {f"{tag} {i}" for tag in "ab" for i in range(150)}


def test_corrupt_file_warns_once_and_is_set_aside_on_write(store):
    store.user.write_text('{"kind": "tgpool-autotune", "format": 1, "entries": {')
    with pytest.warns(RuntimeWarning, match="not valid JSON"):
        assert store.lookup(KEY) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Store(user=store.user).lookup(KEY) is None  # the same file: no second warning
    with pytest.warns(RuntimeWarning, match="moved it to"):
        store.store({KEY.text: entry()})
    backup = store.user.with_name("autotune.json.bad-1")
    assert backup.read_text().endswith('"entries": {')  # the user's bytes, kept
    assert store.exact(KEY)[0] == CONFIG


def test_foreign_version_is_ignored_and_kept(store):
    newer = {"kind": "tgpool-autotune", "format": 99, "entries": {"x": {"anything": 1}}}
    store.user.write_text(json.dumps(newer))
    with pytest.warns(RuntimeWarning, match="format 99"):
        assert store.lookup(KEY) is None
    with pytest.warns(RuntimeWarning, match="moved it to"):
        store.store({KEY.text: entry()})
    assert json.loads(store.user.with_name("autotune.json.bad-1").read_text()) == newer
    store.user.write_text(json.dumps(newer))  # a second foreign file: a second backup
    with pytest.warns(RuntimeWarning):
        store.store({KEY.text: entry()})
    assert store.user.with_name("autotune.json.bad-2").exists()


def test_a_bad_entry_is_skipped_but_never_dropped(store):
    broken = {
        **entry(keyed(3)),
        "config": {"block_outer": 3, "block_inner": 64},
    }  # not a power of 2
    tune_cache.write_file(store.user, {KEY.text: entry(), keyed(3).text: broken})
    with pytest.warns(RuntimeWarning, match="1 bad entries"):
        assert store.exact(keyed(3)) is None
    assert store.exact(KEY)[0] == CONFIG
    store.store({keyed(5).text: entry(keyed(5))})
    assert json.loads(store.user.read_text())["entries"][keyed(3).text] == broken


def test_a_key_that_does_not_match_its_fields_is_skipped(store):
    tune_cache.write_file(store.user, {"something else": entry()})
    with pytest.warns(RuntimeWarning, match="bad entries"):
        assert store.lookup(KEY) is None


def test_shipped_files_are_read_only_inputs(store):
    shipped = store.shipped(KEY.gpu)
    assert shipped.name == "test-gpu.json"
    tune_cache.write_file(shipped, {KEY.text: entry()})
    before = shipped.read_bytes()
    assert store.lookup(KEY)[2] == "shipped"
    store.store({keyed(9).text: entry(keyed(9))})
    assert shipped.read_bytes() == before and store.user.exists()


def test_a_corrupt_shipped_file_is_ignored(store):
    shipped = store.shipped(KEY.gpu)
    shipped.parent.mkdir(parents=True)
    shipped.write_text("not json")
    with pytest.warns(RuntimeWarning):
        assert store.lookup(KEY) is None
    assert shipped.read_text() == "not json"


def test_gpu_slug():
    assert tune_cache.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert tune_cache.slug("NVIDIA A100-SXM4-40GB") == "nvidia-a100-sxm4-40gb"


def test_user_cache_honours_tgpool_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TGPOOL_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert tune_cache.user_path() == tmp_path / "elsewhere" / "autotune.json"


def test_the_shipped_folder_documents_its_format():
    readme = (ROOT / "autotune_cache" / "README.md").read_text()
    for word in ('"kind": "tgpool-autotune"', '"format": 1', "timings", "bucket", "template"):
        assert word in readme
    for path in (ROOT / "autotune_cache").glob("*.json"):  # every shipped file parses
        assert tune_cache.valid(tune_cache.parse(path.read_text(), path), path)
