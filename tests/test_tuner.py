"""Tuner mechanics with injected, deterministic benchmark functions: candidates, winner selection,
the noise band, ties, kept timings, the time budget, lookup order and the launch provider.

No kernel is timed here: a FakePlan has what the tuner reads of a KernelLaunch, and the benchmark
functions return times chosen per config.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tgpool import launch
from tgpool.launch import LaunchConfig
from tgpool.tuning import tuner
from tgpool.tuning.cache import Store

GPU = tuner.DeviceInfo("Test GPU 80GB", "9.0")
PROBLEM = {"outer": 8 * 64 * 28, "inner": 56, "inner_step": 2, "dtype": "float16", "vector": True}


@dataclasses.dataclass
class FakePlan:
    """What the tuner reads of a window_pool.KernelLaunch; ``args`` holds no tensors."""

    family: str = "window_pool_fwd"
    variant: str = "max k3x3 s2x2 p1x1 d1x1 float16 channels_first"
    problem: dict = dataclasses.field(default_factory=lambda: dict(PROBLEM))
    args: tuple = ()
    ctx: dict = dataclasses.field(default_factory=dict)


class Bench:
    """Times by config (``default`` for the rest), and a log of every measurement."""

    def __init__(self, times: dict | None = None, default: float = 1.0, fail=()):
        self.times, self.default, self.fail = times or {}, default, set(fail)
        self.calls: list[LaunchConfig] = []

    def __call__(self, plan, config):
        self.calls.append(config)
        if config in self.fail:
            raise RuntimeError("out of resources")
        value = self.times.get(config, self.default)
        return value() if callable(value) else value


@pytest.fixture
def store(tmp_path):
    return Store(user=tmp_path / "user" / "autotune.json", shipped_dir=tmp_path / "shipped")


def make_tuner(store, bench, **kwargs):
    return tuner.Tuner(bench, device=GPU, store=store, **kwargs)


def heuristic_of(plan) -> LaunchConfig:
    return launch.heuristic(plan.family, plan.variant, plan.problem)


def simplest_non_heuristic(plan) -> tuple[LaunchConfig, LaunchConfig]:
    """Two candidates that are not the heuristic's config, the simpler first."""
    others = [c for c in tuner.candidates_of(plan) if c != heuristic_of(plan)]
    return others[0], others[-1]


# --- candidates -----------------------------------------------------------------------------------


def test_candidates_are_pruned_by_what_the_problem_can_use():
    found = launch.candidates("window_pool_fwd", {"outer": 4096, "inner": 20})
    assert found and all(c.block_inner <= 32 for c in found)  # no wider than the row
    assert {c.num_stages for c in found} == {1}  # unrolled window: nothing to pipeline
    looped = launch.candidates("window_pool_fwd", {"outer": 4096, "inner": 20}, loops=True)
    assert {c.num_stages for c in looped} == {1, 2, 3}
    space = launch.SEARCH_SPACES["window_pool_fwd"]
    for c in found:
        tile = c.block_outer * c.block_inner
        assert space.min_tile <= tile <= space.max_tile
        assert tile // (32 * c.num_warps) <= space.max_per_thread
    assert found == sorted(found, key=LaunchConfig.simplicity)


def test_index_gather_candidates_use_one_flat_block():
    found = launch.candidates("index_gather", {"outer": 1, "inner": 100_000})
    assert found and {c.block_outer for c in found} == {1}


def test_a_family_without_an_entry_gets_the_generic_space():
    found = launch.candidates("global_pool_fwd", {"outer": 4096, "inner": 4096})
    assert "global_pool_fwd" not in launch.SEARCH_SPACES
    assert {c.block_inner for c in found} <= set(launch.GENERIC_SPACE.inner)
    assert len(found) > 10


def test_tiny_problems_still_have_a_candidate():
    assert launch.candidates("window_pool_fwd", {"outer": 1, "inner": 1})


def test_heuristic_config_is_always_measured(store):
    plan = FakePlan(problem={"outer": 3, "inner": 5, "dtype": "float32"})
    bench = Bench()
    make_tuner(store, bench, repeats=1).ensure([plan])
    assert heuristic_of(plan) in bench.calls


def test_describe_and_parse_round_trip():
    config = LaunchConfig(16, 64, 8, 2)
    assert LaunchConfig.parse(config.describe()) == config
    with pytest.raises(ValueError):
        LaunchConfig.parse("16x64")


# --- selection ------------------------------------------------------------------------------------


