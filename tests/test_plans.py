"""Launch plans (tgpool/plans.py) and the lean op boundary (tgpool/ops/boundary.py).

A plan is built once per call signature and replayed after; every part of the signature that can
change what an implementation does gives another plan; the cache stays bounded; a replay gives the
same results and launches the same kernels as a full run. In plain eager mode the ops bypass
torch's custom-op wrapper; anything that traces or intercepts takes the registered custom op.
"""

from __future__ import annotations

import collections
import threading

import pytest
import torch
from conftest import launched_kernels
from torch._library.custom_ops import CustomOpDef
from torch.utils._python_dispatch import TorchDispatchMode

import tgpool
from tgpool import launch, plans, runtime
from tgpool.ops import boundary

pytestmark = pytest.mark.skipif(
    not runtime.interpreter_enabled(), reason="needs TRITON_INTERPRET=1 (CPU kernels)"
)


def builds() -> int:
    return boundary.PLANS.builds


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


# --- one plan per signature -----------------------------------------------------------------------


def test_a_second_identical_call_builds_no_plan():
    x = _x(2, 3, 9, 9)
    first = tgpool.max_pool2d(x, 3, 2, 1)
    before = builds()
    with launched_kernels() as counts:
        second = tgpool.max_pool2d(x.clone(), 3, 2, 1)
    assert builds() == before
    assert sum(counts.values()) == 1  # the replay launched the kernel
    assert torch.equal(first, second)


#: name -> (first call, a call that differs in one field of the key)
FIELDS = {
    "strides": (
        lambda: tgpool.max_pool2d(_x(2, 4, 8, 8), 2),
        lambda: tgpool.max_pool2d(_x(2, 4, 8, 8).to(memory_format=torch.channels_last), 2),
    ),
    "shape": (
        lambda: tgpool.max_pool2d(_x(2, 4, 8, 8), 2),
        lambda: tgpool.max_pool2d(_x(2, 4, 8, 10), 2),
    ),
    "alignment": (
        lambda: tgpool.avg_pool2d(torch.randn(2 * 4 * 8 * 8 + 1)[:-1].view(2, 4, 8, 8), 2),
        lambda: tgpool.avg_pool2d(torch.randn(2 * 4 * 8 * 8 + 1)[1:].view(2, 4, 8, 8), 2),
    ),
    "dtype": (
        lambda: tgpool.max_pool2d(_x(2, 4, 8, 8), 2),
        lambda: tgpool.max_pool2d(_x(2, 4, 8, 8, dtype=torch.float64), 2),
    ),
    "window": (
        lambda: tgpool.avg_pool2d(_x(2, 4, 8, 8), 2),
        lambda: tgpool.avg_pool2d(_x(2, 4, 8, 8), 2, count_include_pad=False, padding=1),
    ),
}


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_each_field_of_the_key_changes_the_plan(field):
    first, other = FIELDS[field]
    first()
    before = builds()
    first()
    assert builds() == before
    other()
    assert builds() == before + 1


def test_a_changed_config_gives_a_new_plan():
    x = _x(2, 4, 8, 8)
    tgpool.max_pool2d(x, 2)
    before = builds()
    launch.configs_changed()  # a tuned config stored, a cache cleared, another provider
    tgpool.max_pool2d(x, 2)
    assert builds() == before + 1
    saved = launch.get_provider()
    launch.set_provider(lambda family, variant, problem: launch.LaunchConfig(1, 8, 1))
    try:
        with runtime.recording() as records:
            tgpool.max_pool2d(x, 2)
        assert builds() == before + 2
        assert records[0].config == "1x8 w1 s1"  # the new provider's config, not the plan's
    finally:
        launch.set_provider(saved)


