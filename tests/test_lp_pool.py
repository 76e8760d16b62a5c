"""lp_pool1d/2d/3d against torch's composite (values, layouts, gradients), its op, modules, errors.

The reference is torch.nn.functional.lp_pool*d itself on the float64 upcast of the same input,
with torch autograd of the composite for gradients. Every tgpool result is computed inside
``only_triton()`` (torch's pooling raises there, and a kernel must launch), and the lp kernels'
names are checked in runtime.launch_counts.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from cases import DTYPE_PARAMS, TOL

import tgpool.functional as T
import tgpool.nn
from tgpool import runtime
from tgpool.ops import lp as lp_ops

INF = math.inf

#: float32 powers are 2 ** (p * log2|x|) in fp32: a few more ulps than torch's pow (and fp16/bf16
#: are rounded once from fp32, so their TOL holds)
LP_RTOL_SCALE = {torch.float32: 8.0}


@dataclasses.dataclass(frozen=True)
class LpCase:
    name: str
    shape: tuple[int, ...]  # (N, C, *spatial) or unbatched (C, *spatial)
    norm_type: float
    kernel_size: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None = None
    ceil_mode: bool = False
    channels_last: bool = False
    values: str = "randn"  # "randn" | "positive" | "zero_windows" | "distinct"

    def __str__(self):
        return self.name


L = LpCase
# fmt: off
CASES = [
    # p = 1: a plain sum (torch: avg * k), negative sums stay negative
    L("p1_sum_negative_sums_1d", (2, 3, 9), 1, 3, 2),
    L("p1_sum_2d", (2, 3, 6, 7), 1, 2),
    # p = 2 (the usual norm), stride != kernel: overlapping windows and stride > kernel (gaps)
    L("p2_overlap_k3_s2_2d", (2, 3, 7, 9), 2, 3, 2),
    L("p2_gaps_k2_s3_1d", (2, 3, 11), 2, 2, 3),
    L("p2_non_square_2d", (2, 2, 7, 8), 2, (2, 3), (1, 2)),
    # odd p with negative inputs: negative sums give NaN, as torch's pow(neg, 1/3)
    L("p3_negative_inputs_nan_1d", (2, 3, 10), 3, 2),
    L("p3_negative_inputs_nan_2d", (2, 2, 6, 6), 3, 3, 2),
    # non-integer p: negative inputs are NaN (x ** 2.5), positive ones a real norm
    L("p2.5_positive_2d", (2, 3, 6, 7), 2.5, 2, values="positive"),
    L("p2.5_negative_inputs_nan_1d", (2, 3, 8), 2.5, 2),
    # ceil_mode's partial windows: torch divides by the elements inside, multiplies by k
    L("ceil_partial_p2_1d", (2, 3, 9), 2, 2, 2, ceil_mode=True),
    L("ceil_partial_p1_2d", (2, 3, 7, 8), 1, 3, 2, ceil_mode=True),
    L("ceil_partial_p2.5_3d", (1, 2, 5, 4, 5), 2.5, 2, 2, ceil_mode=True, values="positive"),
    # a window of zeros: value 0, gradient 0 (torch's relu; never 0 ** negative = inf)
    L("zero_windows_p2_gradient_zero", (2, 2, 8), 2, 2, values="zero_windows"),
    L("zero_windows_p3_gradient_zero_2d", (1, 2, 4, 6), 3, 2, values="zero_windows"),
    # p = +-inf: max / min of |x|, gradient to the first extremum times sign(x)
    L("inf_max_abs_2d", (2, 3, 6, 7), INF, 3, 2, values="distinct"),
    L("neg_inf_min_abs_1d", (2, 3, 9), -INF, 3, 2, values="distinct"),
    L("inf_ceil_3d", (1, 2, 5, 5, 4), INF, 2, 2, ceil_mode=True, values="distinct"),
    # layouts: channels-last read in place; output / gradient in torch's memory format
    L("channels_last_p2_2d", (2, 8, 6, 7), 2, 3, 2, channels_last=True),
    L("channels_last_p2_1d", (2, 8, 9), 2, 3, 2, channels_last=True),
    L("channels_last_p2_3d_output_contiguous", (1, 8, 4, 5, 4), 2, 2, channels_last=True),
    L("channels_last_inf_3d_output_channels_last", (1, 8, 4, 4, 5), INF, 2, channels_last=True,
      values="distinct"),
    L("p2_3d", (1, 2, 5, 4, 6), 2, (2, 2, 3), (1, 2, 2)),
    # unbatched inputs
    L("unbatched_p2_2d", (3, 6, 6), 2, 2),
]
# fmt: on

NDIM = {
    c.name: (len(c.shape) - 1 if c.name.startswith("unbatched") else len(c.shape) - 2)
    for c in CASES
}


def make_input(case: LpCase, dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(len(case.name) * 7919 + sum(case.shape))
    n = math.prod(case.shape)
    if case.values == "distinct":  # no ties in |x| and exact in every dtype: the argmax is unique
        x = (torch.randperm(n, generator=g).to(torch.float64) + 1) / 4
        x = x * torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    else:
        x = torch.randn(n, generator=g, dtype=torch.float64)
    x = x.reshape(case.shape)
    if case.values == "positive":
        x = x.abs() + 0.1
    if case.values == "zero_windows":
        x[..., :2] = 0  # the first window of every row sums to 0
    x = x.to(dtype)
    if case.channels_last:
        ndim = NDIM[case.name]
        if ndim == 1:
            x = x.transpose(1, 2).contiguous().transpose(1, 2)
        else:
            fmt = torch.channels_last if ndim == 2 else torch.channels_last_3d
            x = x.contiguous(memory_format=fmt)
    return x


def _call(fn, case, x):
    return fn(x, case.norm_type, case.kernel_size, case.stride, case.ceil_mode)


def _lp_launches() -> int:
    return sum(v for k, v in runtime.launch_counts.items() if k.startswith("lp_pool"))


#: float16 / bfloat16 run on these (every reduction kind, layout and edge); the rest in fp32 and
#: fp64, to keep the interpreter's time down
SIXTEEN_BIT = {
    "p1_sum_2d",
    "p2_overlap_k3_s2_2d",
    "p3_negative_inputs_nan_1d",
    "p2.5_positive_2d",
    "ceil_partial_p2_1d",
    "zero_windows_p2_gradient_zero",
    "inf_max_abs_2d",
    "neg_inf_min_abs_1d",
    "channels_last_p2_2d",
    "channels_last_p2_3d_output_contiguous",
}
PARAMS = [
    pytest.param(case, d.values[0], id=f"{case.name}-{d.id}")
    for case in CASES
    for d in DTYPE_PARAMS
    if case.name in SIXTEEN_BIT or d.values[0].itemsize >= 4
]


@pytest.mark.parametrize("case, dtype", PARAMS)
def test_forward_backward_match_torch(case, dtype, only_triton):
    ndim = NDIM[case.name]
    x = make_input(case, dtype).requires_grad_()
    before = _lp_launches()
    with only_triton():
        y = _call(getattr(T, f"lp_pool{ndim}d"), case, x)
    assert _lp_launches() > before, "the lp kernel did not run"
    ref_x = x.detach().to(torch.float64).requires_grad_()
    y_ref = _call(getattr(F, f"lp_pool{ndim}d"), case, ref_x)
    assert y.shape == y_ref.shape and y.dtype == dtype
    assert y.stride() == y_ref.stride(), "output memory format differs from torch's"
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    with only_triton():
        y.backward(g)
    y_ref.backward(g.to(torch.float64))
    atol, rtol = TOL[dtype]
    rtol *= LP_RTOL_SCALE.get(dtype, 1.0)
    exact = math.isinf(case.norm_type)  # a max of |x|: exact values (gradients add up in windows)
    torch.testing.assert_close(
        y.double(),
        y_ref.detach(),
        atol=0 if exact else atol,
        rtol=0 if exact else rtol,
        equal_nan=True,
    )
    assert x.grad.stride() == ref_x.grad.stride(), "gradient memory format differs from torch's"
    torch.testing.assert_close(
        x.grad.double(), ref_x.grad, atol=10 * atol, rtol=2 * rtol, equal_nan=True
    )
    if case.values == "zero_windows":
        assert (x.grad[..., :2] == 0).all() and y.detach()[..., 0].eq(0).all()
    if "nan" in case.name:  # the edge the case names must be there: NaN outputs from negatives
        assert y.isnan().any() and not y.isnan().all()


@pytest.mark.parametrize(
    "norm_type, values",
    [(2.0, "positive"), (3.0, "positive"), (2.5, "positive"), (INF, "distinct")],
)
def test_gradcheck_float64(norm_type, values, only_triton):
    """torch.autograd.gradcheck of the kernels themselves, ceil_mode's partial windows included."""
    case = L("gradcheck", (1, 1, 4, 5), norm_type, 3, 2, ceil_mode=True, values=values)
    x = make_input(case, torch.float64).requires_grad_()
    with only_triton():
        assert torch.autograd.gradcheck(
            lambda t: T.lp_pool2d(t, norm_type, 3, 2, ceil_mode=True), (x,), fast_mode=True
        )


