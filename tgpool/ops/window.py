"""The ``tgpool::`` custom ops: Triton kernels behind torch.library, with fake and autograd.

Each op takes a batched (N, C, *spatial) tensor and torch-style window arguments already checked
by functional/window.py. ``padding`` holds one value per spatial dim (torch's symmetric padding) or
two (before..., after...): the asymmetric padding of ``padding="same"``. ``register_fake`` builds
outputs with the same shapes and strides as the real ones (one helper serves both), so
torch.compile and torch.export trace them exactly. lp pooling's ops are in ops/lp.py.

Autograd graph:
    max_pool          -> max_pool_backward  (gather by argmax) -> index_gather (double backward)
    avg_pool          -> avg_pool_backward  (gather / divisor)  -> avg_pool      (double backward)
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import runtime
from ..kernels import window as window_pool
from ..spec import WindowPoolSpec, window_spec
from .boundary import tgpool_op


def _require_triton(op: str, *tensors: Tensor) -> None:
    for t in tensors:
        if not runtime.uses_triton(t):
            raise RuntimeError(
                f"tgpool::{op} runs generated Triton kernels: it needs CUDA tensors, or CPU "
                f"tensors with TRITON_INTERPRET=1 set before triton is first imported "
                f"(got a tensor on {t.device})"
            )


def split_padding(padding, ndim: int) -> tuple[tuple, tuple | None]:
    """(before, after or None) from an op's ``padding`` list (ndim or 2 * ndim values)."""
    padding = tuple(padding)
    if len(padding) == 2 * ndim:
        return padding[:ndim], padding[ndim:]
    return padding, None


def _max_spec(kernel_size, stride, padding, dilation, ceil_mode) -> WindowPoolSpec:
    before, after = split_padding(padding, len(kernel_size))
    return window_spec(
        "max",
        len(kernel_size),
        tuple(kernel_size),
        tuple(stride),
        before,
        tuple(dilation),
        ceil_mode,
        padding_end=after,
    )


def _avg_spec(
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
) -> WindowPoolSpec:
    n = len(kernel_size)
    before, after = split_padding(padding, n)
    return window_spec(
        "avg",
        n,
        tuple(kernel_size),
        tuple(stride),
        before,
        (1,) * n,
        ceil_mode,
        count_include_pad,
        divisor_override,
        padding_end=after,
    )


# --- max pooling ----------------------------------------------------------------------------------


@tgpool_op("tgpool::max_pool")
def max_pool(
    x: Tensor,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    ceil_mode: bool,
    with_indices: bool,
) -> tuple[Tensor, Tensor]:
    """Max pooling of batched ``x``; the indices are empty unless ``with_indices``."""
    _require_triton("max_pool", x)
    spec = _max_spec(kernel_size, stride, padding, dilation, ceil_mode)
    return window_pool.forward(x, spec, with_indices)


@max_pool.register_fake
def _(x, kernel_size, stride, padding, dilation, ceil_mode, with_indices):
    spec = _max_spec(kernel_size, stride, padding, dilation, ceil_mode)
    out = window_pool.empty_output(x, spec)
    if with_indices:
        return out, window_pool.empty_output(x, spec, torch.int64)
    return out, out.new_empty(0, dtype=torch.int64)


def _max_pool_setup(ctx, inputs, output):
    x, kernel_size, stride, padding, dilation, ceil_mode, with_indices = inputs
    ctx.window = (kernel_size, stride, padding, dilation, ceil_mode)
    ctx.input_size = list(x.shape)
    ctx.channels_last = window_pool.returns_channels_last(x, "max", len(kernel_size))
    ctx.with_indices = with_indices
    # Indices are kept when the forward wrote them; otherwise the input, to recompute them.
    ctx.save_for_backward(output[1] if with_indices else x)
    ctx.mark_non_differentiable(output[1])


def _max_pool_backward(ctx, grad_out, _grad_indices):
    (saved,) = ctx.saved_tensors
    indices = saved if ctx.with_indices else max_pool(saved, *ctx.window, True)[1]
    grad_in = max_pool_backward(grad_out, indices, ctx.input_size, ctx.channels_last, *ctx.window)
    return grad_in, None, None, None, None, None, None