@pytest.mark.parametrize("name", ["TGPOOL_AUTOTUNE", "TGPOOL_CACHE_DIR", "TRITON_INTERPRET"])
def test_each_setting_changes_the_plan(name, monkeypatch, tmp_path):
    x = _x(2, 4, 8, 8)
    tgpool.max_pool2d(x, 2)
    before = builds()
    value = {"TGPOOL_AUTOTUNE": "0", "TGPOOL_CACHE_DIR": str(tmp_path), "TRITON_INTERPRET": "true"}
    monkeypatch.setenv(name, value[name])
    tgpool.max_pool2d(x, 2)
    assert builds() == before + 1


def test_deterministic_mode_changes_the_plan():
    x = _x(2, 4, 8, 8)
    tgpool.max_pool2d(x, 2)
    before = builds()
    torch.use_deterministic_algorithms(True)
    try:
        tgpool.max_pool2d(x, 2)
    finally:
        torch.use_deterministic_algorithms(False)
    assert builds() == before + 1


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_the_device_changes_the_plan():
    a = plans.signature("op", (torch.empty(4, device="cuda:0"),))
    b = plans.signature("op", (torch.empty(4, device="cuda:1"),))
    assert a != b


def test_the_signature_covers_device_and_refuses_subclasses():
    x = torch.empty(4)
    key = plans.signature("op", (x, [1, 2], True, None, 2.5))
    assert key is not None and hash(key) is not None
    assert (x.shape, x.stride(), x.dtype, -1, x.data_ptr() & 15) in key  # -1: the CPU

    class Sub(torch.Tensor):
        pass

    assert plans.signature("op", (x.as_subclass(Sub),)) is None
    assert plans.signature("op", (object(),)) is None


# --- the cache ------------------------------------------------------------------------------------


