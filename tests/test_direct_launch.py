"""Direct launches (tgpool/direct.py): a compiled specialisation's launcher, called without
Triton's per-launch dispatch, must make exactly the call the JIT makes, and only for arguments
Triton specialises identically.

On CPU, Triton's real ``JITFunction.run`` runs with a fake driver (devices 0 and 1, stream
1000 + device, an sm_90 target) and a fake compile step whose CompiledKernel records every
launcher call; the kernels are built as JITFunction directly, since conftest sets
TRITON_INTERPRET=1 and ``triton.jit`` then gives InterpretedFunctions. The key is checked against
Triton's own binder on random arguments. With a GPU, every kernel family runs twice with direct
launches and twice with ``TGPOOL_DIRECT_LAUNCH=0``, in a child process without the interpreter:
outputs and gradients must be bit-identical, and the direct path must have been taken.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import types
import weakref
from collections import Counter

import pytest
import torch
import triton
import triton.language as tl
from processes import python_child
from triton.runtime import driver as triton_driver
from triton.runtime.jit import JITFunction

import tgpool
from tgpool import direct, runtime


def _copy(x_ptr, y_ptr, n, stride, scale, flag, BLOCK: tl.constexpr, OTHER: tl.constexpr = 3):
    pass


def _unspecialised(x_ptr, y_ptr, n, m, BLOCK: tl.constexpr, k):
    pass


def _fill(out_ptr, value, BLOCK: tl.constexpr):
    tl.store(out_ptr + tl.arange(0, BLOCK), value)


def copy_kernel():
    """A fresh JITFunction (its own caches and hooks) of ``_copy``."""
    return JITFunction(_copy)


class FakeCompiled:
    """What the fake compile step returns: a CompiledKernel's launcher contract, recorded."""

    def __init__(self, fn, signature, constexprs, device):
        self.src = types.SimpleNamespace(fn=fn, signature=dict(signature), constants=constexprs)
        self.function = 0xF00D + device
        self.packed_metadata = ("packed", device)
        self.calls = []

    @property
    def run(self):
        return lambda *call: self.calls.append(call)

    def launch_metadata(self, grid, stream, *args):
        return {"grid": grid, "stream": stream, "args": args}


class FakeDriver:
    def __init__(self):
        from triton.backends.compiler import GPUTarget

        self.device = 0
        self.target = GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return self.device

    def get_current_stream(self, device):
        return 1000 + device

    def get_current_target(self):
        return self.target


@contextlib.contextmanager
def triton_on_a_fake_gpu(monkeypatch):
    """(driver, compiled kernels so far): Triton's JIT on a fake device, compiling nothing."""
    driver = FakeDriver()
    compiled = []

    def fake_compile(self, key, signature, device, constexprs, options, attrs, warmup):
        kernel = FakeCompiled(self, signature, constexprs, device)
        self.device_caches[device][0][key] = kernel
        compiled.append(kernel)
        return kernel

    monkeypatch.setattr(JITFunction, "_do_compile", fake_compile)
    monkeypatch.setattr(direct, "launch_counts", Counter())  # this test's direct launches
    saved = triton_driver._active
    triton_driver.set_active(driver)
    direct.clear()
    try:
        yield driver, compiled
    finally:
        triton_driver._active = saved
        direct.clear()


@pytest.fixture
def fake_triton(monkeypatch):
    with triton_on_a_fake_gpu(monkeypatch) as fake:
        yield fake


def tensor(dtype=torch.float32, offset=0, n=64):
    return torch.zeros(n + 8, dtype=dtype)[offset : offset + n]


ARGS = (tensor(), tensor(), 1000, 16, 0.5, True)
META = {"BLOCK": 64}


def direct_count() -> int:
    return sum(direct.launch_counts.values())


