"""No host synchronisation in any op's forward or backward, and no tuning or cache file I/O while
a CUDA graph is being captured.

``NoHostSync`` is a TorchDispatchMode that fails on every ATen op that reads a device value on the
host (``_local_scalar_dense``: ``.item()``, ``bool()``, ``int()``; ``is_nonzero``, ``equal``,
``nonzero``, ``masked_select``, ...), on tensors built from host data (``lift_fresh``: what
``torch.tensor(list)`` dispatches) and on copies between devices; it also refuses the Python-level
reads (``tolist``, ``numpy``, ``cpu``) that do not dispatch on a CPU tensor. It is paused inside
``runtime.launch``: the Triton interpreter reads its CPU tensors on the host by design, a GPU
launch does not. On CPU the interpreter runs the kernels; with a GPU the same cases run on CUDA.

Three checks read values only when the tensors are on the CPU, where a read costs nothing and
torch's own CPU kernels make the same check (each guarded by ``device.type == "cpu"``):
``CPU_ONLY_READS`` lists them, and the mode allows a read only from inside one of them on a CPU
tensor.
"""

from __future__ import annotations

import builtins
import os
import sys
import warnings

import pytest
import torch
from conftest import launches
from torch._library.custom_ops import OPDEFS
from torch.utils._python_dispatch import TorchDispatchMode

import tgpool
from tgpool import runtime
from tgpool.launch import LaunchConfig
from tgpool.tuning import cache as tune_cache
from tgpool.tuning import tuner

aten = torch.ops.aten

#: ATen ops that read a device value on the host (a synchronisation on CUDA)
READS = {
    getattr(aten, name)
    for name in (
        "_local_scalar_dense",
        "item",
        "is_nonzero",
        "equal",
        "nonzero",
        "nonzero_static",
        "masked_select",
        "unique",
        "_unique",
        "_unique2",
        "unique_consecutive",
        "unique_dim",
        "repeat_interleave",
        "_assert_async",
    )
    if hasattr(aten, name)
}
#: ATen ops that build a tensor from host data (torch.tensor(list, device=...))
FROM_HOST = {aten.lift_fresh, aten.lift_fresh_copy}

#: functions that read values only for CPU tensors (free there; torch's CPU kernels check too)
CPU_ONLY_READS = {
    "check_indices_in_range",  # unpool_ops.max_unpool: indices.device.type == "cpu"
    "_check_offsets",  # global_functional: validate defaults to offsets.device.type == "cpu"
    "_check_p",  # global_functional._check_p(float(p)) only when p.device.type == "cpu"
}


def _tensors(args, kwargs):
    flat, _ = torch.utils._pytree.tree_flatten((args, kwargs))
    return [a for a in flat if isinstance(a, torch.Tensor)]


def _in_cpu_only_check() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name in CPU_ONLY_READS and f"{os.sep}tgpool{os.sep}" in code.co_filename:
            return True
        frame = frame.f_back
    return False


class NoHostSync(TorchDispatchMode):
    """Fails on host reads of tensor values, tensors from host data and cross-device copies."""

    def __init__(self):
        super().__init__()
        self.paused = 0  # > 0 inside runtime.launch
        self.seen = 0  # ops dispatched through the mode outside launches
        self.entered = False

    def __enter__(self):
        self.entered = True
        return super().__enter__()

    def __exit__(self, *exc):
        self.entered = False
        return super().__exit__(*exc)

    def refuse(self, what: str, tensors) -> None:
        if self.paused:
            return
        if all(t.device.type == "cpu" for t in tensors) and _in_cpu_only_check():
            return
        raise AssertionError(f"host synchronisation: {what}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.paused:
            self.seen += 1
            tensors = _tensors(args, kwargs)
            packet = func.overloadpacket
            if packet in READS:
                self.refuse(f"aten.{packet.__name__} reads a tensor value on the host", tensors)
            elif packet in FROM_HOST:
                self.refuse("a tensor built from host data (torch.tensor)", tensors)
            elif packet in (aten._to_copy, aten.copy_, aten.to):
                devices = {t.device for t in tensors}
                if "device" in kwargs and kwargs["device"] is not None:
                    devices.add(torch.device(kwargs["device"]))
                if len(devices) > 1:
                    self.refuse(f"a copy between {sorted(map(str, devices))}", tensors)
        if func.namespace == "tgpool":
            # a mode is off inside its own handler: run the custom op's Python implementation
            # (checks, launchers, allocations) with the mode on again, so it sees their ops
            impl = OPDEFS[func._name]._init_fn
            with self:
                return impl(*args, **kwargs)
        return func(*args, **kwargs)


_PY_READS = ("tolist", "numpy", "cpu")


@pytest.fixture
def no_host_sync(monkeypatch):
    """A NoHostSync mode, paused inside runtime.launch_with, that also refuses Tensor.tolist, .numpy
    and .cpu; use as ``with no_host_sync as mode:``."""
    mode = NoHostSync()
    real_launch = runtime.launch_with  # runtime.launch and plan replays both call it

    def launch(*args):
        mode.paused += 1
        try:
            return real_launch(*args)
        finally:
            mode.paused -= 1

    monkeypatch.setattr(runtime, "launch_with", launch)
    for name in _PY_READS:
        real = getattr(torch.Tensor, name)

        def refusing(self, *args, _real=real, _name=name, **kwargs):
            if mode.entered:
                mode.refuse(f"Tensor.{_name}()", [self])
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, refusing)
    return mode