max_pool.register_autograd(_max_pool_backward, setup_context=_max_pool_setup)


@tgpool_op("tgpool::max_pool_backward")
def max_pool_backward(
    grad_out: Tensor,
    indices: Tensor,
    input_size: list[int],
    channels_last: bool,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    ceil_mode: bool,
) -> Tensor:
    """Gradient of max_pool's input: each input position gathers the gradients of the outputs
    that chose it (deterministic, no atomics)."""
    _require_triton("max_pool_backward", grad_out, indices)
    spec = _max_spec(kernel_size, stride, padding, dilation, ceil_mode)
    return window_pool.backward(grad_out, indices, input_size, channels_last, spec)


@max_pool_backward.register_fake
def _(
    grad_out, indices, input_size, channels_last, kernel_size, stride, padding, dilation, ceil_mode
):
    return window_pool.empty_like_input(input_size, channels_last, grad_out)


def _max_pool_backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _max_pool_double_backward(ctx, grad_grad_in):
    (indices,) = ctx.saved_tensors
    return (index_gather(grad_grad_in, indices),) + (None,) * 8


max_pool_backward.register_autograd(
    _max_pool_double_backward, setup_context=_max_pool_backward_setup
)


@tgpool_op("tgpool::index_gather")
def index_gather(src: Tensor, indices: Tensor) -> Tensor:
    """out[n, c, o] = src[n, c, indices[n, c, o]], indices flat over src's spatial dims."""
    _require_triton("index_gather", src, indices)
    return window_pool.index_gather(src, indices)


@index_gather.register_fake
def _(src, indices):
    return torch.empty_strided(indices.shape, indices.stride(), dtype=src.dtype, device=src.device)


# --- average pooling ------------------------------------------------------------------------------


@tgpool_op("tgpool::avg_pool")
def avg_pool(
    x: Tensor,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> Tensor:
    """Average pooling of batched ``x`` (torch's divisor rules)."""
    _require_triton("avg_pool", x)
    spec = _avg_spec(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return window_pool.forward(x, spec, False)[0]


@avg_pool.register_fake
def _(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    spec = _avg_spec(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return window_pool.empty_output(x, spec)


def _avg_pool_setup(ctx, inputs, output):
    x, *window = inputs
    ctx.window = window
    ctx.input_size = list(x.shape)
    ctx.channels_last = window_pool.returns_channels_last(x, "avg", len(window[0]))


def _avg_pool_backward(ctx, grad_out):
    grad_in = avg_pool_backward(grad_out, ctx.input_size, ctx.channels_last, *ctx.window)
    return grad_in, None, None, None, None, None, None


avg_pool.register_autograd(_avg_pool_backward, setup_context=_avg_pool_setup)


@tgpool_op("tgpool::avg_pool_backward")
def avg_pool_backward(
    grad_out: Tensor,
    input_size: list[int],
    channels_last: bool,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> Tensor:
    """Gradient of avg_pool's input: each input position gathers grad / divisor of the outputs
    whose windows cover it (deterministic, no atomics)."""
    _require_triton("avg_pool_backward", grad_out)
    spec = _avg_spec(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return window_pool.backward(grad_out, None, input_size, channels_last, spec)


@avg_pool_backward.register_fake
def _(
    grad_out,
    input_size,
    channels_last,
    kernel_size,
    stride,
    padding,
    ceil_mode,
    count_include_pad,
    divisor_override,
):
    return window_pool.empty_like_input(input_size, channels_last, grad_out)


def _avg_pool_backward_setup(ctx, inputs, output):
    ctx.window = inputs[3:]


def _avg_pool_double_backward(ctx, grad_grad_in):
    # avg_pool_backward is the adjoint of the linear map avg_pool: its derivative is avg_pool.
    return (avg_pool(grad_grad_in, *ctx.window),) + (None,) * 8


avg_pool_backward.register_autograd(
    _avg_pool_double_backward, setup_context=_avg_pool_backward_setup
)
