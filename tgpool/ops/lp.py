"""``tgpool::lp_pool``: power-average pooling as one window-pool kernel, behind torch.library.

torch's lp_pool is a composite, ``avg_pool(x.pow(p)) -> sign * relu(abs) -> .mul(prod(k)) ->
.pow(1 / p)`` (max_pool of |x| for p = inf, minus max_pool of -|x| for -inf). Here one forward
kernel reads each input element once and writes the output (and, when autograd needs it, its
state: the window sums of x ** p, or the argmax of +-|x|); one backward kernel gathers the input
gradient (deterministic, no atomics). Values and gradients are the composite's:

    out = (sum over the window of x ** p * prod(kernel_size) / count) ** (1 / p)

- ``count`` is the number of input elements in the window: ceil_mode's partial windows are
  divided by what they hold and multiplied by the full window size, as torch's avg_pool does.
- p = inf is max |x|, p = -inf min |x|; their gradient goes to the first extremum times sign(x).
- Negative sums (odd p, negative inputs) give NaN unless 1 / p is an integer (p = 1: the sum);
  a negative input with a non-integer p gives NaN (x ** 2.5), as torch's pow.
- A window whose sum is 0 has gradient 0 (torch's relu in the composite), never the inf / NaN
  of 0 ** (1 / p - 1).
- Computed in fp32 (fp64 for fp64) from the input and rounded once; torch rounds every stage to
  the input dtype, so a float16 x ** p beyond 65504 is inf in torch and finite here.
- norm_type 0 raises ZeroDivisionError (torch's 1 / p), NaN ValueError (torch returns NaNs);
  double backward raises NotImplementedError.

Autograd graph:
    lp_pool -> lp_pool_backward (gather: sums or argmax, and the input); no double backward
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels import window as window_pool
from ..spec import WindowPoolSpec, is_channels_last, window_spec
from .boundary import tgpool_op
from .window import _require_triton


def lp_spec(norm_type: float, kernel_size, stride, ceil_mode: bool) -> WindowPoolSpec:
    n = len(kernel_size)
    return window_spec(
        "lp", n, tuple(kernel_size), tuple(stride), 0, 1, ceil_mode, norm_type=norm_type
    )


@tgpool_op("tgpool::lp_pool")
def lp_pool(
    x: Tensor,
    norm_type: float,
    kernel_size: list[int],
    stride: list[int],
    ceil_mode: bool,
    with_state: bool,
) -> tuple[Tensor, Tensor]:
    """lp pooling of batched ``x``; the state (window sums of x ** p, or the argmax for +-inf)
    is empty unless ``with_state``."""
    _require_triton("lp_pool", x)
    spec = lp_spec(norm_type, kernel_size, stride, ceil_mode)
    return window_pool.forward(x, spec, with_state)


@lp_pool.register_fake
def _(x, norm_type, kernel_size, stride, ceil_mode, with_state):
    spec = lp_spec(norm_type, kernel_size, stride, ceil_mode)
    out = window_pool.empty_output(x, spec)
    if with_state:
        return out, window_pool.empty_output(x, spec, window_pool.state_dtype(spec, x.dtype))
    return out, out.new_empty(0, dtype=torch.int64)


def _lp_pool_setup(ctx, inputs, output):
    x, norm_type, kernel_size, stride, ceil_mode, with_state = inputs
    ctx.window = (norm_type, kernel_size, stride, ceil_mode)
    ctx.with_state = with_state
    ctx.save_for_backward(x, output[1] if with_state else None)
    ctx.mark_non_differentiable(output[1])


def _lp_pool_backward(ctx, grad_out, _grad_state):
    x, state = ctx.saved_tensors
    if not ctx.with_state:  # the forward ran without autograd's state: one more forward
        state = lp_pool(x, *ctx.window, True)[1]
    grad_in = lp_pool_backward(grad_out, state, x, *ctx.window)
    return grad_in, None, None, None, None, None


lp_pool.register_autograd(_lp_pool_backward, setup_context=_lp_pool_setup)


@tgpool_op("tgpool::lp_pool_backward")
def lp_pool_backward(
    grad_out: Tensor,
    state: Tensor,
    x: Tensor,
    norm_type: float,
    kernel_size: list[int],
    stride: list[int],
    ceil_mode: bool,
) -> Tensor:
    """Gradient of lp_pool's input, in the input's memory format (as torch's composite returns
    it): each position gathers the coefficients of the windows covering it (for +-inf, of those
    whose argmax it is) and multiplies by p * x ** (p - 1) (sign(x) for +-inf)."""
    _require_triton("lp_pool_backward", grad_out, state, x)
    spec = lp_spec(norm_type, kernel_size, stride, ceil_mode)
    channels_last = _grad_channels_last(x, spec)
    return window_pool.backward(grad_out, state, list(x.shape), channels_last, spec, x)


def _grad_channels_last(x: Tensor, spec: WindowPoolSpec) -> bool:
    return is_channels_last(x, spec.ndim)


@lp_pool_backward.register_fake
def _(grad_out, state, x, norm_type, kernel_size, stride, ceil_mode):
    spec = lp_spec(norm_type, kernel_size, stride, ceil_mode)
    return window_pool.empty_like_input(list(x.shape), _grad_channels_last(x, spec), grad_out)


def _lp_pool_double_backward(ctx, grad_grad_in):
    raise NotImplementedError("tgpool: double backward of lp pooling is not supported")


def _lp_pool_backward_setup(ctx, inputs, output):
    pass


lp_pool_backward.register_autograd(_lp_pool_double_backward, setup_context=_lp_pool_backward_setup)