def test_backward_is_deterministic(only_triton):
    """Overlapping windows: the gather gives the same bits on every run (no atomics)."""
    case = L("det", (2, 3, 9, 9), 2.5, 3, 1, values="positive")
    x = make_input(case, torch.float32).requires_grad_()
    g = torch.randn(2, 3, 7, 7)
    grads = []
    with only_triton():
        for _ in range(2):
            x.grad = None
            T.lp_pool2d(x, 2.5, 3, 1).backward(g)
            grads.append(x.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_no_grad_forward_keeps_no_state(only_triton):
    """Without autograd the forward writes no sums; backward later recomputes them."""
    x = torch.randn(2, 3, 8)
    with only_triton(), torch.no_grad():
        before = runtime.launch_counts["lp_pool1d_fwd_rows_sums"]
        T.lp_pool1d(x, 2, 2)
        assert runtime.launch_counts["lp_pool1d_fwd_rows_sums"] == before
        assert runtime.launch_counts["lp_pool1d_fwd_rows"] > 0
    out, state = lp_ops.lp_pool(x, 2.0, [2], [2], False, False)  # the op without state
    assert state.numel() == 0


def test_opcheck(only_triton):
    # positive values: opcheck compares outputs without equal_nan (odd p gives NaN for negatives)
    x = torch.rand(2, 3, 6, 7, dtype=torch.float64) + 0.1
    xc = x.contiguous(memory_format=torch.channels_last)
    with only_triton():
        for t, p in ((x, 2.0), (xc, 3.0), (x, INF), (xc, -INF)):
            for with_state in (False, True):
                args = (t.requires_grad_(False), p, [3, 2], [2, 2], True, with_state)
                torch.library.opcheck(lp_ops.lp_pool, args)
            out, state = lp_ops.lp_pool(t, p, [3, 2], [2, 2], True, True)
            g = torch.randn_like(out)
            torch.library.opcheck(lp_ops.lp_pool_backward, (g, state, t, p, [3, 2], [2, 2], True))


def test_torch_compile_fullgraph(only_triton):
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64).add(0.1).requires_grad_()
    fn = torch.compile(lambda t: T.lp_pool2d(t, 2.5, 3, 2, ceil_mode=True), fullgraph=True)
    with only_triton():
        y = fn(x)
        y.sum().backward()
    ref_x = x.detach().clone().requires_grad_()
    y_ref = F.lp_pool2d(ref_x, 2.5, 3, 2, ceil_mode=True)
    y_ref.sum().backward()
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(x.grad, ref_x.grad, atol=1e-12, rtol=1e-12)