# --- every op -------------------------------------------------------------------------------------


def _x(device, *shape, channels_last=False, positive=False):
    x = torch.randn(*shape, device=device)
    if positive:
        x = x.abs() + 0.1
    if channels_last:
        x = x.to(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    return x.requires_grad_()


def _unpool(ndim):
    pool = getattr(tgpool, f"max_pool{ndim}d")
    unpool = getattr(tgpool, f"max_unpool{ndim}d")

    def run(x):
        y, idx = pool(x, 2, return_indices=True)
        return unpool(y, idx, 2)

    return run


def _max_double_backward(x):
    y = tgpool.max_pool2d(x, 3, 2, 1)
    (g,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)
    return g


#: name -> (inputs(device), function of the inputs): each case's forward, then .sum().backward()
CASES = {
    "max_pool1d": (lambda d: [_x(d, 2, 3, 11)], lambda x: tgpool.max_pool1d(x, 3, 2, 1)),
    "max_pool2d_indices_ceil": (
        lambda d: [_x(d, 2, 3, 9, 9)],
        lambda x: tgpool.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)[0],
    ),
    "max_pool2d_channels_last_dilated": (
        lambda d: [_x(d, 2, 8, 9, 9, channels_last=True)],
        lambda x: tgpool.max_pool2d(x, 2, 1, 1, dilation=2),
    ),
    "max_pool3d": (lambda d: [_x(d, 1, 2, 5, 6, 7)], lambda x: tgpool.max_pool3d(x, 2)),
    "max_pool2d_double_backward": (lambda d: [_x(d, 1, 2, 8, 8)], _max_double_backward),
    "avg_pool1d": (lambda d: [_x(d, 2, 3, 11)], lambda x: tgpool.avg_pool1d(x, 3, 2, 1)),
    "avg_pool2d_divisor": (
        lambda d: [_x(d, 2, 3, 9, 9)],
        lambda x: tgpool.avg_pool2d(x, 3, 2, 1, divisor_override=5),
    ),
    "avg_pool3d_exclude_pad": (
        lambda d: [_x(d, 1, 2, 5, 6, 7, channels_last=True)],
        lambda x: tgpool.avg_pool3d(x, 3, 2, 1, count_include_pad=False),
    ),
    "lp_pool1d": (lambda d: [_x(d, 2, 3, 10, positive=True)], lambda x: tgpool.lp_pool1d(x, 2, 3)),
    "lp_pool2d": (
        lambda d: [_x(d, 2, 3, 8, 8, positive=True)],
        lambda x: tgpool.lp_pool2d(x, 3.0, 2),
    ),
    "lp_pool3d": (
        lambda d: [_x(d, 1, 2, 4, 4, 4, positive=True)],
        lambda x: tgpool.lp_pool3d(x, 1.5, 2),
    ),
    "large_window_max": (
        lambda d: [_x(d, 1, 2, 12, 12)],
        lambda x: tgpool.max_pool2d(x, 9, 1, 4),
    ),
    "large_window_avg": (
        lambda d: [_x(d, 1, 2, 12, 12)],
        lambda x: tgpool.avg_pool2d(x, 9, 2, 4),
    ),
    "adaptive_avg_pool1d": (
        lambda d: [_x(d, 2, 3, 11)],
        lambda x: tgpool.adaptive_avg_pool1d(x, 4),
    ),
    "adaptive_avg_pool2d": (
        lambda d: [_x(d, 2, 3, 9, 7, channels_last=True)],
        lambda x: tgpool.adaptive_avg_pool2d(x, (4, 3)),
    ),
    "adaptive_avg_pool3d": (
        lambda d: [_x(d, 1, 2, 5, 6, 7)],
        lambda x: tgpool.adaptive_avg_pool3d(x, 3),
    ),
    "adaptive_max_pool1d": (
        lambda d: [_x(d, 2, 3, 11)],
        lambda x: tgpool.adaptive_max_pool1d(x, 4),
    ),
    "adaptive_max_pool2d": (
        lambda d: [_x(d, 2, 3, 9, 7)],
        lambda x: tgpool.adaptive_max_pool2d(x, (4, 3), return_indices=True)[0],
    ),
    "adaptive_max_pool3d": (
        lambda d: [_x(d, 1, 2, 5, 6, 7)],
        lambda x: tgpool.adaptive_max_pool3d(x, 2),
    ),
    "fractional_max_pool2d": (
        lambda d: [_x(d, 2, 3, 9, 9)],
        lambda x: tgpool.fractional_max_pool2d(x, 2, output_size=5),
    ),
    "fractional_max_pool3d": (
        lambda d: [_x(d, 1, 2, 6, 6, 6)],
        lambda x: tgpool.fractional_max_pool3d(x, 2, output_ratio=0.5),
    ),
    "max_unpool1d": (lambda d: [_x(d, 2, 3, 10)], _unpool(1)),
    "max_unpool2d": (lambda d: [_x(d, 2, 3, 8, 8)], _unpool(2)),
    "max_unpool3d": (lambda d: [_x(d, 1, 2, 4, 4, 4)], _unpool(3)),
    "global_avg": (lambda d: [_x(d, 2, 3, 5, 5)], lambda x: tgpool.global_avg_pool(x)),
    "global_max_channels_last": (
        lambda d: [_x(d, 2, 6, 5)],
        lambda x: tgpool.global_max_pool(x, data_format="channels_last"),
    ),
    "global_avgmax": (lambda d: [_x(d, 2, 3, 5, 5)], lambda x: tgpool.global_pool(x, "avgmax")),
    "global_catavgmax": (
        lambda d: [_x(d, 2, 3, 5, 5)],
        lambda x: tgpool.global_pool(x, "catavgmax"),
    ),
    "global_masked_max": (
        lambda d: [_x(d, 2, 3, 7), torch.rand(2, 7, device=d) > 0.3],
        lambda x, m: tgpool.global_max_pool(x, mask=m),
    ),
    "gem_learnable_p": (
        lambda d: [
            _x(d, 2, 3, 4, 4, positive=True),
            torch.full((1,), 3.0, device=d).requires_grad_(),
        ],
        lambda x, p: tgpool.gem(x, p),
    ),
    "ragged_max": (
        lambda d: [_x(d, 12, 4), torch.arange(0, 13, 4, device=d)],
        lambda v, o: tgpool.ragged_pool(v, o, "max"),
    ),
    "ragged_gem": (
        lambda d: [_x(d, 12, 4, positive=True), torch.arange(0, 13, 6, device=d)],
        lambda v, o: tgpool.ragged_pool(v, o, "gem", p=2.5),
    ),
    "sppf": (lambda d: [_x(d, 1, 4, 8, 8)], lambda x: tgpool.sppf(x, 5)),
}


