"""The global-pooling custom ops: ``tgpool::global_pool`` and ``tgpool::global_pool_backward``.

One forward op serves dense inputs (``layout`` channels_first / channels_last, optional bool
mask) and packed segments (``layout`` "ragged", with offsets). ``reduction`` is what the kernel
computes: max, sum, avg, lp, gem, or "avg+max" (both in one pass, for avgmax and catavgmax).

Outputs, always four so the schema is fixed (unused ones are empty):
    out      (B, C)  the reduction (avg for "avg+max"), in the input's dtype
    maxes    (B, C)  the max of "avg+max"
    indices  (B, C)  int64 argmax, when with_indices
    aux      (B, C)  sum of max(x, eps)**p * log(max(x, eps)) (accumulator dtype), for GeM's
                     p gradient, when with_aux

Autograd: x's gradient is ``global_pool_backward`` (a gather: every input position reads its
row's coefficients; no atomics); GeM's p gradient is a deterministic torch reduction of aux.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels import global_pool as launcher
from .boundary import tgpool_op
from .window import _require_triton


@tgpool_op("tgpool::global_pool")
def global_pool(
    x: Tensor,
    mask: Tensor | None,
    offsets: Tensor | None,
    p: Tensor | None,
    reduction: str,
    layout: str,
    p_value: float,
    eps: float,
    with_indices: bool,
    with_aux: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Global pooling of ``x`` (see the module docstring)."""
    _require_triton("global_pool", x)
    return launcher.forward(
        x, mask, offsets, p, reduction, layout, p_value, eps, with_indices, with_aux
    )


@global_pool.register_fake
def _(x, mask, offsets, p, reduction, layout, p_value, eps, with_indices, with_aux):
    return launcher.empty_outputs(x, offsets, reduction, layout, with_indices, with_aux)


def _setup(ctx, inputs, output):
    x, mask, offsets, p, reduction, layout, p_value, eps, with_indices, with_aux = inputs
    out, _maxes, indices, aux = output
    ctx.args = (reduction, layout, p_value, eps)
    ctx.with_indices = with_indices
    ctx.with_aux = with_aux
    ctx.save_for_backward(x, mask, offsets, p, out, indices, aux)
    ctx.mark_non_differentiable(indices, aux)


def _backward(ctx, grad_out, grad_maxes, _grad_indices, _grad_aux):
    x, mask, offsets, p, out, indices, aux = ctx.saved_tensors
    reduction, layout, p_value, eps = ctx.args
    if "max" in reduction and not ctx.with_indices:  # recompute the argmax
        indices = global_pool(x, mask, offsets, p, reduction, layout, p_value, eps, True, False)[2]
    grad_x = grad_p = None
    if ctx.needs_input_grad[0]:
        grad_x = global_pool_backward(
            grad_out,
            grad_maxes,
            x,
            mask,
            offsets,
            indices,
            out,
            p,
            reduction,
            layout,
            p_value,
            eps,
        )
    if ctx.needs_input_grad[3]:
        if not ctx.with_aux:
            aux = global_pool(x, mask, offsets, p, reduction, layout, p_value, eps, False, True)[3]
        counts = launcher.row_counts(x, mask, offsets, layout)
        grad_p = gem_p_grad(grad_out, out, aux, counts, p)
    return grad_x, None, None, grad_p, None, None, None, None, None, None


global_pool.register_autograd(_backward, setup_context=_setup)


def gem_p_grad(grad_out: Tensor, out: Tensor, aux: Tensor, counts: Tensor, p: Tensor) -> Tensor:
    """d loss / d p of GeM, out = m ** (1/p) with m = S1 / n, S1 = sum c**p, aux = sum c**p ln c:

        d out / d p = out * (aux / (S1 * p) - ln(m) / p**2),   S1 = m * n = out**p * n

    summed over every (b, c) in a fixed order (deterministic). Empty rows contribute 0."""
    acc = aux.dtype
    pp = p.detach().to(acc).reshape(())
    o = out.detach().to(acc)
    m = o.pow(pp)
    n = counts.to(acc)[:, None]
    live = (n > 0) & (m > 0)
    s1 = torch.where(live, m * n, torch.ones_like(m))
    log_m = torch.log(torch.where(live, m, torch.ones_like(m)))
    d = o * (aux / (s1 * pp) - log_m / (pp * pp))
    d = torch.where(live, d, torch.zeros_like(d))
    return (grad_out.to(acc) * d).sum().reshape(p.shape).to(p.dtype)


@tgpool_op("tgpool::global_pool_backward")
def global_pool_backward(
    grad_out: Tensor,
    grad_maxes: Tensor | None,
    x: Tensor,
    mask: Tensor | None,
    offsets: Tensor | None,
    indices: Tensor,
    out: Tensor,
    p: Tensor | None,
    reduction: str,
    layout: str,
    p_value: float,
    eps: float,
) -> Tensor:
    """Gradient of global_pool's x: each position reads its row's gradient coefficients."""
    _require_triton("global_pool_backward", grad_out, x)
    return launcher.backward(
        grad_out, grad_maxes, x, mask, offsets, indices, out, p, reduction, layout, p_value, eps
    )


@global_pool_backward.register_fake
def _(grad_out, grad_maxes, x, mask, offsets, indices, out, p, reduction, layout, p_value, eps):
    return launcher.empty_grad(x, layout)


def _backward_setup(ctx, inputs, output):
    grad_out, grad_maxes, x, mask, offsets, indices, out, p, reduction, layout, p_value, eps = (
        inputs
    )
    ctx.args = (reduction, layout, p_value, eps)
    ctx.save_for_backward(mask, offsets, indices)


def _double_backward(ctx, grad_grad_in):
    """The backward is linear in the output's gradient: for sum and avg its derivative is the
    same pooling of grad_grad_in; for max, grad_grad_in read at the argmax. lp and GeM's
    backward also depends on x non-linearly: not supported."""
    mask, offsets, indices = ctx.saved_tensors
    reduction, layout, p_value, eps = ctx.args
    if reduction in ("lp", "gem"):
        raise NotImplementedError(
            f"tgpool: double backward of global {reduction} pooling is not supported"
        )
    kernel = "avg" if reduction == "avg+max" else reduction
    grad_out = grad_maxes = None
    if kernel in ("sum", "avg"):
        args = (mask, offsets, None, kernel, layout, p_value, eps, False, False)
        grad_out = global_pool(grad_grad_in, *args)[0]
    if "max" in reduction:
        picked = launcher.read_at_argmax(grad_grad_in, offsets, indices, layout)
        if reduction == "max":
            grad_out = picked
        else:
            grad_maxes = picked
    return grad_out, grad_maxes, None, None, None, None, None, None, None, None, None, None


global_pool_backward.register_autograd(_double_backward, setup_context=_backward_setup)
