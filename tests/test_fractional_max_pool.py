"""fractional_max_pool2d/3d against torch: identical values and indices for the same samples in
every dtype (ATen's CPU interval rule, rounding included), the same samples drawn under the same
seed, the gather backward against an fp64 reference, the custom ops as torch sees them (opcheck,
gradcheck, torch.compile), and every bad input refused before any launch.

Results are produced inside ``fractional_kernels_ran()``: torch's fractional pooling raises there
and a tgpool fractional kernel must launch. Interpreter shapes stay tiny.
"""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import kernels_only, launches

import tgpool.functional.unpool_fractional as T
from tgpool.kernels import fractional as fractional_pool
from tgpool.nn import unpool_fractional as nn_unpool_fractional
from tgpool.ops import fractional as fractional_ops

#: (dtype, atol, rtol) for gradients (sums where windows overlap) against an fp64 reference
TOL = {
    torch.float16: (1e-5, 1e-3),
    torch.bfloat16: (1e-5, 1.6e-2),  # the interpreter truncates fp32 -> bf16 (no rounding)
    torch.float32: (1e-5, 1.3e-6),
    torch.float64: (1e-12, 1e-12),
}
DTYPES = list(TOL)
DTYPE_IDS = [str(d).removeprefix("torch.") for d in DTYPES]
_TORCH_FRACTIONAL = [
    "fractional_max_pool2d",
    "fractional_max_pool3d",
    "fractional_max_pool2d_with_indices",
    "fractional_max_pool3d_with_indices",
]


def fractional_kernels_ran():
    """Inside the block torch's fractional pooling raises, and a fractional kernel must launch."""
    return kernels_only(_TORCH_FRACTIONAL, "fractional_max")


# --- cases ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    ndim: int
    shape: tuple  # (N, C, *spatial) or unbatched (C, *spatial)
    kernel_size: int | tuple
    output_size: object = None
    output_ratio: object = None
    layout: str = "contiguous"  # "contiguous" | "channels_last" | "sliced" (every other column)
    values: str = "randn"  # "randn" | "ties" (few distinct values) | "nan" (some NaNs)
    samples_batch: int | None = None  # samples for more planes than the input has

    def __str__(self):
        return self.name


# fmt: off
CASES = [
    Case("2d_k2_out4x5", 2, (2, 3, 9, 10), 2, (4, 5)),
    Case("2d_k3x2_nonsquare", 2, (2, 2, 11, 8), (3, 2), (5, 4)),
    Case("3d_k2", 3, (2, 2, 6, 7, 8), 2, (3, 4, 5)),
    Case("3d_k1x2x3", 3, (1, 3, 5, 6, 9), (1, 2, 3), (4, 3, 4)),
    # output_ratio: int(input size * ratio) per dim
    Case("2d_output_ratio", 2, (2, 3, 9, 11), 2, output_ratio=(0.5, 0.7)),
    Case("3d_output_ratio_scalar", 3, (1, 2, 6, 8, 7), 2, output_ratio=0.5),
    # alpha edge: the largest output torch allows (2D: in - k + 1, so alpha = 1; 3D: in - k)
    Case("2d_alpha_edge_out_in_minus_k_plus_1", 2, (2, 3, 8, 9), 3, (6, 7)),
    Case("3d_alpha_edge_out_in_minus_k", 3, (1, 2, 5, 6, 7), 2, (3, 4, 5)),
    # kernel 1: pure fractional subsampling
    Case("2d_kernel1", 2, (2, 3, 7, 9), 1, (4, 5)),
    Case("3d_kernel1", 3, (1, 2, 5, 5, 6), 1, (3, 2, 4)),
    # one output per dim: the window is the last one, at in - k
    Case("2d_output1", 2, (2, 2, 5, 6), 2, (1, 1)),
    # long rows: 16-bit rounding of (o + u) * alpha moves windows (bfloat16 from o >= 256)
    Case("2d_long_row_rounding", 2, (1, 2, 3, 300), (1, 2), (2, 170)),
    # layouts read in place (torch returns contiguous outputs)
    Case("2d_channels_last", 2, (2, 5, 8, 8), 2, (4, 4), layout="channels_last"),
    Case("3d_channels_last_3d", 3, (1, 4, 5, 6, 6), 2, (2, 3, 3), layout="channels_last"),
    Case("2d_sliced_columns", 2, (2, 3, 7, 7), 2, (4, 3), layout="sliced"),
    # unbatched inputs; samples for more batches than given (torch reads the first ones)
    Case("2d_unbatched", 2, (3, 8, 7), 2, (4, 3)),
    Case("3d_unbatched", 3, (2, 5, 6, 6), 2, (3, 3, 2)),
    Case("2d_extra_sample_batches", 2, (2, 3, 8, 8), 2, (3, 3), samples_batch=4),
    # ATen's max rule: ties keep the first index, a NaN wins (the last NaN's index)
    Case("2d_ties", 2, (2, 3, 8, 8), 3, (4, 4), values="ties"),
    Case("2d_nan", 2, (2, 3, 8, 8), 3, (4, 4), values="nan"),
    # empty batch: nothing to launch, shapes as torch's
    Case("2d_empty_batch", 2, (0, 3, 8, 8), 2, (3, 3)),
]
# fmt: on