def test_a_second_launch_calls_the_launcher_exactly_as_the_jit_does(fake_triton):
    _, compiled = fake_triton
    kernel = copy_kernel()
    direct.launch(kernel, (4,), ARGS, META, 4, 2)  # compiles, through the JIT
    assert len(compiled) == 1 and direct_count() == 0
    for grid in [(7,), (7, 3), (7, 3, 2)]:
        args = (tensor(), tensor(), 1016, 48, 1.5, False)  # other values, same specialisation
        kernel[grid](*args, **META, num_warps=4, num_stages=2)
        through_jit = compiled[0].calls[-1]
        before = direct_count()
        direct.launch(kernel, grid, args, META, 4, 2)
        made_directly = compiled[0].calls[-1]
        assert direct_count() == before + 1 and len(compiled) == 1
        # grid, stream, function, packed metadata; then every argument, constexprs included
        assert made_directly[:6] == through_jit[:6]
        assert made_directly[9:] == through_jit[9:] == (*args, 64, 3)
        # no launch hook set: no metadata and no hooks, as the C launcher does for empty chains
        assert made_directly[6:9] == (None, None, None)


def test_arguments_as_a_list_as_plans_replay_them(fake_triton):
    _, compiled = fake_triton
    kernel = copy_kernel()
    for _ in range(2):
        direct.launch(kernel, (4,), list(ARGS), META, 4, 2)
    through_jit, made_directly = compiled[0].calls
    assert direct_count() == 1
    assert made_directly[:6] == through_jit[:6] and made_directly[9:] == (*ARGS, 64, 3)


def test_launch_hooks_get_what_the_jit_gives_them(fake_triton):
    from triton import knobs

    _, compiled = fake_triton
    kernel = copy_kernel()
    direct.launch(kernel, (4,), ARGS, META, 4, 2)
    seen = []
    knobs.runtime.launch_enter_hook.add(seen.append)
    try:
        kernel[(5, 2)](*ARGS, **META, num_warps=4, num_stages=2)
        through_jit = compiled[0].calls[-1]
        direct.launch(kernel, (5, 2), ARGS, META, 4, 2)
        made_directly = compiled[0].calls[-1]
    finally:
        knobs.runtime.launch_enter_hook.remove(seen.append)
    assert made_directly == through_jit
    assert made_directly[6] == {"grid": (5, 2), "stream": 1000, "args": (*ARGS, 64, 3)}
    assert made_directly[7] is knobs.runtime.launch_enter_hook


def _change(name):
    """(args, meta, num_warps, num_stages) of the baseline launch with one thing changed."""
    args, meta, warps, stages = list(ARGS), dict(META), 4, 2
    if name == "n == 1":
        args[2] = 1
    elif name == "n % 16 == 0":
        args[2] = 1024
    elif name == "n in i64":
        args[2] = 2**40 + 8
    elif name == "misaligned pointer":
        args[0] = tensor(offset=1)
    elif name == "float16":
        args[1] = tensor(torch.float16)
    elif name == "flag int":
        args[5] = 2
    elif name == "scale None":
        args[4] = None
    elif name == "BLOCK":
        meta["BLOCK"] = 128
    elif name == "BLOCK float":
        meta["BLOCK"] = 64.0
    elif name == "OTHER":
        meta["OTHER"] = 5
    elif name == "num_warps":
        warps = 8
    elif name == "num_stages":
        stages = 3
    return tuple(args), meta, warps, stages


CHANGES = [
    "n == 1",
    "n % 16 == 0",
    "n in i64",
    "misaligned pointer",
    "float16",
    "flag int",
    "scale None",
    "BLOCK",
    "BLOCK float",
    "OTHER",
    "num_warps",
    "num_stages",
    "device",
    "debug knob",
]


@pytest.mark.parametrize("change", CHANGES)
def test_another_specialisation_goes_through_the_jit_first(fake_triton, change, monkeypatch):
    driver, compiled = fake_triton
    kernel = copy_kernel()
    for _ in range(2):
        direct.launch(kernel, (4,), ARGS, META, 4, 2)
    assert direct_count() == 1 and len(compiled) == 1
    args, meta, warps, stages = _change(change)
    if change == "device":
        driver.device = 1
    if change == "debug knob":
        from triton import knobs

        monkeypatch.setattr(knobs.runtime, "debug", True)
    direct.launch(kernel, (4,), args, meta, warps, stages)
    assert direct_count() == 1, "a new specialisation was launched with an old launcher"
    # Triton's key holds the constexprs in a tuple, where 64.0 == 64: one kernel for both (the
    # direct key, keyed by type too, is finer: harmless)
    assert len(compiled) == (1 if change == "BLOCK float" else 2)
    direct.launch(kernel, (4,), args, meta, warps, stages)
    assert direct_count() == 2 and compiled[-1].calls[-1][3] == 1000 + driver.device
    assert compiled[-1].calls[-1][9:] == compiled[-1].calls[-2][9:]
    if change != "BLOCK float":
        assert len(compiled[0].calls) == 2  # the first specialisation's kernel, not called again