def test_select_fastest_outside_the_noise_band():
    h, a, b = LaunchConfig(8, 64, 4), LaunchConfig(4, 64, 2), LaunchConfig(16, 64, 8)
    assert tuner.select({h: 1.0, a: 0.9, b: 0.5}, h, noise=0.03) == b


def test_select_keeps_the_heuristic_inside_the_noise_band():
    h, a = LaunchConfig(8, 64, 4), LaunchConfig(4, 64, 2)
    assert tuner.select({h: 1.0, a: 0.98}, h, noise=0.03) == h
    assert tuner.select({h: 1.0, a: 0.96}, h, noise=0.03) == a


def test_select_ties_go_to_the_simplest_config():
    h = LaunchConfig(8, 64, 4)
    simple, busy = LaunchConfig(4, 64, 1), LaunchConfig(16, 64, 8)
    # busy is fastest, but simple is within the band: simple wins, whatever the dict order
    assert tuner.select({h: 2.0, busy: 0.50, simple: 0.51}, h) == simple
    assert tuner.select({simple: 0.51, busy: 0.50, h: 2.0}, h) == simple


def test_select_never_picks_a_failed_config():
    h, a = LaunchConfig(8, 64, 4), LaunchConfig(4, 64, 2)
    assert tuner.select({h: float("inf"), a: 3.0}, h) == a
    assert tuner.select({h: float("inf"), a: float("inf")}, h) == h


# --- tuning ---------------------------------------------------------------------------------------


def test_tuning_picks_the_winner_and_stores_every_timing(store):
    plan = FakePlan()
    simple, busy = simplest_non_heuristic(plan)
    bench = Bench({busy: 0.25})
    (result,) = make_tuner(store, bench).ensure([plan])
    assert result.config == busy and result.source == "tuned"
    assert result.speedup == pytest.approx(4.0)
    entry = json.loads(store.user.read_text())["entries"][result.key.text]
    assert set(entry["timings"]) == {c.describe() for c in tuner.candidates_of(plan)}
    assert entry["config"] == dataclasses.asdict(busy)
    assert entry["gpu"] == GPU.name and entry["capability"] == "9.0"
    assert entry["template"] == tuner.template_hash("window_pool_fwd")


def test_each_config_is_measured_repeats_times_and_its_median_kept(store):
    plan = FakePlan()
    simple, _ = simplest_non_heuristic(plan)
    samples = iter([0.1, 5.0, 5.0])  # one fast outlier: the median (5.0) must be kept
    bench = Bench({simple: lambda: next(samples)})
    (result,) = make_tuner(store, bench, repeats=3).ensure([plan])
    assert bench.calls.count(simple) == 3
    assert len(bench.calls) == 3 * len(tuner.candidates_of(plan))
    assert result.timings[simple] == 5.0 and result.config == heuristic_of(plan)


def test_same_times_give_the_same_config(tmp_path):
    plan = FakePlan()
    simple, busy = simplest_non_heuristic(plan)
    times = {simple: 0.500, busy: 0.499}
    picks = []
    for run in range(2):
        store = Store(user=tmp_path / str(run) / "autotune.json", shipped_dir=tmp_path)
        picks.append(make_tuner(store, Bench(times)).ensure([plan])[0].config)
    assert picks == [simple, simple]


def test_failing_configs_are_stored_as_failed_and_lose(store):
    plan = FakePlan()
    simple, busy = simplest_non_heuristic(plan)
    (result,) = make_tuner(store, Bench({busy: 0.1}, fail={busy})).ensure([plan])
    assert result.config != busy
    entry = json.loads(store.user.read_text())["entries"][result.key.text]
    assert entry["timings"][busy.describe()] is None


def test_a_cached_key_is_not_measured_again(store):
    plan = FakePlan()
    make_tuner(store, Bench()).ensure([plan])
    bench = Bench()
    (result,) = make_tuner(store, bench).ensure([plan])
    assert bench.calls == [] and result.source == "user"
    (result,) = make_tuner(store, bench).ensure([plan], retune=True)
    assert bench.calls and result.source == "tuned"


def test_a_new_candidate_is_the_only_one_measured(store, monkeypatch):
    plan = FakePlan()
    make_tuner(store, Bench(), repeats=1).ensure([plan])
    before = set(tuner.candidates_of(plan))
    space = launch.SEARCH_SPACES["window_pool_fwd"]
    wider = dataclasses.replace(space, warps=(*space.warps, 16), max_per_thread=64)
    monkeypatch.setitem(launch.SEARCH_SPACES, "window_pool_fwd", wider)
    added = set(tuner.candidates_of(plan)) - before
    assert added
    bench = Bench({c: 0.1 for c in added})
    (result,) = make_tuner(store, bench, repeats=1).ensure([plan])
    assert set(bench.calls) == added
    assert result.config in added and len(result.timings) == len(tuner.candidates_of(plan))


