"""padding="same" / "valid" for max_pool and avg_pool (tgpool's addition, TensorFlow's semantics).

The reference pads explicitly (max: -inf, avg: zeros) and pools with torch in float64; avg divides
each window's sum by its number of input elements (TensorFlow's "same"). tgpool never pads: the
kernels take the padding before the input and the output size, and mask what lies outside.
Values, indices (max), input gradients and memory formats are compared; every tgpool result is
computed inside ``only_triton()``.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from cases import DTYPE_PARAMS, TOL

import tgpool.functional as T
from tgpool import runtime
from tgpool.ops import window as ops


@dataclasses.dataclass(frozen=True)
class SameCase:
    name: str
    ndim: int
    shape: tuple[int, ...]  # (N, C, *spatial) or unbatched (C, *spatial)
    kernel_size: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None = None
    dilation: int | tuple[int, ...] = 1  # max only
    channels_last: bool = False
    divisor_override: int | None = None  # avg 2d/3d only
    reductions: tuple[str, ...] = ("max", "avg")

    def __str__(self):
        return self.name


S = SameCase
# fmt: off
CASES = [
    # stride 1: output = input; odd kernels pad evenly, even kernels put the extra one after
    S("s1_odd_k3_even_padding", 1, (2, 3, 7), 3, 1),
    S("s1_even_k2_pad_after_only", 1, (2, 3, 7), 2, 1),
    S("s1_even_k4_uneven_2d", 2, (2, 3, 6, 7), 4, 1),
    # stride 2: ceil(I / 2) outputs; odd inputs need padding after, even ones maybe none
    S("s2_even_k2_odd_input", 1, (2, 3, 9), 2, 2),
    S("s2_even_k2_even_input_no_padding", 1, (2, 3, 8), 2, 2),
    S("s2_odd_k3_2d", 2, (2, 3, 7, 8), 3, 2),
    # stride 3: windows with gaps between them, and a stride larger than the kernel
    S("s3_k2_gaps", 1, (2, 3, 10), 2, 3),
    S("s3_k5_2d", 2, (1, 2, 8, 7), 5, 3),
    # input smaller than the kernel: one output (stride >= input) or input-sized (stride 1)
    S("input_smaller_than_kernel_s1", 2, (1, 2, 2, 3), 4, 1),
    S("input_smaller_than_kernel_s2", 1, (1, 2, 3), 5, 2),
    S("non_square_kernel_stride", 2, (2, 3, 7, 9), (2, 3), (1, 2)),
    # dilation (max only): the dilated extent is padded
    S("dilation2_s1_max", 1, (2, 3, 9), 3, 1, dilation=2, reductions=("max",)),
    S("dilation2_s2_even_k_2d_max", 2, (2, 3, 7, 8), 2, 2, dilation=2, reductions=("max",)),
    S("dilation3_uneven_3d_max", 3, (1, 2, 5, 4, 6), 2, 1, dilation=(1, 3, 2),
      reductions=("max",)),
    # layouts: channels-last read in place, results in torch's memory format
    S("channels_last_1d", 1, (2, 8, 9), 2, 2, channels_last=True),
    S("channels_last_2d_uneven", 2, (2, 8, 5, 7), 4, 1, channels_last=True),
    S("channels_last_3d", 3, (1, 8, 5, 4, 3), 3, 2, channels_last=True),
    S("3d_s2_k3", 3, (1, 2, 5, 4, 6), 3, 2),
    S("unbatched_2d", 2, (3, 7, 6), 3, 2),
    # divisor_override still divides (avg)
    S("divisor_override_2d", 2, (2, 3, 5, 6), 2, 1, divisor_override=3, reductions=("avg",)),
]
# fmt: on
#: float16 / bfloat16 run on these (every layout and padding shape); the rest in fp32 and fp64,
#: to keep the interpreter's time down
SIXTEEN_BIT = {
    "s1_even_k4_uneven_2d",
    "s2_odd_k3_2d",
    "dilation2_s1_max",
    "channels_last_1d",
    "channels_last_2d_uneven",
    "channels_last_3d",
}


def _params(reduction):
    out = []
    for case in CASES:
        if reduction not in case.reductions:
            continue
        for dtype in DTYPE_PARAMS:
            if case.name in SIXTEEN_BIT or dtype.values[0].itemsize >= 4:
                out.append(pytest.param(case, dtype.values[0], id=f"{case.name}-{dtype.id}"))
    return out


def _tuple(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v)


def make_input(case: SameCase, dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(len(case.name) * 31 + sum(case.shape))
    x = torch.randn(case.shape, generator=g, dtype=torch.float64).to(dtype)
    if case.channels_last:
        if case.ndim == 1:
            return x.transpose(1, 2).contiguous().transpose(1, 2)
        fmt = torch.channels_last if case.ndim == 2 else torch.channels_last_3d
        return x.contiguous(memory_format=fmt)
    return x


def tf_same_padding(case: SameCase, sizes) -> list[tuple[int, int]]:
    """TensorFlow's rule, written out per dim: (before, after)."""
    k = _tuple(case.kernel_size, case.ndim)
    s = _tuple(case.stride or case.kernel_size, case.ndim)
    d = _tuple(case.dilation, case.ndim)
    pads = []
    for i, kk, ss, dd in zip(sizes, k, s, d, strict=True):
        total = max((math.ceil(i / ss) - 1) * ss + (kk - 1) * dd + 1 - i, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _flat_pad(pads):
    return [v for pair in reversed(pads) for v in pair]


def reference(case: SameCase, reduction: str, x: torch.Tensor):
    """(output, indices or None) in float64 by explicit padding; differentiable in x."""
    batched = x.dim() == case.ndim + 2
    xb = x if batched else x.unsqueeze(0)
    pads = tf_same_padding(case, xb.shape[2:])
    k = _tuple(case.kernel_size, case.ndim)
    s = _tuple(case.stride or case.kernel_size, case.ndim)
    if reduction == "max":
        xp = F.pad(xb, _flat_pad(pads), value=-math.inf)
        pool = getattr(F, f"max_pool{case.ndim}d")
        out, idx = pool(xp, k, s, 0, case.dilation, return_indices=True)
        # padded coordinates back to the input's flat spatial index
        coords = torch.unravel_index(idx, xp.shape[2:])
        flat = torch.zeros_like(idx)
        for c, (before, _), size in zip(coords, pads, xb.shape[2:], strict=True):
            flat = flat * size + (c - before)
    else:
        xp, ones = F.pad(xb, _flat_pad(pads)), F.pad(torch.ones_like(xb), _flat_pad(pads))
        pool = getattr(F, f"avg_pool{case.ndim}d")
        n = math.prod(k)
        sums = pool(xp, k, s, 0) * n
        counts = (pool(ones, k, s, 0) * n).round()
        out, flat = sums / (case.divisor_override or counts), None
    if not batched:
        out = out.squeeze(0)
        flat = None if flat is None else flat.squeeze(0)
    return out, flat


def _call(case, reduction, x, **kw):
    if reduction == "max":
        fn = getattr(T, f"max_pool{case.ndim}d")
        return fn(x, case.kernel_size, case.stride, "same", case.dilation, **kw)
    fn = getattr(T, f"avg_pool{case.ndim}d")
    extra = {} if case.ndim == 1 else {"divisor_override": case.divisor_override}
    return fn(x, case.kernel_size, case.stride, "same", **extra)


@pytest.mark.parametrize("case, dtype", _params("max"))
def test_max_same_matches_reference(case, dtype, only_triton):
    x = make_input(case, dtype).requires_grad_()
    with only_triton():
        y, idx = _call(case, "max", x, return_indices=True)
    ref_x = x.detach().to(torch.float64).requires_grad_()
    y_ref, idx_ref = reference(case, "max", ref_x)
    assert y.shape == y_ref.shape and y.dtype == dtype
    torch.testing.assert_close(y.double(), y_ref.detach(), atol=0, rtol=0)
    assert torch.equal(idx, idx_ref), "indices differ"
    sizes = x.shape[-case.ndim :]
    assert (idx >= 0).all() and (idx < math.prod(sizes)).all(), "an index points at padding"
    # torch's memory format: channels-last in, channels-last out (max, every rank)
    if case.channels_last:
        assert y.movedim(1, -1).is_contiguous(), "channels-last input: channels-last output"
    else:
        assert y.is_contiguous()
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
    with only_triton():
        y.backward(g)
    y_ref.backward(g.double())
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(x.grad.double(), ref_x.grad, atol=atol, rtol=rtol)
    if case.channels_last:
        assert x.grad.stride() == x.stride(), "the gradient keeps the input's channels-last layout"


@pytest.mark.parametrize("case, dtype", _params("avg"))
def test_avg_same_matches_reference(case, dtype, only_triton):
    x = make_input(case, dtype).requires_grad_()
    with only_triton():
        y = _call(case, "avg", x)
    ref_x = x.detach().to(torch.float64).requires_grad_()
    y_ref, _ = reference(case, "avg", ref_x)
    assert y.shape == y_ref.shape and y.dtype == dtype
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(y.double(), y_ref.detach(), atol=atol, rtol=rtol)
    if case.channels_last and case.ndim < 3:
        assert y.movedim(1, -1).is_contiguous(), "channels-last input: channels-last output"
    if case.ndim == 3:
        assert y.is_contiguous(), "avg_pool3d returns contiguous outputs, as torch's"
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
    with only_triton():
        y.backward(g)
    y_ref.backward(g.double())
    torch.testing.assert_close(x.grad.double(), ref_x.grad, atol=atol, rtol=rtol)


def test_uneven_same_averages_only_input_elements(only_triton):
    """The edge the TF rule is about: k=2, s=1 pads one element after; the last output is the
    last input element itself (sum / 1), not half of it (count_include_pad) nor the edge twice."""
    x = torch.arange(1.0, 6.0).reshape(1, 1, 5)
    with only_triton():
        y = T.avg_pool1d(x, 2, 1, padding="same")
    assert y.flatten().tolist() == [1.5, 2.5, 3.5, 4.5, 5.0]


@pytest.mark.parametrize("reduction", ["max", "avg"])
def test_valid_is_padding_zero(reduction, only_triton):
    x = torch.randn(2, 3, 7, 9)
    fn = getattr(T, f"{reduction}_pool2d")
    with only_triton():
        a, b = fn(x, 3, 2, padding="valid"), fn(x, 3, 2, padding=0)
    assert torch.equal(a, b) and a.shape == (2, 3, 3, 4)


def test_gradcheck_float64(only_triton):
    case = S("gc", 2, (1, 1, 4, 4), (2, 3), (1, 2))
    x = make_input(case, torch.float64).requires_grad_()
    with only_triton():
        for reduction in ("avg", "max"):
            fn = lambda t, r=reduction: _call(case, r, t)  # noqa: E731
            assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)


