"""The ``tgpool::max_unpool`` custom ops: Triton kernels behind torch.library, fake and autograd.

Each op takes batched (N, C, *spatial) tensors already checked by functional/unpool_fractional.py;
``register_fake`` builds outputs with the real ones' shapes and strides (shared helpers).

Autograd graph (unpooling is linear in its input):
    max_unpool -> max_unpool_backward (gather at the indices) -> max_unpool (double backward)
"""

from __future__ import annotations

from torch import Tensor

from ..kernels import unpool
from .boundary import tgpool_op
from .window import _require_triton


def _check(x: Tensor, indices: Tensor, output_size: list[int], channels_last: bool) -> None:
    """Before every call, planned or not: CPU indices are checked, as torch's CPU kernel does
    (free there; a device read on CUDA would cost a host synchronisation)."""
    _require_triton("max_unpool", x, indices)
    if indices.device.type == "cpu":
        unpool.check_indices_in_range(indices, output_size)


@tgpool_op("tgpool::max_unpool", host_check=_check)
def max_unpool(x: Tensor, indices: Tensor, output_size: list[int], channels_last: bool) -> Tensor:
    """Zeros of spatial size ``output_size`` with x[n, c, p] stored at indices[n, c, p];
    ``channels_last``: the output's memory format (torch's choice, made by the caller)."""
    _require_triton("max_unpool", x, indices)
    return unpool.forward(x, indices, output_size, channels_last)


@max_unpool.register_fake
def _(x, indices, output_size, channels_last):
    return unpool.empty_output(x, output_size, channels_last)


def _setup(ctx, inputs, output):
    _x, indices, output_size, channels_last = inputs
    ctx.save_for_backward(indices)


def _backward(ctx, grad_out):
    (indices,) = ctx.saved_tensors
    return max_unpool_backward(grad_out, indices), None, None, None


max_unpool.register_autograd(_backward, setup_context=_setup)


@tgpool_op("tgpool::max_unpool_backward")
def max_unpool_backward(grad_out: Tensor, indices: Tensor) -> Tensor:
    """grad_in[n, c, p] = grad_out[n, c, indices[n, c, p]] (0 where the index is outside the
    output), contiguous like torch's: a gather, deterministic."""
    _require_triton("max_unpool_backward", grad_out, indices)
    return unpool.backward(grad_out, indices)


@max_unpool_backward.register_fake
def _(grad_out, indices):
    return unpool.empty_grad(grad_out, indices)


def _backward_setup(ctx, inputs, output):
    grad_out, indices = inputs
    ctx.output_size = list(grad_out.shape[2:])
    ctx.save_for_backward(indices)


def _double_backward(ctx, grad_grad_in):
    # the backward is linear in grad_out: its derivative is unpooling again (torch's formula)
    (indices,) = ctx.saved_tensors
    return max_unpool(grad_grad_in, indices, ctx.output_size, False), None


max_unpool_backward.register_autograd(_double_backward, setup_context=_backward_setup)
