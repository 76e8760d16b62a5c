"""The tgpool:: custom ops as torch sees them: opcheck on every op, torch.compile of small models
forward and backward, and double backward.

Kernels run through the Triton interpreter (see conftest.py), so every shape here is tiny.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import triton_only

import tgpool
from tgpool import runtime
from tgpool.ops import window as ops

# --- cases ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One pooling call: input shape (N, C, *spatial), layout, window, options."""

    shape: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...] | None = None  # max only; None: all ones
    channels_last: bool = False
    ceil_mode: bool = False
    with_indices: bool = True  # max only
    count_include_pad: bool = True  # avg only
    divisor_override: int | None = None  # avg only
    dtype: torch.dtype = torch.float32

    @property
    def ndim(self) -> int:
        return len(self.kernel)

    @property
    def dil(self) -> list[int]:
        return list(self.dilation or (1,) * self.ndim)

    def input(self, requires_grad: bool = False) -> torch.Tensor:
        return make_input(self.shape, self.channels_last, self.dtype, requires_grad)


def make_input(shape, channels_last: bool, dtype=torch.float32, requires_grad=False):
    """randn of ``shape`` (N, C, *spatial), channels-last strides (C innermost) if asked."""
    if channels_last:
        n, c, *spatial = shape
        x = torch.randn(n, *spatial, c, dtype=dtype).movedim(-1, 1)
        assert x.stride(1) == 1
    else:
        x = torch.randn(shape, dtype=dtype)
    return x.requires_grad_(requires_grad)


def like_layout(t: torch.Tensor, ref: torch.Tensor, requires_grad=False) -> torch.Tensor:
    """randn with ``ref``'s shape and strides."""
    out = torch.empty_strided(ref.shape, ref.stride(), dtype=t.dtype)
    return out.copy_(torch.randn(ref.shape, dtype=t.dtype)).requires_grad_(requires_grad)


MAX_CASES = {
    # 1D, contiguous, padded window, indices written by the forward
    "1d": Case((2, 3, 9), (3,), (2,), (1,)),
    # 1D channels-last (C stride 1), backward recomputes the indices
    "1d-channels-last-no-indices": Case(
        (2, 4, 9), (3,), (2,), (1,), channels_last=True, with_indices=False
    ),
    # 2D non-square window and stride, no indices from the forward
    "2d-no-indices": Case((2, 3, 7, 8), (3, 2), (2, 1), (1, 0), with_indices=False),
    # 2D channels-last, dilation 2, ceil_mode (last window starts in the input)
    "2d-channels-last-dilated-ceil": Case(
        (2, 4, 9, 8), (2, 3), (2, 2), (1, 1), (2, 2), channels_last=True, ceil_mode=True
    ),
    # 2D ceil_mode that adds a partial last window
    "2d-ceil": Case((1, 2, 7, 7), (2, 2), (2, 2), (0, 0), ceil_mode=True),
    # 3D contiguous with indices
    "3d": Case((1, 2, 5, 6, 5), (2, 3, 2), (2, 2, 1), (1, 1, 0)),
    # 3D channels-last, ceil_mode, no indices
    "3d-channels-last-ceil": Case(
        (1, 3, 5, 5, 6),
        (2, 2, 2),
        (2, 2, 2),
        (0, 1, 1),
        channels_last=True,
        ceil_mode=True,
        with_indices=False,
    ),
    # fp64 (fp64 accumulator variant)
    "2d-fp64": Case((1, 2, 6, 6), (3, 3), (2, 2), (1, 1), dtype=torch.float64),
}

