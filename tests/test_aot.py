"""Ahead-of-time compilation for sm_80 and sm_90a, without a GPU: every kernel family compiles,
none spills registers, and the forward kernels issue the vector widths they were designed for.

Run with ``-s`` to see the table of every compiled kernel (registers, spills, shared memory, load
and store widths as "bits x instructions").
"""

from __future__ import annotations

import pytest
import torch
from aot_checks import assert_no_spills

import tgpool
from tgpool import aot, runtime
from tgpool.kernels import window as window_pool
from tgpool.spec import window_spec

ARCHS = ("sm_80", "sm_90a")
WINDOWS = {
    "3x3 s2 p1": {"kernel_size": 3, "stride": 2, "padding": 1},  # ResNet stem
    "2x2 s2": {"kernel_size": 2, "stride": 2},  # VGG
    # 125 taps: run-time loops, not unrolled. Symmetric 5x5x5 max/avg windows take the separable
    # passes (kernels/large_window.py); 'same' padding (asymmetric here) keeps them on this kernel
    "5x5x5 s2 same": {"kernel_size": 5, "stride": 2, "padding": "same"},
}
#: shapes whose 16-divisible extents let Triton prove alignment along the contiguous dim
CHANNELS_LAST_SHAPE = (8, 64, 56, 56)  # C = 64
CHANNELS_FIRST_SHAPE = (8, 64, 112, 112)  # W = 112
SHAPE_3D = (2, 32, 16, 16, 16)


def _call(op, shape, dtype, layout, arch, direction="fwd", window="3x3 s2 p1", with_indices=None):
    """One inspect_op call, as a hashable key."""
    return (op, shape, dtype, layout, arch, direction, window, with_indices)


def _kwargs(key) -> dict:
    op, shape, dtype, layout, arch, direction, window, with_indices = key
    extra = {} if with_indices is None else {"with_indices": with_indices}
    return dict(
        op=op,
        input_shape=shape,
        dtype=dtype,
        layout=layout,
        arch=arch,
        direction=direction,
        **WINDOWS[window],
        **extra,
    )


#: every call the tests below make, compiled up front in a pool of worker processes
CALLS: list[tuple] = []


class _Compiled:
    def __init__(self):
        self.results = {}

    def compile(self, keys):
        keys = [k for k in dict.fromkeys(keys) if k not in self.results]
        if keys:
            found = aot.inspect_many([_kwargs(k) for k in keys], return_exceptions=True)
            self.results.update(zip(keys, found, strict=True))

    def __call__(self, *args, **kwargs) -> list[aot.KernelReport]:
        key = _call(*args, **kwargs)
        self.compile([key])
        result = self.results[key]
        if isinstance(result, Exception):
            raise result
        return result

    def table(self) -> str:
        """Each compiled kernel once (a call may repeat another's, e.g. with_indices unset and
        False), sorted by arch, layout, op, dtype."""
        reports = {
            (r.arch, r.op, r.kernel, r.layout, r.dtype, r.shape): r
            for rs in self.results.values()
            if isinstance(rs, list)
            for r in rs
        }
        return aot.format_table(
            [reports[k] for k in sorted(reports, key=lambda k: (k[0], k[3], k[1], k[4]))]
        )


@pytest.fixture(scope="module")
def inspect():
    """inspect(op, shape, dtype, layout, arch, direction, window, with_indices) -> reports;
    prints the table of every compiled kernel at the end (visible with -s)."""
    compiled = _Compiled()
    compiled.compile(CALLS)
    yield compiled
    print("\n" + compiled.table())


# --- every family compiles without spilling -------------------------------------------------------

FAMILIES = [
    # (case, op, direction, with_indices, kernels launched ({tile}: rows or channels))
    ("max fwd", "max_pool2d", "fwd", False, ["max_pool2d_fwd_{tile}"]),
    ("max fwd, indices", "max_pool2d", "fwd", True, ["max_pool2d_fwd_{tile}_idx"]),
    ("max bwd, indices saved", "max_pool2d", "bwd", True, ["max_pool2d_bwd_{tile}"]),
    (
        "max bwd, indices recomputed",
        "max_pool2d",
        "bwd",
        False,
        ["max_pool2d_fwd_{tile}_idx", "max_pool2d_bwd_{tile}"],
    ),
    ("avg fwd", "avg_pool2d", "fwd", None, ["avg_pool2d_fwd_{tile}"]),
    ("avg bwd", "avg_pool2d", "bwd", None, ["avg_pool2d_bwd_{tile}"]),
]
LAYOUTS = {
    "channels_first": ("rows", CHANNELS_FIRST_SHAPE),
    "channels_last": ("channels", CHANNELS_LAST_SHAPE),
}
CALLS += [
    _call(op, LAYOUTS[layout][1], torch.float16, layout, arch, direction, with_indices=with_indices)
    for arch in ARCHS
    for layout in LAYOUTS
    for _, op, direction, with_indices, _ in FAMILIES
]
CALLS += [
    _call("max_pool2d", CHANNELS_FIRST_SHAPE, torch.float16, "channels_first", arch, "double_bwd")
    for arch in ARCHS
]
CALLS += [
    _call(
        "max_pool3d",
        SHAPE_3D,
        torch.float16,
        layout,
        arch,
        window="5x5x5 s2 same",
        with_indices=True,
    )
    for arch in ARCHS
    for layout in LAYOUTS
]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "case,op,direction,with_indices,kernels", FAMILIES, ids=[f[0] for f in FAMILIES]
)
def test_family_compiles_without_spills(
    inspect, arch, layout, case, op, direction, with_indices, kernels
):
    tile, shape = LAYOUTS[layout]
    reports = inspect(op, shape, torch.float16, layout, arch, direction, with_indices=with_indices)
    assert [r.kernel for r in reports] == [k.format(tile=tile) for k in kernels]
    for r in reports:
        assert_no_spills(r)