def test_double_backward_raises(only_triton):
    x = torch.rand(1, 2, 6, dtype=torch.float64).requires_grad_()
    with only_triton():
        (g,) = torch.autograd.grad(T.lp_pool1d(x, 2, 2).sum(), x, create_graph=True)
        with pytest.raises(NotImplementedError, match="double backward of lp pooling"):
            g.sum().backward()


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_modules_subclass_torch(ndim, only_triton):
    ours = getattr(tgpool.nn, f"LPPool{ndim}d")(2, 2, ceil_mode=True)
    theirs = getattr(torch.nn, f"LPPool{ndim}d")(2, 2, ceil_mode=True)
    assert isinstance(ours, type(theirs)) and repr(ours) == repr(theirs)
    x = torch.randn(1, 2, *(5,) * ndim, dtype=torch.float64)
    with only_triton():
        y = ours(x)
    torch.testing.assert_close(y, theirs(x), atol=1e-12, rtol=1e-12)


# (name, call, exception type torch raises for the same mistake or None where torch does not)
BAD_CALLS = [
    (
        "norm_type_zero",
        lambda x: T.lp_pool2d(x, 0, 2),
        ZeroDivisionError,
        lambda x: F.lp_pool2d(x, 0, 2),
    ),
    (
        "norm_type_string",
        lambda x: T.lp_pool2d(x, "2", 2),
        TypeError,
        lambda x: F.lp_pool2d(x, "2", 2),
    ),
    ("norm_type_nan_refused", lambda x: T.lp_pool2d(x, math.nan, 2), ValueError, None),
    ("kernel_zero", lambda x: T.lp_pool2d(x, 2, 0), RuntimeError, lambda x: F.lp_pool2d(x, 2, 0)),
    ("kernel_float", lambda x: T.lp_pool2d(x, 2, 2.0), TypeError, lambda x: F.lp_pool2d(x, 2, 2.0)),
    (
        "stride_negative",
        lambda x: T.lp_pool2d(x, 2, 2, -1),
        RuntimeError,
        lambda x: F.lp_pool2d(x, 2, 2, -1),
    ),
    (
        "output_empty_kernel_too_big",
        lambda x: T.lp_pool2d(x, 2, 9),
        RuntimeError,
        lambda x: F.lp_pool2d(x, 2, 9),
    ),
    ("wrong_rank", lambda x: T.lp_pool1d(x, 2, 2), RuntimeError, lambda x: F.lp_pool1d(x, 2, 2)),
    ("integer_dtype", lambda x: T.lp_pool2d(x.long(), 2, 2), NotImplementedError, None),
    (
        "3d_input_smaller_than_kernel_ceil",
        lambda x: T.lp_pool3d(x[None], 2, 5, ceil_mode=True),
        RuntimeError,
        lambda x: F.lp_pool3d(x[None], 2, 5, ceil_mode=True),
    ),
]
BAD_IDS = [b[0] for b in BAD_CALLS]


@pytest.mark.parametrize("name, call, exc, torch_call", BAD_CALLS, ids=BAD_IDS)
def test_bad_inputs_raise_before_launch(name, call, exc, torch_call):
    x = torch.randn(1, 2, 4, 4)  # a 4-D input: (N, C, H, W) for 2D, (C, D, H, W) for 3D
    before = dict(runtime.launch_counts)
    with pytest.raises(exc):
        call(x)
    assert dict(runtime.launch_counts) == before, "a kernel launched before the error"
    if torch_call is not None:  # torch raises the same type for the same mistake
        with pytest.raises(exc):
            torch_call(x)
