"""Window pooling: spec -> render context -> generated kernel -> launch config -> launch.

Tensors reach this module already checked (see functional/window.py) and batched (N, C, *spatial).
The kernels see every tensor as 5-D (N, C, D, H, W); 1-D and 2-D pools get neutral leading dims by
views, never copies, and every stride is passed explicitly, so any strided input is read in place.
"""

from __future__ import annotations

import torch
import triton

from ..spec import CHANNELS_LAST, WindowPoolSpec
from . import large_window
from .common import (  # noqa: F401  (window_pool.<name>: launchers, aot, tests)
    INNER_DIM,
    KernelLaunch,
    alignment,
    as_5d,
    coord_type,
    empty_like_input,
    empty_output,
    generated,
    returns_channels_last,
    scaled_strides,
    spatial_sizes,
    tiled_launch,
    used_stride,
    with_coordinates,
)
from .window_context import (  # noqa: F401  (window_pool.<name>: launchers, aot, tests)
    MAX_UNROLLED_TAPS,
    SEGMENT_STRIDES,
    backward_context,
    forward_context,
    lp_context,
    segment_taps,
    state_dtype,
)

FORWARD = "window_pool_fwd"
BACKWARD = "window_pool_bwd"
INDEX_GATHER = "index_gather"


def _window_launch(family, ctx, spec, args, problem) -> KernelLaunch:
    names = ("BLOCK_R", "BLOCK_W") if ctx["tile"] == "rows" else ("BLOCK_P", "BLOCK_C")
    return tiled_launch(family, ctx, spec, args, problem, names)