def _loss(out) -> torch.Tensor:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return sum(o.float().sum() for o in outs if o.is_floating_point())


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_backward_do_not_synchronise(name, device, no_host_sync):
    make, fn = CASES[name]
    inputs = make(device)
    before = launches()
    with no_host_sync:
        out = fn(*inputs)
        _loss(out).backward()
    assert launches() > before, "no tgpool kernel ran"
    assert no_host_sync.seen > 0, "the mode saw no op: it was not active"
    grads = [t.grad for t in inputs if t.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "read",
    [
        lambda x: x.sum().item(),
        lambda x: bool(x.sum() > 0),
        lambda x: int(x.argmax()),
        lambda x: x.tolist(),
        lambda x: x.nonzero(),
        lambda x: torch.equal(x, x),
        lambda x: torch.tensor([1.0, 2.0]),
        lambda x: x.cpu(),
    ],
    ids=["item", "bool", "int", "tolist", "nonzero", "equal", "tensor-from-list", "cpu"],
)
def test_the_guard_catches_host_reads(read, no_host_sync):
    x = torch.randn(4)
    with pytest.raises(AssertionError, match="host synchronisation"):
        with no_host_sync:
            read(x)


def test_the_guard_allows_only_the_listed_cpu_checks(no_host_sync):
    """A CPU check outside CPU_ONLY_READS is refused; one inside the list is allowed."""
    x = torch.randn(4)

    def check_indices_in_range(t):  # a function of that name outside tgpool: refused
        return bool(t.sum() > 0)

    with pytest.raises(AssertionError):
        with no_host_sync:
            check_indices_in_range(x)