AVG_CASES = {
    # 1D, padding counted in the divisor
    "1d": Case((2, 3, 9), (3,), (2,), (1,)),
    # 1D channels-last, padding not counted, ceil_mode
    "1d-channels-last-exclude-pad-ceil": Case(
        (2, 4, 10), (3,), (2,), (1,), channels_last=True, ceil_mode=True, count_include_pad=False
    ),
    # 2D non-square, padding not counted
    "2d-exclude-pad": Case((2, 3, 7, 8), (3, 2), (2, 1), (1, 1), count_include_pad=False),
    # 2D channels-last with divisor_override
    "2d-channels-last-divisor": Case(
        (2, 4, 6, 7), (2, 3), (2, 2), (1, 1), channels_last=True, divisor_override=5
    ),
    # 2D ceil_mode with a partial last window counted with padding
    "2d-ceil": Case((1, 2, 7, 7), (3, 3), (2, 2), (1, 1), ceil_mode=True),
    # 3D contiguous, divisor_override
    "3d-divisor": Case((1, 2, 5, 6, 5), (2, 3, 2), (2, 2, 1), (1, 1, 0), divisor_override=3),
    # 3D channels-last input (torch returns a contiguous avg_pool3d output), exclude padding
    "3d-channels-last-exclude-pad-ceil": Case(
        (1, 3, 5, 5, 6),
        (3, 2, 2),
        (2, 2, 2),
        (1, 1, 1),
        channels_last=True,
        ceil_mode=True,
        count_include_pad=False,
    ),
    # fp64
    "2d-fp64": Case((1, 2, 6, 6), (3, 3), (2, 2), (1, 1), dtype=torch.float64),
}


def max_args(c: Case, x: torch.Tensor) -> tuple:
    return (x, list(c.kernel), list(c.stride), list(c.padding), c.dil, c.ceil_mode, c.with_indices)


def avg_args(c: Case, x: torch.Tensor) -> tuple:
    return (
        x,
        list(c.kernel),
        list(c.stride),
        list(c.padding),
        c.ceil_mode,
        c.count_include_pad,
        c.divisor_override,
    )


def torch_max(c: Case, x: torch.Tensor):
    """torch's (out, indices) for the case."""
    fn = getattr(F, f"max_pool{c.ndim}d")
    return fn(x, c.kernel, c.stride, c.padding, c.dil, c.ceil_mode, return_indices=True)


def torch_avg(c: Case, x: torch.Tensor):
    fn = getattr(F, f"avg_pool{c.ndim}d")
    args = (x, c.kernel, c.stride, c.padding, c.ceil_mode, c.count_include_pad)
    return fn(*args) if c.ndim == 1 else fn(*args, c.divisor_override)


def opcheck(op, args):
    with triton_only():
        torch.library.opcheck(op, args)


# --- opcheck --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MAX_CASES))
def test_opcheck_max_pool(name):
    c = MAX_CASES[name]
    x = c.input(requires_grad=True)
    opcheck(ops.max_pool, max_args(c, x))
    # and the values are torch's
    out, idx = ops.max_pool(*max_args(c, x.detach()))
    ref, ref_idx = torch_max(c, x.detach())
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    assert out.stride() == ref.stride()
    if c.with_indices:
        torch.testing.assert_close(idx, ref_idx, atol=0, rtol=0)
    else:
        assert idx.numel() == 0


@pytest.mark.parametrize("name", list(MAX_CASES))
def test_opcheck_max_pool_backward(name):
    c = MAX_CASES[name]
    x = c.input()
    ref, idx = torch_max(c, x)
    grad_out = like_layout(x, ref, requires_grad=True)
    channels_last = ref.stride(1) == 1 and ref.shape[1] > 1
    args = (
        grad_out,
        idx,
        list(x.shape),
        channels_last,
        list(c.kernel),
        list(c.stride),
        list(c.padding),
        c.dil,
        c.ceil_mode,
    )
    opcheck(ops.max_pool_backward, args)


@pytest.mark.parametrize("name", list(MAX_CASES))
def test_opcheck_index_gather(name):
    # index_gather has no autograd formula (it is the end of max's double backward): no grads.
    c = MAX_CASES[name]
    x = c.input()
    _, idx = torch_max(c, x)
    src = make_input(c.shape, c.channels_last, c.dtype)
    opcheck(ops.index_gather, (src, idx))
    expected = src.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)
    torch.testing.assert_close(ops.index_gather(src, idx), expected, atol=0, rtol=0)