def _input(case: Case, dtype) -> torch.Tensor:
    shape = case.shape
    if case.layout == "sliced":
        shape = (*shape[:-1], 2 * shape[-1])
    if case.values == "ties":
        x = torch.randint(0, 3, shape).to(dtype)
    else:
        x = torch.randn(shape, dtype=torch.float64).to(dtype)
    if case.values == "nan":
        x.view(-1)[::7] = float("nan")
    if case.layout == "channels_last":
        fmt = torch.channels_last if case.ndim == 2 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
    if case.layout == "sliced":
        x = x[..., ::2]
    return x


def _samples(case: Case, x: torch.Tensor) -> torch.Tensor:
    batched = x.dim() == case.ndim + 2
    n = case.samples_batch or (x.shape[0] if batched else 1)
    c = x.shape[1] if batched else x.shape[0]
    return torch.rand(n, c, case.ndim, dtype=x.dtype)


def _kwargs(case: Case) -> dict:
    return dict(
        kernel_size=case.kernel_size, output_size=case.output_size, output_ratio=case.output_ratio
    )


def _scatter_reference(x, indices, grad, ndim):
    """fp64 input gradient: each output's gradient added at its argmax (torch's definition)."""
    lead = x.shape[: x.dim() - ndim]
    ref = torch.zeros(*lead, x.shape[-ndim:].numel(), dtype=torch.float64)
    ref.scatter_add_(-1, indices.flatten(-ndim), grad.double().flatten(-ndim))
    return ref.reshape(x.shape)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_and_backward_match_torch(case, dtype):
    x = _input(case, dtype)
    samples = _samples(case, x)
    fn = getattr(F, f"fractional_max_pool{case.ndim}d")
    want, want_idx = fn(x, **_kwargs(case), return_indices=True, _random_samples=samples)
    x = x.detach().requires_grad_()
    grad = torch.randn(want.shape, dtype=torch.float64).to(dtype)
    with fractional_kernels_ran() if x.numel() else contextlib.nullcontext():
        got, idx = getattr(T, f"fractional_max_pool{case.ndim}d")(
            x, **_kwargs(case), return_indices=True, _random_samples=samples
        )
        got_grad = torch.autograd.grad(got, x, grad)[0]
    assert torch.equal(idx, want_idx), "window starts or argmax differ from torch's"
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    assert got.stride() == want.stride() and idx.stride() == want_idx.stride()
    atol, rtol = TOL[dtype]
    ref = _scatter_reference(x, want_idx, grad, case.ndim)
    torch.testing.assert_close(got_grad.double(), ref, atol=atol, rtol=rtol, equal_nan=True)
    assert got_grad.is_contiguous()  # torch's backward returns it contiguous


