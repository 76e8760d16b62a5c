"""tgpool's adaptive pooling against torch, on named edge cases, every dtype, forward and backward.

max: values and int64 flat indices exactly equal to torch's on the same input (a NaN wins and
reports the last NaN's index, ties report the first maximum), with and without indices.
avg: within the dtype's tolerance (tests/cases.py TOL) of torch computed in float64 on the same
(upcast) input. Input gradients: max exact where no input lies in two windows, else within the
tolerance of float64; avg within tolerance. Output, index and gradient strides equal torch's in
the same dtype (its memory-format choices: 1-D and 2-D follow a channels-last input, 3-D is
contiguous, average pooling to size 1 takes torch's mean path).

Every call runs inside ``kernels_ran(family)``: torch's adaptive pooling raises there, and every
launch must belong to the expected family: the adaptive kernels, or for an output size of 1 in
every dim the global-pool kernels (no adaptive launch). Interpreter shapes stay tiny.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from cases import DTYPES, TOL

import tgpool.functional.adaptive as A
from tgpool import launch, runtime
from tgpool.kernels import adaptive as adaptive_pool

# NaN and inf inputs make numpy, under the interpreter, warn about inf - inf in avg sums
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

# --- cases ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    ndim: int  # spatial dims
    shape: tuple[int, ...]  # (N, C, *spatial), or unbatched (C, *spatial)
    output_size: object  # as torch takes it: an int, or a tuple with None for "keep"
    layout: str = "contiguous"  # contiguous | channels_last | sliced | channel_slice | transposed
    values: str = "randn"  # randn | nan | ties | inf | neg_inf
    #: force this (outer, inner) launch block so rows / channels span several programs
    blocks: tuple[int, int] | None = None
    reductions: tuple[str, ...] = ("avg", "max")

    def sizes(self) -> tuple[int, ...]:
        """The output size with None resolved, as torch resolves it."""
        o = self.output_size
        o = (o,) * self.ndim if isinstance(o, int) else o
        return tuple(s if v is None else v for v, s in zip(o, self.shape[-self.ndim :]))

    @property
    def is_global(self) -> bool:
        return all(v == 1 for v in self.sizes())

    @property
    def windows_overlap(self) -> bool:
        """Whether some input position lies in two windows (max gradients then add up)."""
        spatial = self.shape[-self.ndim :]
        return any(adaptive_pool.max_extent(o, i) > 1 for i, o in zip(spatial, self.sizes()))


C = Case
MAX = ("max",)
# The tables keep one case per line.
# fmt: off
CASES = [
    # 1-D: windows that overlap (10 -> 4: [0,3) [2,5) [5,8) [7,10)) and that do not (8 -> 4)
    C("overlap_10_to_4", 1, (2, 3, 10), 4),
    C("no_overlap_8_to_4", 1, (2, 3, 8), 4),
    # O > I: one-element windows, each input repeated in several outputs
    C("upsample_3_to_8", 1, (2, 3, 3), 8),
    C("identity_7_to_7", 1, (2, 3, 7), 7),
    C("output_size_tuple", 1, (2, 3, 9), (4,)),
    # windows of 100 taps: more than any unrolled window, the loops run at run time
    C("huge_window_200_to_2", 1, (1, 2, 200), 2),
    C("global_1", 1, (2, 3, 9), 1),  # the global-pool kernels, no adaptive launch
    C("channels_last_nlc", 1, (2, 8, 10), 4, layout="channels_last"),
    C("sliced_length", 1, (2, 3, 10), 4, layout="sliced"),
    C("unbatched", 1, (3, 10), 4),
    C("empty_batch", 1, (0, 3, 10), 4),
    C("zero_output_size", 1, (2, 3, 10), 0),
    C("tiles_rows", 1, (1, 2, 9), 4, blocks=(1, 2)),
    # 2-D
    C("overlap_10x10_to_4x4", 2, (2, 3, 10, 10), 4),
    C("no_overlap_8x8_to_4x4", 2, (2, 3, 8, 8), 4),
    C("non_square_10x7_to_4x3", 2, (2, 3, 10, 7), (4, 3)),
    C("upsample_3x5_to_7x8", 2, (2, 3, 3, 5), (7, 8)),
    C("identity_5x6", 2, (2, 3, 5, 6), (5, 6)),
    C("none_keeps_height", 2, (2, 3, 6, 9), (None, 4)),
    C("none_both", 2, (1, 2, 5, 4), (None, None)),
    C("one_dim_of_1_not_global", 2, (2, 3, 6, 9), (1, 4)),
    C("huge_window_200x3_to_2x2", 2, (1, 2, 200, 3), 2),
    C("global_1x1", 2, (2, 3, 7, 5), 1),
    C("global_1x1_channels_last", 2, (2, 8, 7, 5), (1, 1), layout="channels_last"),
    C("global_1x1_sliced", 2, (2, 3, 6, 5), 1, layout="sliced"),
    C("channels_last", 2, (2, 8, 10, 7), (4, 3), layout="channels_last"),
    C("channels_last_upsample", 2, (2, 8, 3, 2), (5, 4), layout="channels_last"),
    C("channels_last_c1", 2, (2, 1, 9, 9), 4, layout="channels_last"),
    C("sliced_width", 2, (2, 3, 8, 9), (3, 4), layout="sliced"),
    C("sliced_channels", 2, (2, 6, 8, 8), 3, layout="channel_slice"),
    C("transposed_hw", 2, (2, 3, 9, 7), (4, 5), layout="transposed"),
    C("unbatched", 2, (3, 8, 9), (3, 4)),
    C("unbatched_none", 2, (3, 5, 6), (None, 2)),
    C("empty_batch", 2, (0, 3, 8, 8), 3),
    C("empty_batch_channels_last", 2, (0, 8, 8, 8), 3, layout="channels_last"),
    C("tiles_rows", 2, (1, 1, 3, 9), (2, 5), blocks=(1, 2)),
    C("tiles_channels", 2, (1, 3, 3, 4), (2, 3), layout="channels_last", blocks=(4, 2)),
    # values: NaN wins (the last NaN's index), +-inf, all -inf windows report their first
    # element, ties report the first maximum
    C("nan_several", 2, (2, 3, 9, 9), 4, values="nan"),
    C("nan_channels_last", 2, (2, 4, 9, 9), 4, layout="channels_last", values="nan"),
    C("nan_global", 2, (2, 3, 4, 4), 1, values="nan", reductions=MAX),
    C("inf_both_signs", 2, (2, 3, 8, 8), 3, values="inf"),
    C("neg_inf_windows", 2, (2, 3, 8, 8), 3, values="neg_inf", reductions=MAX),
    C("ties", 2, (2, 3, 8, 8), 3, values="ties", reductions=MAX),
    C("ties_channels_last", 2, (2, 4, 8, 8), 3, layout="channels_last", values="ties",
      reductions=MAX),
    # 3-D
    C("overlap_5x7x6_to_2x3x4", 3, (2, 3, 5, 7, 6), (2, 3, 4)),
    C("upsample_2x3x2_to_3x4x5", 3, (1, 2, 2, 3, 2), (3, 4, 5)),
    C("none_dims", 3, (1, 2, 4, 6, 5), (None, 3, None)),
    C("global_1x1x1", 3, (2, 3, 3, 4, 5), 1),
    C("global_1x1x1_channels_last", 3, (2, 8, 3, 4, 5), 1, layout="channels_last"),
    C("channels_last_3d", 3, (2, 8, 5, 7, 6), (2, 3, 4), layout="channels_last"),
    C("sliced_width", 3, (1, 3, 4, 5, 8), (2, 3, 3), layout="sliced"),
    C("unbatched", 3, (2, 5, 5, 5), 3),
    C("empty_batch", 3, (0, 3, 4, 4, 4), 2),
    C("nan_several", 3, (1, 2, 4, 5, 5), 2, values="nan"),
]
# fmt: on

#: cases that run in every dtype; the others run in one dtype each, in turn (interpreter time)
EVERY_DTYPE = {
    "2d-overlap_10x10_to_4x4",
    "2d-channels_last",
    "2d-global_1x1",
    "3d-channels_last_3d",
}


def _params():
    out = []
    for i, case in enumerate(CASES):
        cid = f"{case.ndim}d-{case.name}"
        dtypes = DTYPES if cid in EVERY_DTYPE else [DTYPES[i % len(DTYPES)]]
        out += [pytest.param(case, d, id=f"{cid}-{str(d)[6:]}") for d in dtypes]
    return out


# --- inputs ---------------------------------------------------------------------------------------


def _values(shape, kind: str) -> torch.Tensor:
    if kind == "ties":
        return torch.randint(-2, 3, shape).float()
    x = torch.randn(shape)
    flat = x.view(-1)
    i = torch.arange(flat.numel())
    if kind == "nan":
        flat[i % 4 == 0] = math.nan  # most windows hold several NaNs
    elif kind == "inf":
        flat[i % 7 == 0] = math.inf
        flat[i % 7 == 3] = -math.inf
    elif kind == "neg_inf":
        x[..., : shape[-2] // 2, :] = -math.inf  # whole windows of -inf: index = first element
    return x


def make_input(case: Case, dtype: torch.dtype) -> torch.Tensor:
    shape = case.shape
    if case.layout == "channel_slice":
        return _values((shape[0], 2 * shape[1], *shape[2:]), case.values).to(dtype)[:, ::2]
    x = _values(shape, case.values).to(dtype)
    if case.layout == "contiguous":
        return x
    if case.layout == "channels_last":
        if case.ndim == 1:  # (N, L, C) viewed as (N, C, L)
            return x.transpose(1, 2).contiguous().transpose(1, 2)
        fmt = torch.channels_last if case.ndim == 2 else torch.channels_last_3d
        return x.contiguous(memory_format=fmt)
    if case.layout == "sliced":
        big = torch.zeros(*shape[:-1], 2 * shape[-1], dtype=dtype)
        big[..., ::2] = x
        return big[..., ::2]
    if case.layout == "transposed":
        return x.transpose(-1, -2).contiguous().transpose(-1, -2)
    raise AssertionError(case.layout)


# --- proof of which kernels ran -------------------------------------------------------------------

_TORCH_ADAPTIVE = [f"adaptive_{r}_pool{n}d" for r in ("avg", "max") for n in (1, 2, 3)]


@contextlib.contextmanager
def kernels_ran(prefix: str | None, blocks=None):
    """Inside the block torch's adaptive pooling raises; at exit at least one kernel launched
    and every launch's name starts with ``prefix`` ("adaptive_" or "global_"); with ``prefix``
    None (empty outputs) nothing may launch. ``blocks`` forces every launch's (outer, inner)
    block and asserts that some launch spans several programs along both grid axes."""
    saved = {n: getattr(F, n) for n in _TORCH_ADAPTIVE}

    def refuse(*args, **kwargs):
        raise AssertionError("torch's own adaptive pooling ran inside kernels_ran()")

    provider = launch.get_provider()
    if blocks is not None:
        launch.set_provider(lambda family, variant, problem: launch.LaunchConfig(*blocks))
    for n in _TORCH_ADAPTIVE:
        setattr(F, n, refuse)
    try:
        with runtime.recording() as records:
            yield
    finally:
        for n, fn in saved.items():
            setattr(F, n, fn)
        launch.set_provider(provider)
    names = [r.kernel for r in records]
    if prefix is None:
        assert names == [], names
        return
    assert names and all(n.startswith(prefix) for n in names), names
    if blocks is not None:
        assert any(len(r.grid) == 2 and min(r.grid) > 1 for r in records), [r.grid for r in records]


def expected_prefix(case: Case):
    if any(s == 0 for s in case.shape) or any(v == 0 for v in case.sizes()):
        return None
    return "global_" if case.is_global else "adaptive_"


# --- checks ---------------------------------------------------------------------------------------


def assert_exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Bit-for-bit equal values (NaN where expected has NaN), same dtype and shape."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    nan = expected.isnan()
    assert torch.equal(actual.isnan(), nan), "NaN positions differ"
    assert torch.equal(actual.masked_fill(nan, 0), expected.masked_fill(nan, 0))


def assert_close(actual: torch.Tensor, expected64: torch.Tensor, dtype: torch.dtype) -> None:
    atol, rtol = TOL[dtype]
    assert actual.dtype == dtype
    torch.testing.assert_close(actual.double(), expected64, atol=atol, rtol=rtol, equal_nan=True)


def _grad(fn, x, g, *args):
    x = x.detach().requires_grad_()
    out = fn(x, *args)
    (grad,) = torch.autograd.grad(out[0] if isinstance(out, tuple) else out, x, g)
    return grad


def check_max(case: Case, dtype: torch.dtype) -> None:
    x = make_input(case, dtype)
    o = case.output_size
    torch_fn, fn = (
        getattr(F, f"adaptive_max_pool{case.ndim}d"),
        getattr(A, f"adaptive_max_pool{case.ndim}d"),
    )
    ref_out, ref_idx = torch_fn(x, o, True)
    g = torch.randn(ref_out.shape).to(dtype)
    xg = x.detach().requires_grad_()
    with kernels_ran(expected_prefix(case), case.blocks):
        out = fn(x, o)  # the kernel variant without indices
        out_i, idx = fn(xg, o, return_indices=True)
        (grad,) = torch.autograd.grad(out_i, xg, g)

    assert_exact(out, ref_out)
    assert_exact(out_i.detach(), ref_out)
    assert idx.dtype == torch.int64 and torch.equal(idx, ref_idx)
    assert out.stride() == out_i.stride() == ref_out.stride()
    assert idx.stride() == ref_idx.stride()
    ref_grad = _grad(torch_fn, x, g, o, True)
    if case.windows_overlap:  # several outputs may add into one input element
        assert_close(grad, _grad(torch_fn, x.double(), g.double(), o, True), dtype)
    else:
        assert_exact(grad, ref_grad)
    assert grad.stride() == ref_grad.stride()


def check_avg(case: Case, dtype: torch.dtype) -> None:
    x = make_input(case, dtype)
    o = case.output_size
    torch_fn, fn = (
        getattr(F, f"adaptive_avg_pool{case.ndim}d"),
        getattr(A, f"adaptive_avg_pool{case.ndim}d"),
    )
    g = torch.randn(torch_fn(x, o).shape).to(dtype)
    xg = x.detach().requires_grad_()
    with kernels_ran(expected_prefix(case), case.blocks):
        out = fn(xg, o)
        (grad,) = torch.autograd.grad(out, xg, g)

    assert_close(out.detach(), torch_fn(x.double(), o), dtype)
    assert out.stride() == torch_fn(x, o).stride()
    assert_close(grad, _grad(torch_fn, x.double(), g.double(), o), dtype)
    assert grad.stride() == _grad(torch_fn, x, g, o).stride()


def check_zero_output(case: Case, dtype: torch.dtype, reduction: str) -> None:
    """An output size of 0: torch's forward returns an empty output but its backward refuses it
    (RuntimeError); tgpool's backward returns the zero gradient (no output depends on any input).
    A documented difference."""
    x = make_input(case, dtype)
    name = f"adaptive_{reduction}_pool{case.ndim}d"
    torch_fn, fn = getattr(F, name), getattr(A, name)
    xg = x.detach().requires_grad_()
    with kernels_ran(None):
        out = fn(xg, case.output_size)
        (grad,) = torch.autograd.grad(out, xg, torch.empty_like(out))
    ref = torch_fn(xg, case.output_size)
    assert out.shape == ref.shape and out.stride() == ref.stride()
    assert torch.equal(grad, torch.zeros_like(x))
    with pytest.raises(RuntimeError, match="non-zero size"):
        torch.autograd.grad(ref, xg, torch.empty_like(ref))


@pytest.mark.parametrize("case, dtype", _params())
def test_adaptive_pool(case, dtype):
    for reduction in case.reductions:
        if 0 in case.sizes():
            check_zero_output(case, dtype, reduction)
        else:
            (check_max if reduction == "max" else check_avg)(case, dtype)


# --- the window rule ------------------------------------------------------------------------------


def test_window_rule_and_its_inverse():
    """The launcher's loop bounds: exact window extents, and the inverse rule (outputs covering
    input i are [floor(i * O / I), ceil((i + 1) * O / I))) over every pair up to 40."""
    for size in range(1, 41):
        for out in range(1, 41):
            spans = [adaptive_pool.window(o, size, out) for o in range(out)]
            assert max(e - s for s, e in spans) == adaptive_pool.max_extent(size, out)
            for i in range(size):
                covering = [o for o, (s, e) in enumerate(spans) if s <= i < e]
                assert covering == list(range(*adaptive_pool.window(i, out, size)))
                assert len(covering) <= adaptive_pool.max_extent(out, size)


def test_window_arithmetic_switches_to_int64_where_products_overflow():
    assert adaptive_pool.window_dtype((224, 224), (7, 7)) == "tl.int32"
    assert adaptive_pool.window_dtype((1, 70000), (1, 40000)) == "tl.int64"  # o * I > 2**31


# --- gradients in float64 -------------------------------------------------------------------------

GRADCHECK = [
    # (name, function, input shape, output size)
    ("avg1d_overlap", "adaptive_avg_pool1d", (1, 2, 7), 3),
    ("avg2d_upsample", "adaptive_avg_pool2d", (1, 2, 3, 4), (5, 3)),
    ("avg3d_none", "adaptive_avg_pool3d", (1, 1, 3, 4, 3), (2, None, 2)),
    ("avg2d_global", "adaptive_avg_pool2d", (2, 2, 3, 3), 1),
    ("max1d_overlap", "adaptive_max_pool1d", (1, 2, 7), 3),
    ("max2d_upsample", "adaptive_max_pool2d", (1, 2, 3, 4), (5, 3)),
    ("max3d", "adaptive_max_pool3d", (1, 1, 3, 4, 3), 2),
    ("max2d_global_unbatched", "adaptive_max_pool2d", (2, 3, 3), 1),
]


@pytest.mark.parametrize(
    "fn, shape, size", [g[1:] for g in GRADCHECK], ids=[g[0] for g in GRADCHECK]
)
def test_gradcheck_float64(fn, shape, size):
    """First and second derivatives against finite differences (max: the argmax is fixed for
    distinct values; its double backward reads grad_grad_in at the argmax)."""
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    f = getattr(A, fn)
    with runtime.recording() as records:
        # fast mode: finite differences along random directions (a few launches, not one per
        # element, which the interpreter could not afford)
        assert torch.autograd.gradcheck(lambda t: f(t, size), (x,), fast_mode=True)
        assert torch.autograd.gradgradcheck(lambda t: f(t, size), (x,), fast_mode=True)
    assert records, "no kernel launched"


def test_backward_is_deterministic():
    """Overlapping and upsampling windows, channels-last: the same bits on every run."""
    x = torch.randn(2, 8, 7, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(2, 8, 9, 3)
    for fn in (A.adaptive_avg_pool2d, A.adaptive_max_pool2d):
        grads = [torch.autograd.grad(fn(x, (9, 3)), x, g)[0] for _ in range(3)]
        assert all(torch.equal(grads[0], other) for other in grads[1:])
