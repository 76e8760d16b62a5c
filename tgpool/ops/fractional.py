"""The ``tgpool::fractional_max_pool`` custom ops: Triton kernels behind torch.library.

Both take batched (N, C, *spatial) tensors already checked by functional/unpool_fractional.py and
the per-plane samples (N', C, ndim) in the input's dtype; ``register_fake`` builds outputs with the
real ones' shapes and strides (shared helpers).

Autograd graph:
    fractional_max_pool -> fractional_max_pool_backward (gather by argmax)
                        -> index_gather (double backward: grad_grad_in read at the argmax)
"""

from __future__ import annotations

from torch import Tensor

from ..kernels import fractional as fractional_pool
from .boundary import tgpool_op
from .window import _require_triton, index_gather


@tgpool_op("tgpool::fractional_max_pool")
def fractional_max_pool(
    x: Tensor, samples: Tensor, kernel_size: list[int], output_size: list[int]
) -> tuple[Tensor, Tensor]:
    """(maxima, int64 flat spatial argmax) of batched ``x`` over the windows ``samples`` pick."""
    _require_triton("fractional_max_pool", x, samples)
    return fractional_pool.forward(x, samples.contiguous(), kernel_size, output_size)


@fractional_max_pool.register_fake
def _(x, samples, kernel_size, output_size):
    return fractional_pool.empty_outputs(x, output_size)


def _setup(ctx, inputs, output):
    x, samples, kernel_size, output_size = inputs
    ctx.kernel_size = kernel_size
    ctx.input_size = list(x.shape)
    ctx.save_for_backward(output[1], samples)
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad_out, _grad_indices):
    indices, samples = ctx.saved_tensors
    grad_in = fractional_max_pool_backward(
        grad_out, indices, samples, ctx.input_size, ctx.kernel_size
    )
    return grad_in, None, None, None


fractional_max_pool.register_autograd(_backward, setup_context=_setup)


@tgpool_op("tgpool::fractional_max_pool_backward")
def fractional_max_pool_backward(
    grad_out: Tensor,
    indices: Tensor,
    samples: Tensor,
    input_size: list[int],
    kernel_size: list[int],
) -> Tensor:
    """Gradient of the input: each position gathers, in a fixed order, the gradients of the
    outputs whose windows cover it and chose it (deterministic, no atomics); contiguous."""
    _require_triton("fractional_max_pool_backward", grad_out, indices, samples)
    return fractional_pool.backward(
        grad_out, indices, samples.contiguous(), input_size, kernel_size
    )


@fractional_max_pool_backward.register_fake
def _(grad_out, indices, samples, input_size, kernel_size):
    return fractional_pool.empty_grad(input_size, grad_out)


def _backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _double_backward(ctx, grad_grad_in):
    # the backward is linear in grad_out: its derivative reads grad_grad_in at the argmax
    (indices,) = ctx.saved_tensors
    return index_gather(grad_grad_in, indices), None, None, None, None


fractional_max_pool_backward.register_autograd(_double_backward, setup_context=_backward_setup)