def test_plans_with_one_key_are_tuned_once(store):
    a, b = FakePlan(), FakePlan(problem={**PROBLEM, "outer": PROBLEM["outer"] - 100})
    bench = Bench()
    results = make_tuner(store, bench, repeats=1).ensure([a, b])
    assert len(results) == 1 and len(bench.calls) == len(tuner.candidates_of(a))


def test_the_time_budget_skips_the_remaining_keys(store):
    clock = {"now": 0.0}

    def bench(plan, config):
        clock["now"] += 1.0
        return 1.0

    plans = [FakePlan(variant=f"max k{k}x{k} float16 channels_first") for k in (2, 3, 5)]
    t = make_tuner(store, bench, repeats=1, clock=lambda: clock["now"])
    results = t.ensure(plans, budget=1.0)
    assert [r.source for r in results] == ["tuned", "skipped", "skipped"]
    assert results[1].config is None


def test_progress_reports_each_tuned_key(store):
    seen = []
    plans = [FakePlan(variant=f"v{k}") for k in range(3)]
    make_tuner(store, Bench(), repeats=1).ensure(plans, progress=lambda *a: seen.append(a[:2]))
    assert seen == [(1, 3), (2, 3), (3, 3)]


# --- keys and lookup ------------------------------------------------------------------------------


def test_key_holds_what_a_config_depends_on():
    key = tuner.plan_key(FakePlan(), GPU)
    assert (key.gpu, key.capability, key.family) == (GPU.name, "9.0", "window_pool_fwd")
    assert key.triton and len(key.template) == 16
    assert key.bucket == (16384, 64) and key.dtype == "float16"
    other = tuner.plan_key(FakePlan(problem={**PROBLEM, "dtype": "float32"}), GPU)
    assert other.text != key.text


def test_dtype_comes_from_the_tensors_when_the_problem_has_none():
    plan = FakePlan(family="index_gather", variant="ndim=2", problem={"outer": 1, "inner": 999})
    plan.args = (torch.empty(2, dtype=torch.bfloat16), torch.empty(2, dtype=torch.int64))
    assert tuner.plan_key(plan, GPU).dtype == "bfloat16"


def test_lookup_prefers_user_then_shipped_then_nearest_bucket(store):
    plan = FakePlan()
    key = tuner.plan_key(plan, GPU)
    simple, busy = simplest_non_heuristic(plan)
    # shipped: this key and a far bucket of it
    from tgpool.tuning import cache as tune_cache

    far = dataclasses.replace(key, bucket=(key.bucket[0] * 64, key.bucket[1]))
    near = dataclasses.replace(key, bucket=(key.bucket[0] * 2, key.bucket[1]))
    shipped = {
        key.text: tune_cache.make_entry(key, simple, simple, {simple: 1.0}),
        far.text: tune_cache.make_entry(far, busy, busy, {busy: 1.0}),
    }
    tune_cache.write_file(store.shipped(GPU.name), shipped)
    assert store.lookup(key)[0] == simple and store.lookup(key)[2] == "shipped"
    store.store({key.text: tune_cache.make_entry(key, busy, busy, {busy: 1.0})})
    assert store.lookup(key)[0] == busy and store.lookup(key)[2] == "user"
    # a bucket with no entry of its own: the nearest one (near, from the user cache) wins
    probe = dataclasses.replace(key, bucket=(key.bucket[0] * 4, key.bucket[1]))
    store.store({near.text: tune_cache.make_entry(near, simple, simple, {simple: 1.0})})
    config, _, source = store.lookup(probe)
    assert config == simple and source.startswith("user (nearest")
    # another variant has no entry at any size
    assert store.lookup(dataclasses.replace(key, variant="avg k2x2 float16")) is None


# --- the launch provider --------------------------------------------------------------------------


@pytest.fixture
def provider(store, monkeypatch):
    """The default provider, seeing FakePlans as launches on GPU, with the test store."""
    bench = Bench()
    monkeypatch.setattr(tuner, "launch_device", lambda plan: GPU)
    monkeypatch.setattr(tuner, "may_tune_now", lambda plan: True)
    monkeypatch.setattr(tuner, "_default", make_tuner(store, bench, repeats=1))
    monkeypatch.delenv("TGPOOL_AUTOTUNE", raising=False)
    monkeypatch.setattr(launch, "_provider", tuner.cached_config)
    tuner.forget()
    yield bench
    tuner.forget()