# --- simulated capture: cached lookups only -------------------------------------------------------


GPU = tuner.DeviceInfo("Test GPU", "9.0")


class CountingBench:
    def __init__(self):
        self.calls = 0

    def __call__(self, plan, config: LaunchConfig) -> float:
        self.calls += 1
        return 1.0 / config.block_inner


def test_no_tuning_and_no_cache_file_access_while_capturing(tmp_path, monkeypatch):
    """As if the interpreter's tensors were on a GPU (the provider's device checks patched), with
    TGPOOL_AUTOTUNE=1: outside capture a missing key is tuned and stored; during a simulated
    capture nothing is tuned and the cache files are neither written, read nor stat'ed."""
    cache = tmp_path / "tune"
    store = tune_cache.Store(user=cache / "autotune.json", shipped_dir=cache / "shipped")
    bench = CountingBench()
    ensured = []
    t = tuner.Tuner(bench, repeats=1, device=GPU, store=store)
    real_ensure = t.ensure
    t.ensure = lambda *a, **k: ensured.append(a) or real_ensure(*a, **k)
    monkeypatch.setattr(tuner, "_default", t)
    monkeypatch.setattr(tuner, "_memo", {})
    monkeypatch.setattr(tuner, "launch_device", lambda plan: GPU if tuner._tensors(plan) else None)
    monkeypatch.setattr(tuner, "on_real_cuda", lambda plan: bool(tuner._tensors(plan)))
    monkeypatch.setenv("TGPOOL_AUTOTUNE", "1")

    opened = []
    real_open = tune_cache.Path.open

    def watch_open(self, *args, **kwargs):
        if cache in self.parents:
            opened.append((self.name, args))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(tune_cache.Path, "open", watch_open)
    real_stat = tune_cache.Path.stat

    def watch_stat(self, *args, **kwargs):
        if cache in self.parents:
            opened.append((self.name, "stat"))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(tune_cache.Path, "stat", watch_stat)
    real_builtin_open = builtins.open

    def watch_builtin_open(file, *args, **kwargs):
        if isinstance(file, (str, tune_cache.Path)) and str(cache) in str(file):
            opened.append((str(file), args))
        return real_builtin_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", watch_builtin_open)

    x = torch.randn(2, 3, 16, 16)
    tgpool.max_pool2d(x, 3, 2, 1)  # warm-up: tuned and stored
    assert ensured and bench.calls > 0 and store.user.exists()
    assert opened, "the watch saw no file access: it would miss one during capture"
    stored = store.user.read_bytes()

    ensured.clear()
    opened.clear()
    bench.calls = 0
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a provider failure only warns: make it fail here
        got = tgpool.max_pool2d(x, 3, 2, 1)  # the warmed-up key
        other = tgpool.max_pool2d(torch.randn(2, 3, 64, 64), 3, 2, 1)  # never tuned: no tuning
        avg = tgpool.avg_pool2d(x, 2)  # another family, never tuned
    assert not ensured and bench.calls == 0, "tuned during capture"
    assert opened == [], f"cache files opened during capture: {opened}"
    assert store.user.read_bytes() == stored
    torch.testing.assert_close(got, torch.nn.functional.max_pool2d(x, 3, 2, 1), atol=0, rtol=0)
    assert other.shape == (2, 3, 32, 32) and avg.shape == (2, 3, 8, 8)
