"""Fused SPPF (YOLOv5/v8's spatial pyramid pooling, fast): spec -> kernel -> launch.

    sppf(x, k) = cat([x, y1, y2, y3], 1),  y1 = max_pool2d(x, k, 1, k // 2),  y2 = pool(y1), ...

A max pool of a k x k window (stride 1, 'same' padding r = k // 2, -inf padding) of a max pool is
a max pool of the (2k - 1) x (2k - 1) window with padding 2r, borders included: the union of the
radius-r windows around the positions within radius r of p, clipped to the input, is the
radius-2r window around p clipped to the input. So y2 and y3 are single pools of radius 2r and 3r
of x, and one kernel computes all four parts from one read of the input rows (a halo of 3r).

Indices: the forward's argmax of each pool is torch's for the single pool of that window (first
maximum in row-major order, the last NaN). torch's chain instead routes y2's and y3's gradients
through y1's (and y2's) argmax: see ``TIE_RULE``. The backward is a gather (no atomics).
"""

from __future__ import annotations

import torch
import triton

from ..spec import CHANNELS_LAST, DTYPES, layout_of, output_strides
from .common import KernelLaunch

FORWARD = "sppf_fwd"
BACKWARD = "sppf_bwd"

TIE_RULE = """\
Values are always torch's. The x part and the y1 part's gradient are always torch's (y1 is one
max_pool2d with torch's rule). y2's and y3's gradients reach the same input position as torch's
chain whenever the maximum of each (2k-1)^2 / (3k-2)^2 window is attained at one position only
(tie-free inputs, or ties only between positions of different windows); when a window holds its
maximum (or several NaNs) at two or more positions, tgpool sends the gradient to the first of them
in row-major order (the last NaN), as max_pool2d with that window would, while torch's chain picks
the first maximum of y1/y2 inside the window and then that one's first maximum, which can be
another of the tied positions. Sums of the gradient are the same either way."""


def radii(kernel_size: int) -> tuple[int, int, int]:
    r = kernel_size // 2
    return r, 2 * r, 3 * r


def index_dtype(x: torch.Tensor) -> torch.dtype:
    """int32 flat indices (h * W + w) unless a plane has 2^31 positions or more."""
    return torch.int32 if x.shape[2] * x.shape[3] < 2**31 else torch.int64


def is_channels_last(x: torch.Tensor) -> bool:
    from ..spec import is_channels_last as cl

    return cl(x, 2)


def empty_outputs(x: torch.Tensor, with_indices: bool):
    """(out, indices) as the op returns them: out (N, 4C, H, W) in x's memory format (torch.cat
    of channels-last pools is channels-last), indices (3, N, C, H, W) or empty."""
    N, C, H, W = x.shape
    cl = is_channels_last(x)
    shape = (N, 4 * C, H, W)
    out = torch.empty_strided(shape, output_strides(shape, cl), dtype=x.dtype, device=x.device)
    if not with_indices:
        return out, x.new_empty(0, dtype=index_dtype(x))
    plane = output_strides(tuple(x.shape), cl)
    idx = torch.empty_strided(
        (3, *x.shape), (x.numel(), *plane), dtype=index_dtype(x), device=x.device
    )
    return out, idx


def empty_grad_input(input_size, channels_last: bool, like: torch.Tensor) -> torch.Tensor:
    strides = output_strides(input_size, channels_last)
    return torch.empty_strided(tuple(input_size), strides, dtype=like.dtype, device=like.device)


def _context(kernel_size: int, x: torch.Tensor, family: str, **extra) -> dict:
    tile = "channels" if layout_of(x, 2) == CHANNELS_LAST else "rows"
    r1, r2, r3 = radii(kernel_size)
    dtype = DTYPES[x.dtype]
    return {
        "R1": r1,
        "R2": r2,
        "R3": r3,
        "tile": tile,
        "acc": "tl.float64" if dtype == "float64" else "tl.float32",
        "variant": f"sppf k{kernel_size} {dtype} {tile}",
        **extra,
    }


