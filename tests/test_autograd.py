"""Autograd of tgpool's pooling: gradcheck and gradgradcheck in float64 on tiny inputs,
bit-identical backward runs where windows overlap, and gradients for grad_outputs of any layout.

gradcheck perturbs inputs by 1e-6; max-pool inputs here are a permutation of 0.1-spaced values, so
no perturbation changes which element wins a window.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

import tgpool
from tgpool.ops import window as ops
from tgpool.spec import window_spec


@dataclasses.dataclass(frozen=True)
class GradCase:
    name: str
    op: str  # tgpool function name
    shape: tuple[int, ...]
    kwargs: dict
    channels_last: bool = False


G = GradCase
GRAD_CASES = [
    # overlapping windows with padding: several outputs add into one input element
    G("max1d_k3_s1_p1", "max_pool1d", (1, 2, 7), dict(kernel_size=3, stride=1, padding=1)),
    G(
        "max1d_dilated_ceil",
        "max_pool1d",
        (2, 1, 8),
        dict(kernel_size=2, stride=2, padding=1, dilation=2, ceil_mode=True),
    ),
    G("max2d_k3_s1_p1", "max_pool2d", (1, 2, 5, 5), dict(kernel_size=3, stride=1, padding=1)),
    G(
        "max2d_non_square_ceil",
        "max_pool2d",
        (1, 2, 5, 6),
        dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 1), ceil_mode=True),
    ),
    G(
        "max2d_channels_last",
        "max_pool2d",
        (1, 3, 4, 4),
        dict(kernel_size=3, stride=2, padding=1),
        channels_last=True,
    ),
    G("max2d_unbatched", "max_pool2d", (2, 4, 5), dict(kernel_size=2, stride=1)),
    G("max3d_k2_s1", "max_pool3d", (1, 1, 3, 4, 4), dict(kernel_size=2, stride=1)),
    G(
        "max3d_channels_last_pad",
        "max_pool3d",
        (1, 2, 3, 3, 3),
        dict(kernel_size=3, stride=2, padding=1),
        channels_last=True,
    ),
    G("avg1d_k3_s1_p1", "avg_pool1d", (1, 2, 7), dict(kernel_size=3, stride=1, padding=1)),
    G(
        "avg1d_ceil_exclude_pad",
        "avg_pool1d",
        (2, 1, 8),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    ),
    G("avg2d_k3_s1_p1", "avg_pool2d", (1, 2, 5, 5), dict(kernel_size=3, stride=1, padding=1)),
    G(
        "avg2d_ceil_exclude_pad",
        "avg_pool2d",
        (1, 2, 5, 6),
        dict(kernel_size=(3, 2), stride=(2, 1), padding=1, ceil_mode=True, count_include_pad=False),
    ),
    G(
        "avg2d_divisor_override",
        "avg_pool2d",
        (1, 2, 4, 4),
        dict(kernel_size=2, stride=1, divisor_override=3),
    ),
    G(
        "avg2d_channels_last",
        "avg_pool2d",
        (1, 3, 4, 4),
        dict(kernel_size=3, stride=2, padding=1),
        channels_last=True,
    ),
    G("avg3d_k2_s1", "avg_pool3d", (1, 1, 3, 4, 4), dict(kernel_size=2, stride=1)),
    G(
        "avg3d_channels_last_pad",
        "avg_pool3d",
        (1, 2, 3, 3, 3),
        dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
        channels_last=True,
    ),
]


def spaced_input(case: GradCase, dtype=torch.float64) -> torch.Tensor:
    """Distinct values 0.1 apart in random order, in the case's memory layout."""
    n = 1
    for s in case.shape:
        n *= s
    x = (torch.randperm(n).to(dtype) * 0.1).reshape(case.shape)
    if case.channels_last:
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
    return x.requires_grad_()


def _fn(case: GradCase):
    pool = getattr(tgpool, case.op)
    return lambda x: pool(x, **case.kwargs)


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.name)
def test_gradcheck(case, only_triton):
    x = spaced_input(case)
    with only_triton():
        assert gradcheck(_fn(case), (x,), fast_mode=True)


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.name)
def test_gradgradcheck(case, only_triton):
    x = spaced_input(case)
    with only_triton():
        assert gradgradcheck(_fn(case), (x,), fast_mode=True)