@pytest.mark.parametrize("ndim", [2, 3])
def test_samples_drawn_like_torch_under_the_same_seed(ndim):
    x = torch.randn((2, 3, 7, 8, 9)[: ndim + 2 - 3] + (7, 8, 9)[3 - ndim :])
    kw = dict(kernel_size=2, output_ratio=(0.5,) * ndim, return_indices=True)
    torch.manual_seed(1234)
    want = getattr(F, f"fractional_max_pool{ndim}d")(x, **kw)
    after_torch = torch.rand(1)
    torch.manual_seed(1234)
    with fractional_kernels_ran():
        got = getattr(T, f"fractional_max_pool{ndim}d")(x, **kw)
    assert torch.equal(torch.rand(1), after_torch), "a different amount of randomness was drawn"
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("ndim", [2, 3])
def test_modules_subclass_torch_and_draw_in_forward(ndim):
    cls = getattr(nn_unpool_fractional, f"FractionalMaxPool{ndim}d")
    ref_cls = getattr(torch.nn, f"FractionalMaxPool{ndim}d")
    mod, ref = cls(2, output_ratio=0.5), ref_cls(2, output_ratio=0.5)
    assert isinstance(mod, ref_cls) and repr(mod) == repr(ref)
    x = torch.randn((1, 4) + (9,) * ndim)  # 9 -> 4: alpha = 7 / 3, windows depend on u
    torch.manual_seed(7)
    want = ref(x) if ndim == 3 else ref_cls(2, output_ratio=(0.5, 0.5))(x)
    torch.manual_seed(7)
    with fractional_kernels_ran():
        got = mod(x) if ndim == 3 else cls(2, output_ratio=(0.5, 0.5))(x)
        again = mod(x) if ndim == 3 else cls(2, output_ratio=(0.5, 0.5))(x)
    assert torch.equal(got, want)
    assert not torch.equal(got, again), "each forward must draw new samples"


# --- the interval rule ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("IN, OUT, K", [(9, 4, 2), (300, 170, 2), (40, 39, 2), (33, 5, 7)])
def test_reference_starts_equal_torchs_windows(dtype, IN, OUT, K):
    """reference_starts (which bounds the backward) against the windows torch picks: on an
    increasing row the argmax is each window's last element."""
    u = torch.rand(64, dtype=dtype)
    x = torch.arange(IN, dtype=torch.float64).to(dtype).expand(1, 64, 1, IN).contiguous()
    if dtype in (torch.float16, torch.bfloat16):  # keep the row strictly increasing
        x = torch.arange(IN).float().div(IN).to(dtype).expand(1, 64, 1, IN).contiguous()
        if len(set(x[0, 0, 0].tolist())) != IN:
            pytest.skip("the row is not strictly increasing in this dtype")
    samples = torch.stack([u, torch.zeros_like(u)], -1)[None]
    _, idx = F.fractional_max_pool2d(
        x, (1, K), (1, OUT), return_indices=True, _random_samples=samples
    )
    starts = fractional_pool.reference_starts(u, IN, OUT, K)
    assert torch.equal(starts, idx[0, :, 0] - (K - 1))
    cover = fractional_pool.max_cover(IN, OUT, K, str(dtype).removeprefix("torch."))
    for s in starts:  # the bound holds for these samples
        covering = (
            (s[None, :] <= torch.arange(IN)[:, None]) & (s[None, :] + K > torch.arange(IN)[:, None])
        ).sum(1)
        assert int(covering.max()) <= cover


# --- the custom ops -------------------------------------------------------------------------------