def test_the_launcher_keeps_its_compiled_kernel_alive(fake_triton):
    """From Triton 3.8 a CompiledKernel unloads its module when it is collected."""
    _, compiled = fake_triton
    kernel = copy_kernel()
    direct.launch(kernel, (4,), ARGS, META, 4, 2)
    alive = weakref.ref(compiled.pop())
    kernel.device_caches.clear()
    gc.collect()
    assert alive() is not None
    direct.launch(kernel, (4,), ARGS, META, 4, 2)
    assert direct_count() == 1 and len(alive().calls) == 2
    direct.clear()
    gc.collect()
    assert alive() is None


def _pre_run_hook(*args, **kwargs):
    pass


def _kernel_with(case, monkeypatch):
    """(kernel, grid, args, meta) of one launch direct launches must leave to the JIT."""
    kernel, grid, args, meta = copy_kernel(), (4,), ARGS, META
    if case == "callable grid":
        grid = lambda bound: (4,)  # noqa: E731
    elif case == "heuristics wrapper":
        kernel = triton.heuristics({"OTHER": lambda bound: 5})(kernel)
    elif case == "non-constexpr by keyword":
        args, meta = ARGS[:5], {**META, "flag": True}
    elif case == "tuple argument":
        args = (*ARGS[:3], (16, 32), *ARGS[4:])
    elif case == "pre-run hook":
        kernel.add_pre_run_hook(_pre_run_hook)
    elif case == "stages inspection hook":
        from triton import knobs

        monkeypatch.setattr(knobs.runtime, "add_stages_inspection_hook", lambda: ("k", "h"))
    return kernel, grid, args, meta


@pytest.mark.parametrize(
    "case",
    [
        "callable grid",
        "heuristics wrapper",
        "non-constexpr by keyword",
        "tuple argument",
        "pre-run hook",
        "stages inspection hook",
    ],
)
def test_what_is_not_keyed_always_goes_through_the_jit(fake_triton, case, monkeypatch):
    _, compiled = fake_triton
    kernel, grid, args, meta = _kernel_with(case, monkeypatch)
    for _ in range(3):
        direct.launch(kernel, grid, args, meta, 4, 2)
    assert direct_count() == 0
    assert len(compiled) == 1 and len(compiled[0].calls) == 3


def test_an_interpreted_kernel_is_launched_by_the_interpreter():
    """InterpretedFunction.run returns None: nothing to launch directly, every launch runs."""
    from triton.runtime.interpreter import InterpretedFunction

    kernel = InterpretedFunction(_fill)
    before = direct_count()
    for value in (2.0, 3.0):
        out = torch.zeros(16)
        direct.launch(kernel, (1,), (out, value), {"BLOCK": 16}, 4, 2)
        assert torch.equal(out, torch.full((16,), value))
    assert direct_count() == before


def _runtime_launch(kernel):
    config = types.SimpleNamespace(describe=lambda: "BLOCK=64")
    runtime.launch(
        kernel,
        (4,),
        ARGS,
        meta=META,
        num_warps=4,
        num_stages=2,
        variant="v",
        source="s",
        config=config,
    )


@pytest.mark.parametrize(
    ("switch", "direct_launches"),
    [(None, 1), ("1", 1), ("on", 1), ("0", 0), ("false", 0), ("OFF", 0), ("no", 0)],
)
def test_the_environment_switch(fake_triton, monkeypatch, switch, direct_launches):
    _, compiled = fake_triton
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if switch is None:
        monkeypatch.delenv("TGPOOL_DIRECT_LAUNCH", raising=False)
    else:
        monkeypatch.setenv("TGPOOL_DIRECT_LAUNCH", switch)
    kernel = copy_kernel()
    for _ in range(2):
        _runtime_launch(kernel)
    assert direct_count() == direct_launches and len(compiled[0].calls) == 2