@pytest.mark.parametrize("arch", ARCHS)
def test_index_gather_compiles_without_spills(inspect, arch):
    (r,) = inspect(
        "max_pool2d", CHANNELS_FIRST_SHAPE, torch.float16, "channels_first", arch, "double_bwd"
    )
    assert r.kernel == "index_gather2d"
    assert_no_spills(r)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_runtime_loop_variant_compiles_without_spills(inspect, arch, layout):
    (r,) = inspect(
        "max_pool3d",
        SHAPE_3D,
        torch.float16,
        layout,
        arch,
        window="5x5x5 s2 same",
        with_indices=True,
    )
    assert r.kernel == f"max_pool3d_fwd_{LAYOUTS[layout][0]}_idx"
    assert_no_spills(r)


# --- vector widths --------------------------------------------------------------------------------

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
CALLS += [
    _call("max_pool2d", CHANNELS_LAST_SHAPE, dtype, "channels_last", arch, window=window)
    for arch in ARCHS
    for window in ("3x3 s2 p1", "2x2 s2")
    for dtype in DTYPES.values()
]
CALLS += [
    _call("max_pool2d", CHANNELS_FIRST_SHAPE, DTYPES[dtype], "channels_first", arch, window=window)
    for arch in ARCHS
    for window in ("3x3 s2 p1", "2x2 s2")
    for dtype in ("fp16", "bf16")
]
CALLS += [_call("max_pool2d", (8, 64, 56, 56), torch.float16, "channels_first", "sm_90a")]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("window", ["3x3 s2 p1", "2x2 s2"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_channels_last_forward_is_128_bit(inspect, arch, window, dtype):
    (r,) = inspect(
        "max_pool2d", CHANNELS_LAST_SHAPE, DTYPES[dtype], "channels_last", arch, window=window
    )
    assert set(r.loads) == {128}, f"loads {r.loads} ({r.blocked_layouts})"
    assert set(r.stores) == {128}, f"stores {r.stores} ({r.blocked_layouts})"


def _halo_taps(window: str) -> tuple[int, int]:
    """(window rows KH, taps per row read from a neighbouring segment: one scalar load each)."""
    spec = window_spec("max", 2, **WINDOWS[window])
    taps = window_pool.segment_taps(spec)
    return spec.kernel_size[0], sum(t["q"] != 0 for t in taps)


def _assert_segment_loads(r: aot.KernelReport, window: str):
    kh, halo = _halo_taps(window)
    narrow = {w: n for w, n in r.loads.items() if w < 64}
    where = f"loads {r.loads} ({r.blocked_layouts})"
    if halo == 0:
        assert not narrow, f"no halo in {window}, yet narrow loads: {where}"
    # a halo is one element per tile row: at most BLOCK_R scalar loads per halo tap and window row
    assert sum(narrow.values()) <= kh * halo * r.constexprs["BLOCK_R"], where
    # per thread, the wide (bulk) loads carry at least twice the bits of the halo's scalar loads
    assert r.load_bits(64) >= 2 * (r.load_bits() - r.load_bits(64)), f"narrow bulk: {where}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("window", ["3x3 s2 p1", "2x2 s2"])
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_channels_first_forward_loads_segments(inspect, arch, window, dtype):
    (r,) = inspect(
        "max_pool2d", CHANNELS_FIRST_SHAPE, DTYPES[dtype], "channels_first", arch, window=window
    )
    _assert_segment_loads(r, window)


def test_channels_first_w56_loads_segments(inspect):
    # Triton only proves divisibility by 16 on its own; a W=56 row (a multiple of 8) is wide
    # because the launcher passes strides divided by their alignment (window_pool.alignment)
    (r,) = inspect("max_pool2d", (8, 64, 56, 56), torch.float16, "channels_first", "sm_90a")
    _assert_segment_loads(r, "3x3 s2 p1")
    assert 128 in r.loads, r.loads


# --- the specialisation is the one a real launch gets ---------------------------------------------


def _plans():
    plans = aot.plan_op(
        "max_pool2d",
        CHANNELS_LAST_SHAPE,
        torch.float16,
        "channels_last",
        direction="bwd",
        kernel_size=3,
        stride=2,
        padding=1,
    )
    plans += aot.plan_op(
        "avg_pool2d",
        (2, 3, 17, 33),
        torch.float32,
        "channels_first",
        direction="bwd",
        kernel_size=3,
        stride=1,
        padding=1,
    )
    plans += aot.plan_op(
        "max_pool2d",
        CHANNELS_FIRST_SHAPE,
        torch.bfloat16,
        "channels_first",
        direction="double_bwd",
        kernel_size=2,
        stride=2,
    )
    return plans


def test_specialisation_matches_tritons_binder():
    """aot.specialise == what JITFunction.run builds (its binder, then _pack_args)."""
    jit = pytest.importorskip("triton.runtime.jit")
    if not hasattr(jit, "create_function_from_signature"):
        pytest.skip("this Triton has no create_function_from_signature")
    from triton.compiler import make_backend

    backend = make_backend(aot.target("sm_90a"))
    for plan in _plans():
        kernel = aot.compilable_kernel(*plan.kernel())
        meta = plan.meta(plan.config())
        binder = jit.create_function_from_signature(kernel.signature, kernel.params, backend)
        kwargs = {**meta, "num_warps": 4, "num_stages": 1}
        bound, specialization, options = binder(*plan.args, **kwargs)
        _, signature, constexprs, attrs = kernel._pack_args(
            backend, kwargs, bound, specialization, options
        )
        constexprs = {kernel.arg_names[k[0]]: v for k, v in constexprs.items()}
        assert aot.specialise(kernel, plan.args, meta, backend) == (signature, constexprs, attrs)


def test_rule_specialisation_matches_native():
    native = pytest.importorskip("triton._C.libtriton").native_specialize_impl
    from triton.compiler import make_backend

    backend = make_backend(aot.target("sm_80"))
    for plan in _plans():
        for arg in plan.args:
            assert aot.rule_specialisation(arg) == native(backend, arg, False, True, True), arg
    for arg in (0, 1, -1, 16, -32, 56, 2**31 - 16, 2**31, 2**40):
        assert aot.rule_specialisation(arg) == native(backend, arg, False, True, True), arg


def test_real_launch_arguments_specialise_like_the_plan(monkeypatch):
    """The interpreter launch of a real CPU tensor passes arguments that specialise exactly like
    the meta-tensor plan aot compiles (same tuple builder, same shapes and strides)."""
    from triton.compiler import make_backend

    launched = []
    real_launch = runtime.launch

    def capture(kernel, grid, args, **kw):
        launched.append((args, kw["meta"]))
        return real_launch(kernel, grid, args, **kw)

    monkeypatch.setattr(runtime, "launch", capture)
    x = torch.randn(2, 16, 9, 32).to(memory_format=torch.channels_last)
    tgpool.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    (plan,) = aot.plan_op(
        "max_pool2d",
        x.shape,
        x.dtype,
        "channels_last",
        kernel_size=3,
        stride=2,
        padding=1,
        with_indices=True,
    )
    ((args, meta),) = launched
    assert meta == plan.meta(plan.config())
    backend = make_backend(aot.target("sm_90a"))
    kernel = aot.compilable_kernel(*plan.kernel())
    aligned = [
        a if not isinstance(a, torch.Tensor) or a.data_ptr() % 16 == 0 else None for a in args
    ]
    assert None not in aligned, "CPU allocation not 16-byte aligned"
    assert aot.specialise(kernel, args, meta, backend) == aot.specialise(
        kernel, plan.args, meta, backend
    )


# --- reading the PTX ------------------------------------------------------------------------------


def test_global_access_widths_reads_qualifiers_and_predicates():
    ptx = """
        @%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
        @!%p2 ld.global.nc.v2.b32 { %r5, %r6 }, [ %rd2 + 0 ];
        ld.global.L1::evict_last.L2::cache_hint.b16 %rs1, [ %rd3 + 0 ], %rd9;
        ld.global.nc.L2::128B.v4.b32 { %r7, %r8, %r9, %r10 }, [ %rd4 ];
        ld.global.b64 %rd5, [ %rd6 ];   // ld.global.b8 in a comment is not an instruction
        @%p3 st.global.v2.b64 [ %rd7 + 0 ], { %rd8, %rd10 };
        st.global.b16 [ %rd7 ], %rs1;
        ld.shared.v4.b32 { %r1, %r2, %r3, %r4 }, [ %r11 ];
        cvta.to.global.u64 %rd11, %rd12;
    """
    loads, stores = aot.global_access_widths(ptx)
    assert loads == {128: 2, 64: 2, 16: 1}
    assert stores == {128: 1, 16: 1}