def test_opcheck():
    for shape, k, out in (((1, 2, 5, 6), [2, 3], [3, 4]), ((1, 1, 4, 5, 5), [2, 2, 2], [2, 3, 3])):
        x = torch.randn(shape, requires_grad=True)
        s = torch.rand(shape[0], shape[1], len(k))
        torch.library.opcheck(fractional_ops.fractional_max_pool, (x, s, k, out))
        _, idx = fractional_ops.fractional_max_pool(x.detach(), s, k, out)
        g = torch.randn(idx.shape, requires_grad=True)
        torch.library.opcheck(
            fractional_ops.fractional_max_pool_backward, (g, idx, s, list(shape), k)
        )


@pytest.mark.parametrize("ndim", [2, 3])
def test_gradcheck_and_double_backward_float64(ndim):
    shape = (1, 2, 5, 6) if ndim == 2 else (1, 1, 4, 5, 5)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    samples = torch.rand(shape[0], shape[1], ndim, dtype=torch.float64)
    out = (3, 4) if ndim == 2 else (2, 3, 3)  # overlapping windows (kernel 2)

    def fn(v):
        return getattr(T, f"fractional_max_pool{ndim}d")(v, 2, out, _random_samples=samples)

    with fractional_kernels_ran():
        assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
        assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


def test_backward_is_deterministic():
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    s = torch.rand(2, 3, 2)
    grads = []
    for _ in range(2):
        y = T.fractional_max_pool2d(x, 3, (9, 9), _random_samples=s)
        grads.append(torch.autograd.grad(y, x, torch.ones_like(y))[0])
    assert torch.equal(grads[0], grads[1])


class FractionalNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn_unpool_fractional.FractionalMaxPool2d(2, output_size=(4, 5))

    def forward(self, x, samples):
        self.pool._random_samples = samples
        return self.pool(x.tanh()) * 3


def test_compile_fullgraph_forward_backward():
    net = FractionalNet()
    x = torch.randn(2, 3, 8, 9, requires_grad=True)
    s = torch.rand(2, 3, 2)
    want = net(x, s)
    want_grad = torch.autograd.grad(want.square().sum(), x)[0]
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    before = launches("fractional_max")
    got = compiled(x, s)
    got_grad = torch.autograd.grad(got.square().sum(), x)[0]
    assert launches("fractional_max") >= before + 2
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)


# --- bad input ------------------------------------------------------------------------------------

_GEN = torch.Generator().manual_seed(0)
X = torch.randn(2, 3, 7, 7, generator=_GEN)
X5 = torch.randn(2, 3, 5, 7, 7, generator=_GEN)
S = torch.rand(2, 3, 2, generator=_GEN)
S3 = torch.rand(2, 3, 3, generator=_GEN)
FMP2, FMP3 = T.fractional_max_pool2d, T.fractional_max_pool3d