def test_the_interpreter_keeps_kernel_grid(fake_triton, monkeypatch):
    _, compiled = fake_triton
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("TGPOOL_DIRECT_LAUNCH", raising=False)
    kernel = copy_kernel()
    for _ in range(3):
        _runtime_launch(kernel)
    assert direct_count() == 0 and len(compiled[0].calls) == 3


def test_recording_times_direct_launches(fake_triton, monkeypatch):
    _, compiled = fake_triton
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv("TGPOOL_DIRECT_LAUNCH", raising=False)
    kernel = copy_kernel()
    with runtime.recording() as records:
        for _ in range(2):
            _runtime_launch(kernel)
    assert [(r.kernel, r.config, r.grid) for r in records] == [("_copy", "BLOCK=64", (4,))] * 2
    assert direct_count() == 1 and len(compiled[0].calls) == 2


def test_triton_versions_outside_the_checked_ones_keep_the_jit():
    assert direct.SUPPORTED, f"triton {triton.__version__}: update direct.TRITON_VERSIONS"
    assert direct._version("3.10.0+git1234") == (3, 10) > direct.TRITON_VERSIONS[1]
    assert direct._version("3.5.1") < direct.TRITON_VERSIONS[0]


# --- the key against Triton's binder --------------------------------------------------------------