@pytest.mark.parametrize("name", list(AVG_CASES))
def test_opcheck_avg_pool(name):
    c = AVG_CASES[name]
    x = c.input(requires_grad=True)
    opcheck(ops.avg_pool, avg_args(c, x))
    out = ops.avg_pool(*avg_args(c, x.detach()))
    ref = torch_avg(c, x.detach())
    torch.testing.assert_close(out, ref)
    assert out.stride() == ref.stride()


@pytest.mark.parametrize("name", list(AVG_CASES))
def test_opcheck_avg_pool_backward(name):
    c = AVG_CASES[name]
    x = c.input()
    ref = torch_avg(c, x)
    grad_out = like_layout(x, ref, requires_grad=True)
    channels_last = c.channels_last and c.shape[1] > 1
    args = (
        grad_out,
        list(x.shape),
        channels_last,
        list(c.kernel),
        list(c.stride),
        list(c.padding),
        c.ceil_mode,
        c.count_include_pad,
        c.divisor_override,
    )
    opcheck(ops.avg_pool_backward, args)


# --- gradients in fp64 ----------------------------------------------------------------------------


def test_gradcheck_fp64():
    x = make_input((1, 2, 5, 4), False, torch.float64, requires_grad=True)
    xc = make_input((1, 2, 5, 4), True, torch.float64, requires_grad=True)
    with triton_only():
        for inp in (x, xc):
            assert torch.autograd.gradcheck(
                lambda t: tgpool.max_pool2d(t, 3, stride=2, padding=1), (inp,), fast_mode=True
            )
            assert torch.autograd.gradcheck(
                lambda t: tgpool.avg_pool2d(
                    t, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False
                ),
                (inp,),
                fast_mode=True,
            )