FULL_JACOBIAN = [
    G("max1d_k3_s1_p1_tiny", "max_pool1d", (1, 1, 5), dict(kernel_size=3, stride=1, padding=1)),
    G("avg1d_k3_s1_p1_tiny", "avg_pool1d", (1, 1, 5), dict(kernel_size=3, stride=1, padding=1)),
]


@pytest.mark.parametrize("case", FULL_JACOBIAN, ids=lambda c: c.name)
def test_gradcheck_full_jacobian(case, only_triton):
    """The slow mode compares every Jacobian entry (tiny 1D inputs only)."""
    x = spaced_input(case)
    with only_triton():
        assert gradcheck(_fn(case), (x,))
        assert gradgradcheck(_fn(case), (x,))


# --- determinism ----------------------------------------------------------------------------------

OVERLAPPING = [c for c in GRAD_CASES if c.kwargs.get("stride") == 1 or c.channels_last]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("case", OVERLAPPING, ids=lambda c: c.name)
def test_backward_bit_identical_across_runs(case, dtype, only_triton):
    """Every input element sums its windows' gradients in a fixed order: no atomics."""
    x = torch.randint(-2, 3, case.shape).to(dtype)  # ties: several windows pick one element
    if case.channels_last:
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
    x.requires_grad_()
    pool = _fn(case)
    with only_triton():
        out = pool(x)
        g = torch.randn(out.shape).to(dtype)
        first = torch.autograd.grad(pool(x), x, g)[0]
        second = torch.autograd.grad(pool(x), x, g)[0]
    assert torch.equal(bits(first), bits(second))


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits (so -0.0 and 0.0 differ, and NaNs compare by payload)."""
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.dtype.itemsize])


# --- grad_output layouts and the recomputed-indices path ------------------------------------------


def _torch_fn(case: GradCase):
    pool = getattr(F, case.op)
    return lambda x: pool(x, **case.kwargs)


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("grad_layout", ["expanded", "transposed"])
def test_backward_any_grad_output_layout(case, grad_layout, only_triton):
    """.sum() hands backward a stride-0 grad_output; a transposed one has permuted strides."""
    x = spaced_input(case, torch.float32)
    ref = _torch_fn(case)(x)
    if grad_layout == "expanded":
        g = torch.tensor(1.5).expand(ref.shape)
    else:
        g = torch.randn(ref.shape[::-1]).permute(*reversed(range(ref.dim())))
    (expected,) = torch.autograd.grad(ref, x, g)
    with only_triton():
        (grad,) = torch.autograd.grad(_fn(case)(x), x, g)
    torch.testing.assert_close(grad, expected, atol=1e-6, rtol=1e-6)


BATCHED_MAX = [
    c for c in GRAD_CASES if c.op.startswith("max") and len(c.shape) == int(c.op[-2]) + 2
]


@pytest.mark.parametrize("case", BATCHED_MAX, ids=lambda c: c.name)
def test_max_backward_recomputes_indices_when_forward_skipped_them(case, only_triton):
    """tgpool::max_pool with with_indices=False saves the input and recomputes the argmax in
    backward; the gradient must equal the one from the saved indices."""
    x = spaced_input(case, torch.float32)
    spec = window_spec("max", int(case.op[-2]), **case.kwargs)
    args = (
        list(spec.kernel_size),
        list(spec.stride),
        list(spec.padding),
        list(spec.dilation),
        spec.ceil_mode,
    )
    with only_triton():
        out_saved, _ = ops.max_pool(x, *args, True)
        out_recomputed, _ = ops.max_pool(x, *args, False)
        g = torch.randn(out_saved.shape)
        (from_saved,) = torch.autograd.grad(out_saved, x, g)
        (from_recomputed,) = torch.autograd.grad(out_recomputed, x, g)
    assert torch.equal(out_saved, out_recomputed)
    assert torch.equal(from_saved, from_recomputed)