def _tritons_key(kernel, args, meta, warps, stages):
    """What JITFunction.run keys its cache on for this launch (binder + options)."""
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(FakeDriver().target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    _, specialisation, options = binder(*args, **meta, num_warps=warps, num_stages=stages)
    return repr(tuple(specialisation)), repr(options)


INTS = [0, 1, 2, 15, 16, 17, 32, 2**31 - 1, 2**31, 2**31 + 16, -16, -1, 2**63, 2**63 + 16]
INTS += [-(2**40), -(2**31), -(2**31) - 1]
TENSORS = [
    tensor(),
    tensor(offset=1),
    tensor(torch.float16),
    tensor(torch.float16, offset=4),
    tensor(torch.int32, offset=4),
    tensor(torch.int32),
    tensor(torch.bfloat16, offset=8),
]
SCALARS = [0.5, 2.0, 1.0, True, False, None, *INTS]


@pytest.mark.parametrize("which", ["specialised", "do_not_specialize"])
def test_the_key_is_never_coarser_than_tritons(fake_triton, which):
    rnd = random.Random(0)
    if which == "specialised":
        kernel = copy_kernel()
        draw = [TENSORS, TENSORS, INTS, INTS, SCALARS, SCALARS]
        metas = [{"BLOCK": 32}, {"BLOCK": 64}, {"BLOCK": 64, "OTHER": 1}, {"BLOCK": True}]
    else:  # n: not specialised; m: not on alignment; BLOCK positional
        kernel = JITFunction(
            _unspecialised, do_not_specialize=["n", "y_ptr"], do_not_specialize_on_alignment=["m"]
        )
        draw = [TENSORS, TENSORS, INTS, INTS, [1, 2, 1.0, True, 16], INTS]
        metas = [{}]
    launchers = direct._KernelLaunchers(kernel)
    ours, theirs = {}, set()
    for _ in range(3000):
        args = tuple(rnd.choice(choices) for choices in draw)
        meta, warps = rnd.choice(metas), rnd.choice([4, 8])
        found = launchers.key((4,), args, meta, warps, 2)
        assert found is not None, args
        triton_key = _tritons_key(kernel, args, meta, warps, 2)
        ours.setdefault(found[1], set()).add(triton_key)
        theirs.add(triton_key)
    merged = {k: v for k, v in ours.items() if len(v) > 1}
    assert not merged, next(iter(merged.items()))
    assert len(ours) <= 4 * len(theirs), "the key splits far finer than Triton's"


# --- tgpool's own kernels
# ---------------------------------------------------------------------------


def _tgpool_launches(monkeypatch):
    """Every (kernel, grid, args, meta, num_warps, num_stages) of a few small tgpool calls, run
    through the interpreter."""
    seen = []
    launch = runtime._launch

    def keep(kernel, grid, args, options):
        meta, warps, stages = options["meta"], options["num_warps"], options["num_stages"]
        seen.append((kernel, tuple(grid), tuple(args), dict(meta), warps, stages))
        return launch(kernel, grid, args, options)

    monkeypatch.setattr(runtime, "_launch", keep)
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    y, _ = tgpool.max_pool2d(x, 3, 2, 1, return_indices=True)
    tgpool.adaptive_avg_pool2d(x, 4).sum().backward()
    y.sum().backward()
    tgpool.global_pool(torch.randn(2, 7, 5), "max", mask=torch.rand(2, 5) > 0.3)
    tgpool.ragged_pool(torch.randn(9, 4), torch.tensor([0, 4, 9]), "avg")
    monkeypatch.undo()
    return seen


def test_tgpool_kernels_launch_directly_as_through_the_jit(monkeypatch):
    """tgpool's generated kernels, their real arguments and constexprs: the direct call equals
    the JIT's, argument for argument (under the fake driver, as JITFunctions)."""
    seen = _tgpool_launches(monkeypatch)
    assert len({id(k) for k, *_ in seen}) >= 5
    with triton_on_a_fake_gpu(monkeypatch) as (_, compiled):
        for interpreted, grid, args, meta, warps, stages in seen:
            kernel = JITFunction(interpreted.fn)
            direct.launch(kernel, grid, args, meta, warps, stages)
            kernel[grid](*args, **meta, num_warps=warps, num_stages=stages)
            through_jit = compiled[-1].calls[-1]
            before = direct_count()
            direct.launch(kernel, grid, args, meta, warps, stages)
            assert direct_count() == before + 1, kernel.fn.__name__
            made_directly = compiled[-1].calls[-1]
            assert made_directly[:6] == through_jit[:6]
            assert made_directly[9:] == through_jit[9:], kernel.fn.__name__


# --- with a GPU: every family, direct and through the JIT -----------------------------------------


def _x(*shape, positive=False, channels_last=False, dtype=torch.float32):
    x = torch.randn(*shape, device="cuda", dtype=dtype)
    if positive:
        x = x.abs() + 0.1
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_()


def _unpool(x):
    y, idx = tgpool.max_pool2d(x, 2, return_indices=True)
    return tgpool.max_unpool2d(y, idx, 2)


#: name -> (inputs, function of the inputs): one call per kernel family, forward and backward
FAMILIES = {
    "max_pool2d": (lambda: [_x(2, 8, 17, 17)], lambda x: tgpool.max_pool2d(x, 3, 2, 1)),
    "max_pool2d_indices": (
        lambda: [_x(2, 8, 16, 16)],
        lambda x: tgpool.max_pool2d(x, 2, return_indices=True),
    ),
    "max_pool2d_fp16_channels_last": (
        lambda: [_x(2, 8, 16, 16, channels_last=True, dtype=torch.float16)],
        lambda x: tgpool.max_pool2d(x, 3, 2, 1),
    ),
    "avg_pool2d": (lambda: [_x(2, 8, 17, 17)], lambda x: tgpool.avg_pool2d(x, 3, 2, 1)),
    "lp_pool2d": (lambda: [_x(2, 8, 16, 16, positive=True)], lambda x: tgpool.lp_pool2d(x, 2, 3)),
    "adaptive_avg_pool2d_7": (
        lambda: [_x(2, 8, 20, 20)],
        lambda x: tgpool.adaptive_avg_pool2d(x, 7),
    ),
    "adaptive_avg_pool2d_1": (
        lambda: [_x(2, 8, 20, 20)],
        lambda x: tgpool.adaptive_avg_pool2d(x, 1),
    ),
    "adaptive_max_pool2d_7": (
        lambda: [_x(2, 8, 20, 20)],
        lambda x: tgpool.adaptive_max_pool2d(x, 7, return_indices=True),
    ),
    "adaptive_max_pool2d_1": (
        lambda: [_x(2, 8, 20, 20)],
        lambda x: tgpool.adaptive_max_pool2d(x, 1),
    ),
    "global_avg_masked": (
        lambda: [_x(4, 33, 16), torch.rand(4, 33, device="cuda") > 0.3],
        lambda x, m: tgpool.global_pool(x, "avg", data_format="channels_last", mask=m),
    ),
    "global_max_masked": (
        lambda: [_x(4, 33, 16), torch.rand(4, 33, device="cuda") > 0.3],
        lambda x, m: tgpool.global_pool(x, "max", data_format="channels_last", mask=m),
    ),
    "ragged_pool": (
        lambda: [_x(30, 16), torch.tensor([0, 7, 7, 30], device="cuda")],
        lambda v, o: tgpool.ragged_pool(v, o, "max"),
    ),
    "max_unpool2d": (lambda: [_x(2, 8, 16, 16)], _unpool),
    "fractional_max_pool2d": (
        lambda: [_x(2, 8, 17, 17), torch.rand(2, 8, 2, device="cuda")],
        lambda x, s: tgpool.fractional_max_pool2d(x, 2, output_size=7, _random_samples=s),
    ),
    "sppf": (lambda: [_x(2, 8, 16, 16)], lambda x: tgpool.sppf(x, 5)),
    "large_window": (lambda: [_x(2, 4, 40, 40)], lambda x: tgpool.max_pool2d(x, 31, 1, 15)),
    "max_pool3d": (lambda: [_x(2, 4, 9, 9, 9)], lambda x: tgpool.max_pool3d(x, 3, 2, 1)),
    "avg_pool3d": (lambda: [_x(2, 4, 9, 9, 9)], lambda x: tgpool.avg_pool3d(x, 3, 2, 1)),
}


def _outputs_and_gradients(fn, inputs) -> list[torch.Tensor]:
    out = fn(*inputs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    loss = sum(o.float().sum() for o in outs if o.is_floating_point())
    grads = torch.autograd.grad(loss, [t for t in inputs if t.requires_grad])
    return [o.detach() for o in outs] + list(grads)


def compare_direct_and_jit_launches() -> str:
    """Runs every family twice with direct launches, then twice with TGPOOL_DIRECT_LAUNCH=0 (in a
    process without the interpreter): bit-identical results, and the second direct run launched
    every kernel directly; then direct launches on a side stream and under graph capture."""
    assert torch.cuda.is_available() and not runtime.interpreter_enabled()
    report = []
    for name, (make, fn) in FAMILIES.items():
        torch.manual_seed(0)
        inputs = make()
        runs = []
        for switch in ("1", "1", "0", "0"):
            os.environ["TGPOOL_DIRECT_LAUNCH"] = switch
            launched, made_directly = sum(runtime.launch_counts.values()), direct_count()
            runs.append(_outputs_and_gradients(fn, inputs))
            launched = sum(runtime.launch_counts.values()) - launched
            made_directly = direct_count() - made_directly
            if len(runs) == 2:
                assert launched > 0 and made_directly == launched, (name, launched, made_directly)
            if switch == "0":
                assert made_directly == 0, name
        torch.cuda.synchronize()
        for run in runs[1:]:
            assert len(run) == len(runs[0]), name
            for got, want in zip(run, runs[0]):
                assert got.dtype == want.dtype and got.shape == want.shape, name
                assert torch.equal(got, want), f"{name}: results differ"
        report.append(f"{name}: {launched} launches")
    os.environ.pop("TGPOOL_DIRECT_LAUNCH")
    _side_stream_and_graph_capture()
    return f"direct launches OK: {direct_count()} in all; " + ", ".join(report)


def _pool(x):
    return tgpool.max_pool2d(x, 3, 2, 1)


def _side_stream_and_graph_capture() -> None:
    """A direct launch goes to the current stream: a side stream's, and under CUDA graph capture
    the capturing stream's (the graph replays it)."""
    x = torch.randn(2, 8, 17, 17, device="cuda")
    want = _pool(x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        before = direct_count()
        got = _pool(x)
        assert direct_count() > before, "no direct launch on the side stream"
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(got, want)
    graph = torch.cuda.CUDAGraph()
    before = direct_count()
    with torch.cuda.graph(graph):
        captured = _pool(x)
    assert direct_count() > before, "no direct launch under capture"
    x.neg_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, _pool(x)), "the graph did not replay the direct launch"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_family_gives_the_same_results_directly_and_through_the_jit(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the child's kernels are compiled, not interpreted
    monkeypatch.delenv("TGPOOL_DIRECT_LAUNCH", raising=False)
    child = python_child(
        "import test_direct_launch as t; print(t.compare_direct_and_jit_launches())"
    )
    out, err = child.communicate(timeout=900)
    assert child.returncode == 0, err[-4000:]
    assert "direct launches OK" in out, out + err[-2000:]
