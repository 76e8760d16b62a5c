"""The separable large-window path (tgpool/kernels/large_window.py) against torch: values and
indices exact for max, averages and every gradient against float64 torch, every dtype, both layouts,
ceil_mode, padding, dilation, NaN / inf / ties, and through the custom ops with the dispatch
that window_pool will get.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from cases import DTYPE_PARAMS, TOL

import tgpool
from tgpool import runtime
from tgpool.kernels import large_window
from tgpool.kernels import window as window_pool
from tgpool.spec import is_channels_last, window_spec


@dataclasses.dataclass(frozen=True)
class LW:
    name: str
    shape: tuple  # (N, C, *spatial)
    kernel_size: tuple
    stride: tuple | int
    padding: tuple | int = 0
    dilation: tuple | int = 1  # max only
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None
    channels_last: bool = False
    values: str = "randn"  # randn | nan | inf | ties
    reductions: tuple = ("max", "avg")

    @property
    def ndim(self) -> int:
        return len(self.shape) - 2

    def spec(self, reduction):
        if reduction == "max":
            return window_spec(
                "max", self.ndim, self.kernel_size, self.stride, self.padding, self.dilation,
                self.ceil_mode,
            )  # fmt: skip
        return window_spec(
            "avg", self.ndim, self.kernel_size, self.stride, self.padding, 1, self.ceil_mode,
            self.count_include_pad, self.divisor_override,
        )  # fmt: skip

    def torch_pool(self, x, reduction):
        n = self.ndim
        if reduction == "max":
            return getattr(F, f"max_pool{n}d")(
                x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, True
            )
        args = (x, self.kernel_size, self.stride, self.padding, self.ceil_mode)
        return getattr(F, f"avg_pool{n}d")(*args, self.count_include_pad, self.divisor_override)


# fmt: off
CASES = [
    # the windows the brief names: 31x31 at stride 1 (every output overlaps 960 others) and 16
    LW("31x31_s1_p15", (1, 2, 33, 34), (31, 31), 1, 15),
    LW("31x31_s16", (1, 2, 40, 47), (31, 31), 16),
    LW("31x31_s16_ceil_p15", (1, 2, 40, 47), (31, 31), 16, 15, ceil_mode=True),
    LW("13x13_s1_p6", (2, 3, 15, 16), (13, 13), 1, 6),
    # one axis only: a single pass (prefer() leaves them to window_pool, the path must still work)
    LW("1x25_s1", (1, 2, 4, 30), (1, 25), 1, (0, 12)),
    LW("25x1_s1", (1, 2, 30, 4), (25, 1), 1, (12, 0)),
    # 3-D: three passes, non-cubic strides
    LW("9x9x9_3d", (1, 2, 10, 11, 12), (9, 9, 9), (1, 2, 3), 4),
    # ceil_mode: last window partial / would start in the right padding (dropped)
    LW("ceil_13x13_s5_p3", (1, 2, 17, 19), (13, 13), 5, 3, ceil_mode=True),
    LW("ceil_9x9_s4_p4_last_in_padding", (1, 2, 13, 13), (9, 9), 4, 4, ceil_mode=True),
    # avg divisor rules
    LW("exclude_pad_11x11_s2_p5", (1, 2, 14, 15), (11, 11), 2, 5, count_include_pad=False,
       reductions=("avg",)),
    LW("divisor_override_9x9", (1, 2, 12, 12), (9, 9), 3, 4, divisor_override=-7,
       reductions=("avg",)),
    LW("exclude_pad_ceil_3d", (1, 2, 9, 9, 10), (5, 5, 5), 2, 2, ceil_mode=True,
       count_include_pad=False, reductions=("avg",)),
    # dilation (max): taps 2 apart, windows that start in the padding
    LW("dilated_9x9_d2_p4", (1, 2, 20, 21), (9, 9), 1, 4, dilation=(2, 2), reductions=("max",)),
    # layouts: channels-last tiles read C contiguous
    LW("channels_last_13x13_s2", (2, 8, 15, 16), (13, 13), 2, 6, channels_last=True),
    LW("channels_last_3d_5x5x5", (1, 8, 7, 8, 9), (5, 5, 5), 2, 2, channels_last=True),
    # values: NaN wins (last NaN's index), +-inf, ties report the first maximum in row-major order
    LW("nan_several", (1, 2, 14, 15), (9, 9), 2, 4, values="nan", reductions=("max",)),
    LW("inf_both_signs", (1, 2, 14, 15), (9, 9), 1, 4, values="inf"),
    LW("ties", (1, 2, 14, 15), (9, 9), 1, 4, values="ties"),
    LW("ties_channels_last", (1, 4, 12, 13), (9, 9), 2, 4, values="ties", channels_last=True),
    LW("neg_inf_rows", (1, 2, 12, 12), (9, 9), 1, 4, values="neg_inf", reductions=("max",)),
]
# fmt: on

#: cases run in every dtype; the others in float32 (the interpreter is slow)
ALL_DTYPES = {"13x13_s1_p6", "9x9x9_3d", "channels_last_13x13_s2", "ties", "ceil_13x13_s5_p3"}


def _values(case: LW) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if case.values == "ties":
        return torch.randint(-2, 3, case.shape, generator=g).float()
    x = torch.randn(case.shape, generator=g)
    flat = x.view(-1)
    i = torch.arange(flat.numel())
    if case.values == "nan":
        flat[i % 17 == 0] = math.nan
    elif case.values == "inf":
        flat[i % 7 == 0] = math.inf
        flat[i % 7 == 3] = -math.inf
    elif case.values == "neg_inf":
        x[..., : case.shape[-2] // 2, :] = -math.inf  # windows of -inf: the index is the first tap
    return x


def make(case: LW, dtype) -> torch.Tensor:
    x = _values(case).to(dtype)
    if case.channels_last:
        fmt = torch.channels_last if case.ndim == 2 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
    return x


def _params():
    for case in CASES:
        for reduction in case.reductions:
            for dtype in DTYPE_PARAMS:
                if case.name in ALL_DTYPES or dtype.values[0] == torch.float32:
                    name = f"{case.name}-{reduction}-{dtype.id}"
                    yield pytest.param(case, reduction, dtype.values[0], id=name)


@pytest.mark.parametrize("case, reduction, dtype", list(_params()))
def test_forward_and_backward_match_torch(case, reduction, dtype):
    x = make(case, dtype)
    spec = case.spec(reduction)
    before = dict(runtime.launch_counts)
    out, idx = large_window.forward(x, spec, True)
    ran = {k for k, v in runtime.launch_counts.items() if v > before.get(k, 0)}
    assert ran and all("_large_" in k for k in ran), ran
    assert len(ran) == len(large_window.pass_axes(spec))

    ref64 = x.double().requires_grad_()
    if reduction == "max":
        ref, ref_idx = case.torch_pool(x, "max")
        assert out.dtype == x.dtype and out.shape == ref.shape and out.stride() == ref.stride()
        torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(idx, ref_idx)
        ref_out = case.torch_pool(ref64, "max")[0]
    else:
        assert idx.numel() == 0
        ref_out = case.torch_pool(ref64, "avg")
        assert (
            out.shape == ref_out.shape
            and out.stride() == case.torch_pool(x.float(), "avg").stride()
        )
        atol, rtol = TOL[dtype]
        torch.testing.assert_close(
            out.double(), ref_out.detach(), atol=atol, rtol=rtol, equal_nan=True
        )

    grad = torch.randn(ref_out.shape, generator=torch.Generator().manual_seed(2))
    grad = grad.to(dtype).contiguous(memory_format=_format(out))
    ref_out.backward(grad.double())
    channels_last = window_pool.returns_channels_last(x, reduction, case.ndim)
    gi = large_window.backward(grad, idx if reduction == "max" else None, list(x.shape),
                               channels_last, spec)  # fmt: skip
    assert gi.dtype == x.dtype and gi.shape == x.shape
    assert gi.is_contiguous(memory_format=_format(x) if channels_last else torch.contiguous_format)
    atol, rtol = TOL[dtype]
    # 16-bit gradients are rounded once from fp32 sums of up to ~100 terms
    torch.testing.assert_close(
        gi.double(), ref64.grad, atol=max(atol, 4 * rtol), rtol=rtol, equal_nan=True
    )
    # deterministic: the same bits again
    assert torch.equal(
        gi,
        large_window.backward(
            grad, idx if reduction == "max" else None, list(x.shape), channels_last, spec
        ),  # fmt: skip
    )


def _format(t: torch.Tensor):
    if t.dim() == 4 and is_channels_last(t, 2):
        return torch.channels_last
    if t.dim() == 5 and is_channels_last(t, 3):
        return torch.channels_last_3d
    return torch.contiguous_format


def test_forward_without_indices_returns_empty_indices():
    case = CASES[0]
    x = make(case, torch.float32)
    out, idx = large_window.forward(x, case.spec("max"), False)
    assert idx.numel() == 0 and idx.dtype == torch.int64
    torch.testing.assert_close(out, case.torch_pool(x, "max")[0], rtol=0, atol=0)


def test_empty_batch():
    x = torch.randn(0, 2, 12, 12)
    spec = window_spec("max", 2, 9, 1, 4)
    out, idx = large_window.forward(x, spec, True)
    assert out.shape == (0, 2, 12, 12) and idx.shape == (0, 2, 12, 12)
    gi = large_window.backward(out, idx, list(x.shape), False, spec)
    assert gi.shape == x.shape


# --- the rule -------------------------------------------------------------------------------------

PREFER = [
    # (name, spec, takes the separable path)
    ("31x31_s1", window_spec("max", 2, 31, 1, 15), True),
    ("31x31_s16", window_spec("avg", 2, 31, 16), True),
    ("9x9_just_past_unroll_limit", window_spec("max", 2, 9, 1), True),
    ("8x8_at_unroll_limit", window_spec("max", 2, 8, 1), False),
    ("3x3_resnet_stem", window_spec("max", 2, 3, 2, 1), False),
    ("1x25_one_axis", window_spec("max", 2, (1, 25), 1), False),
    ("100_1d_one_axis", window_spec("avg", 1, 100, 1), False),
    ("5x5x5_3d_125_taps", window_spec("avg", 3, 5, 1), True),
    ("4x4x4_3d_64_taps", window_spec("avg", 3, 4, 1), False),
    ("9x9_dilated", window_spec("max", 2, 9, 1, 4, 2), True),
]


@pytest.mark.parametrize("spec, expected", [p[1:] for p in PREFER], ids=[p[0] for p in PREFER])
def test_prefer(spec, expected):
    assert large_window.prefer(spec) is expected


# --- through the custom ops, with the dispatch window_pool will get ---------------------------


@pytest.fixture
def dispatched(monkeypatch):
    """window_pool.forward/backward with the one-line dispatch to large_window."""
    forward, backward = window_pool.forward, window_pool.backward

    def fwd(x, spec, with_indices):
        if large_window.prefer(spec):
            return large_window.forward(x, spec, with_indices)
        return forward(x, spec, with_indices)

    def bwd(grad_out, indices, input_shape, channels_last, spec):
        if large_window.prefer(spec):
            return large_window.backward(grad_out, indices, input_shape, channels_last, spec)
        return backward(grad_out, indices, input_shape, channels_last, spec)

    monkeypatch.setattr(window_pool, "forward", fwd)
    monkeypatch.setattr(window_pool, "backward", bwd)


@pytest.mark.parametrize("reduction", ["max", "avg"])
def test_gradcheck_float64_through_the_ops(dispatched, reduction):
    x = torch.randn(1, 1, 10, 11, dtype=torch.float64, requires_grad=True)
    if reduction == "max":
        fn = lambda t: tgpool.max_pool2d(t, 9, 2, 4)  # noqa: E731
    else:
        fn = lambda t: tgpool.avg_pool2d(t, 9, 2, 4, True, False)  # noqa: E731
    before = dict(runtime.launch_counts)
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    ran = {k for k, v in runtime.launch_counts.items() if v > before.get(k, 0)}
    assert any("_large_bwd_" in k for k in ran) and any("_large_w_" in k for k in ran), ran


def test_compiled_model_through_the_ops(dispatched):
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 1), tgpool.nn.MaxPool2d(11, 1, 5))
    x = torch.randn(1, 2, 12, 12, requires_grad=True)
    ref = model(x)
    ref.sum().backward()
    ref_grad = x.grad.clone()
    x.grad = None
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    before = dict(runtime.launch_counts)
    out = compiled(x)
    out.sum().backward()
    ran = {k for k, v in runtime.launch_counts.items() if v > before.get(k, 0)}
    assert {"max_pool2d_large_w_rows_idx", "max_pool2d_large_bwd_w_rows"} <= ran, ran
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, ref_grad)
