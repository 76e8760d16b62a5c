"""The adaptive-pooling custom ops: Triton kernels behind torch.library, with fake and autograd.

Each op takes a batched (N, C, *spatial) tensor and an output size already checked by
functional/adaptive.py. ``register_fake`` allocates outputs with the same shapes and strides as
the real ones (adaptive_pool.empty_outputs / empty_grad serve both). An output size of 1 in every
dim runs tgpool's global-pool kernels inside the same ops (see kernels/adaptive.py).

Autograd graph:
    adaptive_max_pool -> adaptive_max_pool_backward (gather by argmax) -> index_gather
    adaptive_avg_pool -> adaptive_avg_pool_backward (gather / window size) -> adaptive_avg_pool
"""

from __future__ import annotations

from torch import Tensor

from ..kernels import adaptive as launcher
from .boundary import tgpool_op
from .window import _require_triton, index_gather

# --- max pooling ----------------------------------------------------------------------------------


@tgpool_op("tgpool::adaptive_max_pool")
def adaptive_max_pool(
    x: Tensor, output_size: list[int], with_indices: bool
) -> tuple[Tensor, Tensor]:
    """Adaptive max pooling of batched ``x``; the int64 flat spatial indices are empty unless
    ``with_indices``."""
    _require_triton("adaptive_max_pool", x)
    return launcher.forward(x, output_size, "max", with_indices)


@adaptive_max_pool.register_fake
def _(x, output_size, with_indices):
    return launcher.empty_outputs(x, output_size, "max", with_indices)


def _max_setup(ctx, inputs, output):
    x, output_size, with_indices = inputs
    ctx.output_size = output_size
    ctx.input_size = list(x.shape)
    ctx.channels_last = launcher.grad_channels_last(x, "max", output_size)
    ctx.with_indices = with_indices
    # The indices when the forward wrote them; otherwise the input, to recompute them.
    ctx.save_for_backward(output[1] if with_indices else x)
    ctx.mark_non_differentiable(output[1])


def _max_backward(ctx, grad_out, _grad_indices):
    (saved,) = ctx.saved_tensors
    indices = saved if ctx.with_indices else adaptive_max_pool(saved, ctx.output_size, True)[1]
    grad_in = adaptive_max_pool_backward(grad_out, indices, ctx.input_size, ctx.channels_last)
    return grad_in, None, None


adaptive_max_pool.register_autograd(_max_backward, setup_context=_max_setup)


@tgpool_op("tgpool::adaptive_max_pool_backward")
def adaptive_max_pool_backward(
    grad_out: Tensor, indices: Tensor, input_size: list[int], channels_last: bool
) -> Tensor:
    """Gradient of adaptive_max_pool's input: each input position gathers the gradients of the
    outputs that chose it (deterministic, no atomics); ``channels_last``: its memory format."""
    _require_triton("adaptive_max_pool_backward", grad_out, indices)
    return launcher.backward(grad_out, indices, input_size, channels_last, "max")


@adaptive_max_pool_backward.register_fake
def _(grad_out, indices, input_size, channels_last):
    return launcher.empty_grad(input_size, channels_last, grad_out)


def _max_backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _max_double_backward(ctx, grad_grad_in):
    # the backward is linear in grad_out: its derivative reads grad_grad_in at the argmax
    (indices,) = ctx.saved_tensors
    return index_gather(grad_grad_in, indices), None, None, None


adaptive_max_pool_backward.register_autograd(
    _max_double_backward, setup_context=_max_backward_setup
)


# --- average pooling ------------------------------------------------------------------------------


@tgpool_op("tgpool::adaptive_avg_pool")
def adaptive_avg_pool(x: Tensor, output_size: list[int]) -> Tensor:
    """Adaptive average pooling of batched ``x``."""
    _require_triton("adaptive_avg_pool", x)
    return launcher.forward(x, output_size, "avg", False)[0]


@adaptive_avg_pool.register_fake
def _(x, output_size):
    return launcher.empty_outputs(x, output_size, "avg", False)[0]


def _avg_setup(ctx, inputs, output):
    x, output_size = inputs
    ctx.input_size = list(x.shape)
    ctx.channels_last = launcher.grad_channels_last(x, "avg", output_size)


def _avg_backward(ctx, grad_out):
    return adaptive_avg_pool_backward(grad_out, ctx.input_size, ctx.channels_last), None


adaptive_avg_pool.register_autograd(_avg_backward, setup_context=_avg_setup)


@tgpool_op("tgpool::adaptive_avg_pool_backward")
def adaptive_avg_pool_backward(
    grad_out: Tensor, input_size: list[int], channels_last: bool
) -> Tensor:
    """Gradient of adaptive_avg_pool's input: each input position gathers grad / window size of
    the outputs whose windows cover it (deterministic, no atomics)."""
    _require_triton("adaptive_avg_pool_backward", grad_out)
    return launcher.backward(grad_out, None, input_size, channels_last, "avg")


@adaptive_avg_pool_backward.register_fake
def _(grad_out, input_size, channels_last):
    return launcher.empty_grad(input_size, channels_last, grad_out)


def _avg_backward_setup(ctx, inputs, output):
    ctx.output_size = list(inputs[0].shape[2:])


def _avg_double_backward(ctx, grad_grad_in):
    # the backward is the adjoint of the linear map adaptive_avg_pool: its derivative is the pool
    return adaptive_avg_pool(grad_grad_in, ctx.output_size), None, None


adaptive_avg_pool_backward.register_autograd(
    _avg_double_backward, setup_context=_avg_backward_setup
)