def _impl(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.empty_like(x)


def test_the_cache_stays_bounded():
    cache = plans.PlanCache(max_plans=3)
    for n in range(10):
        cache.call("test::op", _impl, (torch.empty(2), n))
    assert len(cache) == 3
    assert cache.builds == 10


def test_a_call_that_does_more_than_allocate_and_launch_is_never_replayed():
    def fills(x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x).fill_(7.0)

    cache = plans.PlanCache()
    for _ in range(3):
        assert torch.equal(
            cache.call("test::fills", fills, (torch.empty(3),)), torch.full((3,), 7.0)
        )
    assert cache.builds == 3 and cache.unplannable == 3 and len(cache) == 0


def test_zero_filling_a_new_allocation_is_replayed():
    def zeros(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.empty_like(x).zero_(), torch.zeros_like(x)

    cache = plans.PlanCache()
    x = torch.empty(5)
    for _ in range(3):
        a, b = cache.call("test::zeros", zeros, (x,))
        assert torch.equal(a, torch.zeros(5)) and torch.equal(b, torch.zeros(5))
    assert cache.builds == 1 and len(cache) == 1
    (plan,) = cache._plans._entries.values()
    assert [zeroed for *_, zeroed in plan.allocations] == [True, True]


def test_zeroing_an_input_is_never_replayed():
    def zero_input(t: torch.Tensor) -> torch.Tensor:
        t.zero_()
        return torch.empty_like(t)

    cache = plans.PlanCache()
    for _ in range(2):
        x = torch.ones(3)
        cache.call("test::zero_input", zero_input, (x,))
        assert torch.equal(x, torch.zeros(3))
    assert cache.builds == 2 and len(cache) == 0


def test_results_that_alias_an_input_are_never_replayed():
    cache = plans.PlanCache()
    x = torch.empty(3)
    for _ in range(2):
        assert cache.call("test::alias", lambda t: t.view(3), (x,)).data_ptr() == x.data_ptr()
    assert len(cache) == 0


def test_threads_share_the_cache_safely():
    # the Triton interpreter runs one kernel at a time, so the launches are stubbed: what runs in
    # parallel is planning, recording and replaying
    shapes = [(2, 4, 8, 8 + i) for i in range(4)]
    expected = {s: tgpool.avg_pool2d(_x(*s), 2).shape for s in shapes}
    errors = []
    counts = collections.Counter()

    def work(shape):
        try:
            for _ in range(20):
                x = _x(*shape).to(memory_format=torch.channels_last)
                assert tgpool.avg_pool2d(x, 2).shape == expected[shape]
                counts[shape] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    with runtime.launches_stubbed():
        threads = [threading.Thread(target=work, args=(s,)) for s in shapes * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert all(n == 40 for n in counts.values())


#: every family, called twice: the replay must give what the first (planned) call gave
FAMILY_CALLS = {
    "max_pool2d": lambda x: tgpool.max_pool2d(x, 3, 2, 1, return_indices=True),
    "avg_pool3d": lambda x: tgpool.avg_pool3d(x.unsqueeze(2).expand(-1, -1, 3, -1, -1), 2),
    "lp_pool2d": lambda x: tgpool.lp_pool2d(x, 2.0, 2),
    "large_window": lambda x: tgpool.max_pool2d(x, 9, 1, 4),
    "adaptive_avg": lambda x: tgpool.adaptive_avg_pool2d(x, 3),
    "adaptive_max": lambda x: tgpool.adaptive_max_pool2d(x, 1, return_indices=True),
    "global": lambda x: tgpool.global_pool(x, "catavgmax"),
    "gem": lambda x: tgpool.gem(x.abs()),
    "unpool": lambda x: tgpool.max_unpool2d(*tgpool.max_pool2d(x, 2, return_indices=True), 2),
    "fractional": lambda x: tgpool.fractional_max_pool2d(
        x, 2, output_size=4, _random_samples=torch.full((2, 3, 2), 0.5)
    ),
    "sppf": lambda x: tgpool.sppf(x, 3),
}


@pytest.mark.parametrize("family", sorted(FAMILY_CALLS))
def test_a_replay_equals_the_full_run(family):
    call = FAMILY_CALLS[family]
    x = _x(2, 3, 8, 8)
    with launched_kernels() as first_counts:
        first = call(x)
    before, unplannable = builds(), boundary.PLANS.unplannable
    with launched_kernels() as counts:
        again = call(x)
    assert builds() == before, "the second call planned again"
    assert boundary.PLANS.unplannable == unplannable
    assert counts == first_counts
    for a, b in zip(
        first if isinstance(first, tuple) else (first,),
        again if isinstance(again, tuple) else (again,),
    ):
        assert torch.equal(a, b) and a.stride() == b.stride()


# --- the op boundary ------------------------------------------------------------------------------


@pytest.fixture
def no_custom_op_wrapper(monkeypatch):
    """torch's custom-op call path, refusing: only tgpool's short path may run."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{self._qualname} went through the custom-op wrapper")

    monkeypatch.setattr(CustomOpDef, "__call__", refuse)


def test_plain_eager_calls_skip_the_custom_op_wrapper(no_custom_op_wrapper):
    x = _x(2, 3, 9, 9).requires_grad_()
    y = tgpool.max_pool2d(x, 3, 2, 1)
    (g,) = torch.autograd.grad(y.sum(), x)
    ref = torch.nn.functional.max_pool2d(x, 3, 2, 1)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    assert torch.equal(y, ref) and torch.equal(g, g_ref)


def test_double_backward_goes_through_the_short_path_too(no_custom_op_wrapper):
    x = _x(1, 2, 6, 6, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: tgpool.avg_pool2d(t, 2), (x,))


class _Seen(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_a_dispatch_mode_sees_the_registered_custom_op():
    x = _x(2, 3, 8, 8)
    with _Seen() as mode:
        tgpool.max_pool2d(x, 2)
    assert "tgpool.max_pool.default" in mode.ops


def test_the_registered_ops_are_tgpool_ops():
    from tgpool.ops import window

    assert isinstance(window.max_pool, boundary.TgpoolOp)
    assert isinstance(window.max_pool, CustomOpDef)
    assert torch.ops.tgpool.max_pool.default is window.max_pool._opoverload