BAD_CALLS = [
    # (name, call, exception type, words the message must contain)
    (
        "no_output_size_or_ratio",
        lambda: FMP2(X, 2),
        ValueError,
        "either an output_size or an output_ratio",
    ),
    ("ratio_float_2d", lambda: FMP2(X, 2, output_ratio=0.5), TypeError, "len()"),
    (
        "ratio_three_values_2d",
        lambda: FMP2(X, 2, output_ratio=(0.5, 0.5, 0.5)),
        ValueError,
        "output_ratio",
    ),
    ("ratio_two_values_3d", lambda: FMP3(X5, 2, output_ratio=(0.5, 0.5)), IndexError, "index"),
    (
        "kernel_three_values_2d",
        lambda: FMP2(X, (2, 2, 2), 3),
        RuntimeError,
        "kernel_size must either",
    ),
    ("kernel_two_values_3d", lambda: FMP3(X5, (2, 2), 2), RuntimeError, "tuple of three Ints"),
    (
        "output_three_values_2d",
        lambda: FMP2(X, 2, (3, 3, 3)),
        RuntimeError,
        "output_size must either",
    ),
    ("output_two_values_3d", lambda: FMP3(X5, 2, (2, 2)), RuntimeError, "output_size must either"),
    ("kernel_float", lambda: FMP2(X, 2.0, 3), TypeError, "kernel_size"),
    ("output_size_float", lambda: FMP2(X, 2, 3.0), TypeError, "output_size"),
    (
        "input_rank_2",
        lambda: FMP2(torch.randn(3, 7), 2, 2, _random_samples=S[:1]),
        RuntimeError,
        "Expected 3D or 4D",
    ),
    (
        "input_rank_2_drawing_samples",
        lambda: FMP2(torch.randn(3, 7), 2, 2),
        IndexError,
        "out of range",
    ),
    ("input_rank_5_for_2d", lambda: FMP2(X5, 2, 2), RuntimeError, "Expected 3D or 4D"),
    ("input_rank_6_for_3d", lambda: FMP3(X5[None], 2, 2), RuntimeError, "Expected 4D or 5D"),
    ("zero_channels", lambda: FMP2(X[:, :0], 2, 2), RuntimeError, "non-zero size"),
    (
        "pool_height_too_large",
        lambda: FMP2(X, 2, (7, 3)),
        RuntimeError,
        "pool height 2 too large relative to input height 7",
    ),
    ("pool_width_too_large", lambda: FMP2(X, 2, (6, 7)), RuntimeError, "pool width 2"),
    (
        "3d_time_output_in_minus_k_plus_1",
        lambda: FMP3(X5, 2, (4, 3, 3)),
        RuntimeError,
        "pool time 2 too large relative to input time 5",
    ),
    ("output_size_negative", lambda: FMP2(X, 2, -1), RuntimeError, "negative dimension -1"),
    ("integer_input", lambda: FMP2(X.long(), 2, 3), NotImplementedError, "Long"),
    (
        "samples_other_dtype",
        lambda: FMP2(X, 2, 3, _random_samples=S.double()),
        RuntimeError,
        "same dtype as input",
    ),
    (
        "samples_rank_2",
        lambda: FMP2(X, 2, 3, _random_samples=S[0]),
        RuntimeError,
        "3 dimensions, got 2",
    ),
    (
        "samples_too_few_batches",
        lambda: FMP2(X, 2, 3, _random_samples=S[:1]),
        RuntimeError,
        "size(0)",
    ),
    (
        "samples_other_channels",
        lambda: FMP2(X, 2, 3, _random_samples=S[:, :2]),
        RuntimeError,
        "size(1)",
    ),
    (
        "samples_3_values_for_2d",
        lambda: FMP2(X, 2, 3, _random_samples=S3),
        RuntimeError,
        "equals to 2; got 3.",
    ),
    (
        "samples_2_values_for_3d",
        lambda: FMP3(X5, 2, 2, _random_samples=S),
        RuntimeError,
        "equals to 3; got 2.",
    ),
    ("samples_list", lambda: FMP2(X, 2, 3, _random_samples=[[0.5]]), TypeError, "random_samples"),
]


@pytest.mark.parametrize(
    "call, error, words", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
def test_bad_input_raises_like_torch_before_any_launch(call, error, words):
    before = launches()
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)
    assert launches() == before, "a kernel launched before the error"


@pytest.mark.parametrize("index", range(len(BAD_CALLS)), ids=[c[0] for c in BAD_CALLS])
def test_torch_raises_the_same_type(index):
    """The table above is torch's behaviour: the same calls on torch raise the same types."""
    _, call, error, words = BAD_CALLS[index]
    global FMP2, FMP3
    saved = FMP2, FMP3
    FMP2, FMP3 = F.fractional_max_pool2d, F.fractional_max_pool3d
    try:
        with pytest.raises(error) as info:
            call()
        assert words in str(info.value)
    finally:
        FMP2, FMP3 = saved


def test_kernel_size_zero_refused_where_torch_reads_outside_the_input():
    """A documented difference: torch accepts kernel_size 0 (its windows are empty, their
    index a position outside the window); tgpool raises."""
    F.fractional_max_pool2d(X, 0, 3)  # torch: no error
    with pytest.raises(RuntimeError, match="kernel_size must be greater than zero"):
        FMP2(X, 0, 3)