def _launch(family, ctx, args_head, args_tail, x, problem_dtype, H, W, C, N) -> KernelLaunch:
    rows = ctx["tile"] == "rows"
    inner = W if rows else C
    problem = {"outer": H, "inner": inner, "inner_step": 1, "dtype": problem_dtype}

    def grid(cfg):
        n_hb = triton.cdiv(H, cfg.block_outer)
        first = N * C * n_hb if rows else N * n_hb * W
        return (first, triton.cdiv(inner, cfg.block_inner))

    return KernelLaunch(
        family,
        ctx,
        ctx["variant"],
        (*args_head, *args_tail),
        problem,
        grid=grid,
        meta=lambda cfg: {"BLOCK_H": cfg.block_outer, "BLOCK_I": cfg.block_inner},
    )


def plan_forward(x: torch.Tensor, kernel_size: int, with_indices: bool):
    """(out, indices, launch) for (N, C, H, W) ``x`` (meta tensors included); launch None when
    the output is empty."""
    out, idx = empty_outputs(x, with_indices)
    if out.numel() == 0:
        return out, idx, None
    N, C, H, W = x.shape
    suffix = "_idx" if with_indices else ""
    ctx = _context(
        kernel_size,
        x,
        FORWARD,
        with_indices=with_indices,
        index_dtype="tl.int32" if index_dtype(x) == torch.int32 else "tl.int64",
    )
    ctx["kernel_name"] = f"sppf_fwd_{ctx['tile']}{suffix}"
    strides_i = idx.stride() if with_indices else (0,) * 5
    plan = _launch(
        FORWARD,
        ctx,
        (x, out, idx if with_indices else out, C, H, W),
        (*x.stride(), *out.stride(), *strides_i),
        x,
        DTYPES[x.dtype],
        H,
        W,
        C,
        N,
    )
    return out, idx, plan


def forward(x: torch.Tensor, kernel_size: int, with_indices: bool):
    out, idx, plan = plan_forward(x, kernel_size, with_indices)
    if plan is not None:
        plan.run()
    return out, idx


def plan_backward(grad_out, indices, kernel_size: int, input_size, channels_last: bool):
    """(grad_in, launch) for the gradient of the (N, C, H, W) input."""
    grad_in = empty_grad_input(input_size, channels_last, grad_out)
    if grad_in.numel() == 0:
        return grad_in, None
    N, C, H, W = grad_in.shape
    ctx = _context(kernel_size, grad_in, BACKWARD)
    ctx["kernel_name"] = f"sppf_bwd_{ctx['tile']}"
    plan = _launch(
        BACKWARD,
        ctx,
        (grad_out, indices, grad_in, C, H, W),
        (*grad_out.stride(), *indices.stride(), *grad_in.stride()),
        grad_in,
        DTYPES[grad_in.dtype],
        H,
        W,
        C,
        N,
    )
    return grad_in, plan


def backward(grad_out, indices, kernel_size: int, input_size, channels_last: bool):
    grad_in, plan = plan_backward(grad_out, indices, kernel_size, input_size, channels_last)
    if plan is not None:
        plan.run()
    return grad_in


def plan_sppf_op(
    op: str,
    input_shape,
    dtype=torch.float16,
    layout: str = "channels_first",
    *,
    direction: str = "fwd",
    with_indices: bool = False,
    kernel_size: int = 5,
) -> list[KernelLaunch]:
    """The launches of ``sppf`` on a meta input (aot.plan_window_op's signature): "fwd" the
    forward, "bwd" the forward writing indices (autograd's) and the gather."""
    if op != "sppf":
        raise ValueError(f"plan_sppf_op plans sppf, not {op!r}")
    x = torch.empty(tuple(input_shape), dtype=dtype, device="meta")
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    if direction == "fwd":
        return [plan_forward(x, kernel_size, with_indices)[2]]
    out, idx, fwd = plan_forward(x, kernel_size, True)
    grad_out = torch.empty_like(out)
    _, bwd = plan_backward(grad_out, idx, kernel_size, list(x.shape), is_channels_last(x))
    return [fwd, bwd]