def plan_forward(x: torch.Tensor, spec: WindowPoolSpec, with_indices: bool):
    """(out, indices, launch) for batched ``x``: the outputs allocated like ``x`` (same device,
    meta included), launch None when there is nothing to compute."""
    spec = spec.with_tensor(x)
    out = empty_output(x, spec)
    with_indices = with_indices and spec.reduction in ("max", "lp")
    idx = (
        empty_output(x, spec, state_dtype(spec, x.dtype))
        if with_indices
        else out.new_empty(0, dtype=torch.int64)
    )
    if out.numel() == 0:
        return out, idx, None
    x5, o5 = as_5d(x), as_5d(out)
    N, C = x5.shape[:2]
    ID, IH, IW = spatial_sizes(x5)
    OD, OH, OW = spatial_sizes(o5)
    tile = "channels" if spec.layout == CHANNELS_LAST else "rows"
    inner_dim = INNER_DIM[tile]
    if tile == "rows":
        a_in, a_out = alignment(x5, inner_dim, IW), alignment(o5, inner_dim, OW)
        sizes = (C, ID, IH, IW // a_in, OD, OH, OW // a_out)
    else:  # C is both tensors' contiguous extent: one alignment for both
        a_in = a_out = min(alignment(x5, inner_dim, C), alignment(o5, inner_dim, C))
        sizes = (C // a_in, ID, IH, IW, OD, OH, OW)
    wide = ID * IH * IW > 2**31 - 1
    ctx = forward_context(spec, with_indices, a_in, a_out, wide_indices=wide)
    if tile == "rows":
        outer, inner, step = N * C * OD * OH, OW, ctx["SW"] if ctx["w_taps"] else 1
    else:
        outer, inner, step = N * OD * OH * OW, C, 1
    ctx = with_coordinates(ctx, outer)
    args = (
        x5,
        out,
        idx if with_indices else out,
        *sizes,
        outer,
        *scaled_strides(x5, inner_dim, a_in),
        *scaled_strides(o5, inner_dim, a_out),
    )
    problem = {
        "outer": outer,
        "inner": inner,
        "inner_step": step,
        "dtype": spec.dtype,
        "vector": tile == "channels" or bool(ctx["w_taps"]),
    }
    return out, idx, _window_launch(FORWARD, ctx, spec, args, problem)


def takes_large_window_path(spec: WindowPoolSpec) -> bool:
    """Max and avg windows that large_window.prefer picks (more than 64 taps over two or more
    axes) run its separable passes; lp and asymmetric ('same') padding stay on these kernels."""
    if spec.reduction not in ("max", "avg") or spec.padding_end is not None:
        return False
    return large_window.prefer(spec)


def forward(x: torch.Tensor, spec: WindowPoolSpec, with_indices: bool):
    """Pool batched ``x``; returns (out, indices) with indices empty unless asked for. For lp,
    ``with_indices`` asks for the backward's state instead (see state_dtype)."""
    if takes_large_window_path(spec):
        return large_window.forward(x, spec, with_indices)
    out, idx, kernel_launch = plan_forward(x, spec, with_indices)
    if kernel_launch is not None:
        kernel_launch.run()
    return out, idx


def plan_backward(
    grad_out: torch.Tensor,
    indices: torch.Tensor | None,
    input_shape,
    channels_last: bool,
    spec: WindowPoolSpec,
    x: torch.Tensor | None = None,
):
    """(grad_in, launch) with grad_in allocated (not filled), launch None when either side is
    empty. ``indices``: lp's forward state; ``x``: the batched input (lp only)."""
    grad_in = empty_like_input(input_shape, channels_last, grad_out)
    spec = spec.with_tensor(grad_in)
    if grad_in.numel() == 0 or grad_out.numel() == 0:
        return grad_in, None
    g5, i5 = as_5d(grad_out), as_5d(grad_in)
    k5 = as_5d(indices) if indices is not None else g5
    x5 = (as_5d(x),) if spec.reduction == "lp" else ()
    N, C = i5.shape[:2]
    ID, IH, IW = spatial_sizes(i5)
    tile = "channels" if spec.layout == CHANNELS_LAST else "rows"
    inner_dim = INNER_DIM[tile]
    if tile == "rows":  # grad_out is gathered along W: only grad_in's stores can be vectorised
        a_in, a_out = alignment(i5, inner_dim, IW), 1
        a_x = min((alignment(t, inner_dim, IW) for t in x5), default=1)
        sizes = (C, ID, IH, IW // a_in)
    else:  # C is every tensor's contiguous extent: one alignment for all
        a_in = a_out = a_x = min(alignment(t, inner_dim, C) for t in (i5, g5, k5, *x5))
        sizes = (C // a_in, ID, IH, IW)
    ctx = backward_context(spec, a_in, a_out, a_x)
    if tile == "rows":
        outer, inner = N * C * ID * IH, IW
    else:
        outer, inner = N * ID * IH * IW, C
    ctx = with_coordinates(ctx, outer)
    args = (
        g5,
        k5,
        grad_in,
        *x5,
        *sizes,
        *spatial_sizes(g5),
        outer,
        *scaled_strides(g5, inner_dim, a_out),
        *scaled_strides(k5, inner_dim, a_out),
        *scaled_strides(i5, inner_dim, a_in),
        *(s for t in x5 for s in scaled_strides(t, inner_dim, a_x)),
    )
    problem = {"outer": outer, "inner": inner, "inner_step": 1, "dtype": spec.dtype}
    return grad_in, _window_launch(BACKWARD, ctx, spec, args, problem)


def backward(
    grad_out: torch.Tensor,
    indices: torch.Tensor | None,
    input_shape,
    channels_last: bool,
    spec: WindowPoolSpec,
    x: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gradient of the batched input, gathered from grad_out (and the argmax for max; lp: its
    forward state and the input ``x``)."""
    if takes_large_window_path(spec):
        return large_window.backward(grad_out, indices, input_shape, channels_last, spec)
    grad_in, kernel_launch = plan_backward(grad_out, indices, input_shape, channels_last, spec, x)
    if kernel_launch is not None:
        kernel_launch.run()
    elif grad_in.numel() != 0:  # no output, so no gradient reaches the input
        grad_in.zero_()
    return grad_in


def plan_index_gather(src: torch.Tensor, indices: torch.Tensor):
    """(out, launch) for index_gather, launch None when the output is empty."""
    out = torch.empty_strided(indices.shape, indices.stride(), dtype=src.dtype, device=src.device)
    if out.numel() == 0:
        return out, None
    ctx = {"kernel_name": f"index_gather{src.dim() - 2}d", "variant": f"ndim={src.dim() - 2}"}
    s5, k5, o5 = as_5d(src), as_5d(indices), as_5d(out)
    n_out = out.numel()
    args = (
        s5,
        k5,
        o5,
        s5.shape[1],
        *spatial_sizes(s5),
        *spatial_sizes(k5),
        n_out,
        *s5.stride(),
        *k5.stride(),
        *o5.stride(),
    )
    return out, KernelLaunch(
        INDEX_GATHER,
        ctx,
        ctx["variant"],
        args,
        {"outer": 1, "inner": n_out},
        grid=lambda cfg: (triton.cdiv(n_out, cfg.block_inner),),
        meta=lambda cfg: {"BLOCK": cfg.block_inner},
    )


def index_gather(src: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """out[n, c, o] = src[n, c, indices[n, c, o]] (flat spatial), out shaped and laid out like
    ``indices``."""
    out, kernel_launch = plan_index_gather(src, indices)
    if kernel_launch is not None:
        kernel_launch.run()
    return out