def _config_for(plan):
    return launch.config_for(plan.family, plan.variant, plan.problem, plan=plan)


def test_no_entry_means_the_heuristic_and_no_tuning(provider):
    plan = FakePlan()
    assert _config_for(plan) == heuristic_of(plan)
    assert provider.calls == []


def test_a_cached_entry_is_used(provider, store):
    plan = FakePlan()
    _, busy = simplest_non_heuristic(plan)
    make_tuner(store, Bench({busy: 0.1}), repeats=1).ensure([plan])
    assert _config_for(plan) == busy and provider.calls == []


def test_autotune_tunes_once_per_key_at_a_first_call(provider, store, monkeypatch):
    monkeypatch.setenv("TGPOOL_AUTOTUNE", "1")
    plan = FakePlan()
    _, busy = simplest_non_heuristic(plan)
    provider.times[busy] = 0.1
    assert _config_for(plan) == busy
    measured = len(provider.calls)
    assert measured == len(tuner.candidates_of(plan))
    assert _config_for(plan) == busy and len(provider.calls) == measured
    tuner.forget()  # a new process: the stored entry, no measuring
    assert _config_for(plan) == busy and len(provider.calls) == measured
    assert tuner.plan_key(plan, GPU).text in json.loads(store.user.read_text())["entries"]


def test_autotune_waits_while_tuning_is_not_allowed(provider, monkeypatch):
    monkeypatch.setenv("TGPOOL_AUTOTUNE", "1")
    monkeypatch.setattr(tuner, "may_tune_now", lambda plan: False)  # e.g. graph capture
    plan = FakePlan()
    assert _config_for(plan) == heuristic_of(plan) and provider.calls == []
    monkeypatch.setattr(tuner, "may_tune_now", lambda plan: True)
    _config_for(plan)
    assert provider.calls  # deferred, not forgotten


def test_tuning_is_never_allowed_on_cpu_or_meta_tensors():
    for device in ("cpu", "meta"):
        plan = FakePlan(args=(torch.empty(4, device=device),))
        assert not tuner.may_tune_now(plan)
        assert tuner.launch_device(plan) is None


def test_the_interpreter_keeps_the_heuristic():
    plan = FakePlan(args=(torch.empty(4),))
    assert tuner.provide(plan.family, plan.variant, plan.problem, plan) is None


# --- recorded launches, run again -----------------------------------------------------------------


def _record_max_pool(x):
    from tgpool.tuning import workload as tune_workload

    call = {"op": "max_pool2d", "input_shape": list(x.shape), "kernel_size": 3, "stride": 2}
    return tune_workload.record(tune_workload.calls_workload([call], "float32"), "cpu")


def test_recorded_launches_run_again_with_other_configs(monkeypatch):
    """The tuner re-launches recorded launches with each candidate (interpreter, CPU tensors):
    every config must give torch's result, or tuning would time wrong kernels."""
    torch.manual_seed(0)
    plans = _record_max_pool(torch.empty(2, 3, 11, 13))
    assert [p.family for p in plans] == ["window_pool_fwd", "window_pool_bwd"]
    fwd, bwd = plans
    x5, out, idx = fwd.args[:3]  # the kernels see (N, C, D, H, W) views
    x = x5.squeeze(2)
    expected, expected_idx = torch.nn.functional.max_pool2d(x, 3, 2, return_indices=True)
    grad_out5, _, grad_in = bwd.args[:3]
    grad_out = grad_out5.squeeze(2)
    expected_grad = torch.zeros_like(grad_in).flatten(2)
    expected_grad.scatter_add_(2, expected_idx.flatten(2), grad_out.flatten(2))
    for plan, check in ((fwd, lambda: out), (bwd, lambda: grad_in)):
        configs = tuner.candidates_of(plan)
        for config in (configs[0], configs[-1], LaunchConfig(1, 8, 1)):
            check().fill_(float("nan"))
            tuner.run_config(plan, config)
            if plan is fwd:
                assert torch.equal(out, expected) and torch.equal(idx, expected_idx), config
            else:
                assert torch.allclose(grad_in.flatten(2), expected_grad), config


def test_recorded_launches_tune_end_to_end(store):
    plans = _record_max_pool(torch.empty(2, 3, 11, 13))
    bench = Bench()
    results = make_tuner(store, bench, repeats=1).ensure(plans)
    assert [r.key.family for r in results] == ["window_pool_fwd", "window_pool_bwd"]
    assert all(r.config == r.heuristic and r.source == "tuned" for r in results)
