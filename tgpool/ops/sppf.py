"""The SPPF custom ops: ``tgpool::sppf`` and ``tgpool::sppf_backward``, with fake and autograd.

    sppf(x, kernel_size, with_indices) -> (out (N, 4C, H, W), indices (3, N, C, H, W) or empty)
    sppf_backward(grad_out, indices, kernel_size, input_size, channels_last) -> grad_in

Autograd graph: sppf -> sppf_backward (a gather) -> double backward: the x part of the gradient
and the gradient read at each pool's argmax (torch.gather, an indexing op).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels import sppf as launcher
from .boundary import tgpool_op
from .window import _require_triton


@tgpool_op("tgpool::sppf")
def sppf(x: Tensor, kernel_size: int, with_indices: bool) -> tuple[Tensor, Tensor]:
    """cat([x, pool(x), pool(pool(x)), pool(pool(pool(x)))], 1) of (N, C, H, W) ``x``."""
    _require_triton("sppf", x)
    return launcher.forward(x, kernel_size, with_indices)


@sppf.register_fake
def _(x, kernel_size, with_indices):
    return launcher.empty_outputs(x, with_indices)


def _setup(ctx, inputs, output):
    x, kernel_size, with_indices = inputs
    ctx.kernel_size = kernel_size
    ctx.input_size = list(x.shape)
    ctx.channels_last = launcher.is_channels_last(x)
    ctx.with_indices = with_indices
    # the indices when the forward wrote them; otherwise the input, to recompute them
    ctx.save_for_backward(output[1] if with_indices else x)
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad_out, _grad_indices):
    (saved,) = ctx.saved_tensors
    indices = saved if ctx.with_indices else sppf(saved, ctx.kernel_size, True)[1]
    grad_in = sppf_backward(grad_out, indices, ctx.kernel_size, ctx.input_size, ctx.channels_last)
    return grad_in, None, None


sppf.register_autograd(_backward, setup_context=_setup)


@tgpool_op("tgpool::sppf_backward")
def sppf_backward(
    grad_out: Tensor, indices: Tensor, kernel_size: int, input_size: list[int], channels_last: bool
) -> Tensor:
    """Gradient of sppf's input: the x part plus each pool's gradients gathered at its argmax
    (deterministic, no atomics)."""
    _require_triton("sppf_backward", grad_out, indices)
    return launcher.backward(grad_out, indices, kernel_size, input_size, channels_last)


@sppf_backward.register_fake
def _(grad_out, indices, kernel_size, input_size, channels_last):
    return launcher.empty_grad_input(input_size, channels_last, grad_out)


def _backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def read_at_argmax(t: Tensor, indices: Tensor) -> Tensor:
    """(N, 4C, H, W): [t, t at pool 1's argmax, at pool 2's, at pool 3's] (the derivative of
    sppf_backward, which is linear in grad_out)."""
    N, C, H, W = t.shape
    flat = t.reshape(N, C, H * W)
    parts = [t] + [
        flat.gather(2, indices[level].reshape(N, C, H * W).long()).reshape(N, C, H, W)
        for level in range(3)
    ]
    return torch.cat(parts, 1)


def _double_backward(ctx, grad_grad_in):
    (indices,) = ctx.saved_tensors
    return read_at_argmax(grad_grad_in, indices), None, None, None, None


sppf_backward.register_autograd(_double_backward, setup_context=_backward_setup)