def test_ops_with_asymmetric_padding_pass_opcheck(only_triton):
    """The ops take (before..., after...) padding lists: fake outputs match the real ones."""
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    xc = x.contiguous(memory_format=torch.channels_last)
    with only_triton():
        for t in (x, xc):
            torch.library.opcheck(
                ops.max_pool, (t, [4, 2], [1, 2], [1, 0, 2, 1], [1, 1], False, True)
            )
            torch.library.opcheck(
                ops.avg_pool, (t, [4, 2], [1, 2], [1, 0, 2, 1], False, False, None)
            )


def test_torch_compile_fullgraph(only_triton):
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    fn = torch.compile(
        lambda t: T.max_pool2d(t, 3, 2, "same") + T.avg_pool2d(t, 3, 2, "same"), fullgraph=True
    )
    with only_triton():
        y = fn(x)
        y.sum().backward()
    case = S("compile", 2, (2, 3, 7, 8), 3, 2)
    ref_x = x.detach().clone().requires_grad_()
    y_ref = reference(case, "max", ref_x)[0] + reference(case, "avg", ref_x)[0]
    y_ref.sum().backward()
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(x.grad, ref_x.grad, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("case", [CASES[2], CASES[11], CASES[16]], ids=str)
def test_torch_fallback_matches_kernels(case, monkeypatch, only_triton):
    """Tensors on which Triton does not run take padding_reference's torch path: same results."""
    x = make_input(case, torch.float64)
    with only_triton():
        kernel = [_call(case, r, x) for r in case.reductions]
    monkeypatch.setattr(runtime, "uses_triton", lambda t: False)
    fallback = [_call(case, r, x) for r in case.reductions]
    for a, b in zip(kernel, fallback, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


# (name, call, exception): refused before anything is generated or launched
BAD_CALLS = [
    ("unknown_string", lambda x: T.max_pool2d(x, 2, padding="full"), ValueError),
    ("unknown_string_avg", lambda x: T.avg_pool1d(x[0], 2, padding="causal"), ValueError),
    ("case_sensitive_like_torch_conv", lambda x: T.avg_pool2d(x, 2, padding="SAME"), ValueError),
    (
        "same_with_ceil_mode",
        lambda x: T.max_pool2d(x, 2, padding="same", ceil_mode=True),
        ValueError,
    ),
    ("same_with_ceil_mode_avg", lambda x: T.avg_pool2d(x, 2, 1, "same", True), ValueError),
    ("same_kernel_zero", lambda x: T.max_pool2d(x, 0, padding="same"), RuntimeError),
    ("same_bad_rank", lambda x: T.max_pool3d(x[0, 0], 2, padding="same"), RuntimeError),
    ("valid_output_empty", lambda x: T.avg_pool2d(x, 5, padding="valid"), RuntimeError),
]


@pytest.mark.parametrize("name, call, exc", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_paddings_raise_before_launch(name, call, exc):
    x = torch.randn(1, 2, 4, 4)
    before = dict(runtime.launch_counts)
    with pytest.raises(exc, match="padding|kernel|size|input"):
        call(x)
    assert dict(runtime.launch_counts) == before