# --- double backward ------------------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels-last"])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_double_backward(kind, channels_last):
    """grad of (d pool / d x . v) with respect to grad_output and x, as torch computes it."""
    shape = (2, 3, 7, 6)
    x = make_input(shape, channels_last, torch.float64, requires_grad=True)
    if kind == "max":
        kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        ours, theirs = tgpool.max_pool2d, F.max_pool2d
    else:
        kw = dict(
            kernel_size=3, stride=2, padding=1, count_include_pad=False, divisor_override=None
        )
        ours, theirs = tgpool.avg_pool2d, F.avg_pool2d
    v = torch.randn(shape, dtype=torch.float64)

    def second_order(pool):
        y = pool(x, **kw)
        grad_out = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
        grad_out.requires_grad_(True)
        (gx,) = torch.autograd.grad(y, x, grad_out, create_graph=True)
        gg_out, gg_x = torch.autograd.grad(
            (gx * v).sum(), (grad_out, x), allow_unused=True, materialize_grads=True
        )
        return gx, gg_out, gg_x

    with triton_only():
        got = second_order(ours)
    want = second_order(theirs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_gradgradcheck_fp64(kind):
    x = make_input((1, 2, 5, 4), False, torch.float64, requires_grad=True)
    if kind == "max":
        fn = lambda t: tgpool.max_pool2d(t, 2, stride=2, padding=1)
    else:
        fn = lambda t: tgpool.avg_pool2d(t, 3, stride=2, padding=1, count_include_pad=False)
    with triton_only():
        assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


# --- torch.compile --------------------------------------------------------------------------------
#
# The default inductor backend: its CPU path (C++ through gcc) works here, and the tgpool ops stay
# opaque extern calls in its graph. With a cold inductor cache the three models take ~30 s in all
# (~15 s for the first, which builds inductor's C++ prelude), ~13 s warm.


class Net(torch.nn.Module):
    """conv -> max pool -> conv -> avg pool -> flatten -> linear, for 1 to 3 spatial dims."""

    def __init__(self, ndim: int, max_pool, avg_pool, flat: int):
        super().__init__()
        conv = getattr(torch.nn, f"Conv{ndim}d")
        self.conv1 = conv(3, 4, 3, padding=1)
        self.max_pool = max_pool
        self.conv2 = conv(4, 4, 3, padding=1)
        self.avg_pool = avg_pool
        self.fc = torch.nn.Linear(flat, 5)

    def forward(self, x):
        x = self.max_pool(torch.relu(self.conv1(x)))
        x = self.avg_pool(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


def _pools(ndim: int, lib):
    """(max pool, avg pool) from ``lib``: 2D as nn modules, 1D and 3D as functional calls."""
    if ndim == 2:
        nn = lib.nn if lib is tgpool else torch.nn
        max_pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        return max_pool, nn.AvgPool2d(2, divisor_override=3)
    fn = lib if lib is tgpool else F
    return (
        functools.partial(getattr(fn, f"max_pool{ndim}d"), kernel_size=3, stride=2, padding=1),
        functools.partial(
            getattr(fn, f"avg_pool{ndim}d"), kernel_size=2, stride=2, count_include_pad=False
        ),
    )


COMPILE_SHAPES = {1: (2, 3, 16), 2: (2, 3, 10, 9), 3: (1, 3, 6, 6, 5)}
# spatial sizes after max(3, 2, 1 [ceil for 2D]) then avg(2): 1D 16->8->4; 2D (10,9)->(6,5)->(3,2);
# 3D (6,6,5)->(3,3,3)->(1,1,1)
FLAT = {1: 4 * 4, 2: 4 * 3 * 2, 3: 4 * 1 * 1 * 1}


def _launches(prefix: str) -> int:
    return sum(n for k, n in runtime.launch_counts.items() if k.startswith(prefix))


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_compile_fullgraph_forward_backward(ndim):
    torch._dynamo.reset()
    torch.manual_seed(0)
    ours = Net(ndim, *_pools(ndim, tgpool), FLAT[ndim])
    theirs = Net(ndim, *_pools(ndim, torch), FLAT[ndim])
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(COMPILE_SHAPES[ndim], requires_grad=True)

    compiled = torch.compile(ours, fullgraph=True)
    names = [f"{r}_pool{ndim}d_{d}" for d in ("fwd", "bwd") for r in ("max", "avg")]
    start = {n: _launches(n) for n in names}
    with warnings.catch_warnings():
        # dynamo notes that it traces through spec.py's lru_cache (the spec is pure)
        warnings.filterwarnings("ignore", message=".*lru_cache.*")
        with triton_only():
            y = compiled(x)
            after_fwd = {n: _launches(n) - start[n] for n in names}
            y.square().sum().backward()
    after_bwd = {n: _launches(n) - start[n] for n in names}
    assert all(after_fwd[n] > 0 for n in names[:2]), f"forward kernels did not launch: {after_fwd}"
    assert all(after_bwd[n] > 0 for n in names[2:]), f"backward kernels did not launch: {after_bwd}"
    grad_x = x.grad.clone()
    x.grad = None

    y_ref = theirs(x)
    y_ref.square().sum().backward()
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grad_x, x.grad, atol=1e-5, rtol=1e-4)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_double_backward_max_recomputed_indices():
    """max_pool without indices recomputes them in its backward; that path double-differentiates
    too."""
    x = make_input((1, 2, 6, 5), True, torch.float64, requires_grad=True)
    args = ([3, 2], [2, 2], [1, 1], [1, 1], False, False)
    with triton_only():
        y, idx = ops.max_pool(x, *args)
        assert idx.numel() == 0
        grad_out = torch.randn_like(y).requires_grad_(True)
        (gx,) = torch.autograd.grad(y, x, grad_out, create_graph=True)
        v = torch.randn_like(x)
        (gg,) = torch.autograd.grad((gx * v).sum(), grad_out)
    ref, ref_idx = F.max_pool2d(x.detach(), [3, 2], [2, 2], [1, 1], return_indices=True)
    ref_gx = torch.autograd.grad(F.max_pool2d(x, [3, 2], [2, 2], [1, 1]), x, grad_out)[0]
    torch.testing.assert_close(y, ref, atol=0, rtol=0)
    torch.testing.assert_close(gx, ref_gx)
    torch.testing.assert_close(gg, v.flatten(2).gather(2, ref_idx.flatten(2)).view(ref.shape))
