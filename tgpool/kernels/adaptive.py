"""Adaptive pooling: output size -> render context -> generated kernel -> launch config -> launch.

Output o's window along a dim of input size I and output size O is torch's
[floor(o * I / O), ceil((o + 1) * I / O)): windows may overlap (I=10 -> O=4), repeat one element
(O > I) or span the whole input (O=1). The kernels compute each lane's window from o, I and O,
and loop over the largest extent (a run-time loop, so a window of any size works), masking the
taps past each lane's own window. The backward is a gather: input position i reads the outputs
[floor(i * O / I), ceil((i + 1) * O / I)) (the same rule, I and O swapped).

Tensors reach this module checked (functional/adaptive.py) and batched (N, C, *spatial); they are
viewed as (N, C, D, H, W) with every stride passed, so any strided input is read in place. An
output size of 1 in every dim is global pooling: those calls plan tgpool's global-pool kernels
(kernels/global_pool.py, which report flat indices too) instead of an adaptive launch.
"""

from __future__ import annotations

import math

import torch

from ..spec import DTYPES, is_channels_last, output_strides
from . import global_pool as global_kernels
from .common import KernelLaunch, alignment, as_5d, scaled_strides, tiled_launch, with_coordinates

FORWARD = "adaptive_pool_fwd"
BACKWARD = "adaptive_pool_bwd"

# --- windows --------------------------------------------------------------------------------------


def window(o: int, size: int, out: int) -> tuple[int, int]:
    """torch's [start, end) of output ``o``'s window along a dim (what the kernels compute)."""
    return (o * size) // out, -(-((o + 1) * size) // out)


def max_extent(size: int, out: int) -> int:
    """The largest window extent along a dim, exactly: with o * I = q * O + r, output o's window
    is [q, q + ceil((r + I) / O)), and r takes every multiple of gcd(I, O) below O, so the
    largest extent is ceil((I + O - gcd(I, O)) / O). The kernels loop this many times, masking
    each lane's extra taps. Swapping the arguments gives the most outputs covering one input
    position (the backward's loop)."""
    if out == 0 or size == 0:
        return 0
    return -(-(size + out - math.gcd(size, out)) // out)


def window_dtype(sizes, outs) -> str:
    """int32 window arithmetic when o * I + I (and i * O + O) fit it, else int64."""
    biggest = max((i * o + max(i, o) for i, o in zip(sizes, outs)), default=0)
    return "tl.int32" if biggest < 2**31 else "tl.int64"


def position_dtype(sizes, outs) -> str:
    """int32 positions (window bounds, covering outputs) when every extent fits it."""
    return "tl.int32" if max((*sizes, *outs), default=0) < 2**31 - 1 else "tl.int64"


def is_global(output_size) -> bool:
    """Output size 1 in every dim: global pooling, run by the global-pool kernels."""
    return all(o == 1 for o in output_size)


# --- memory formats (torch's, checked against its CPU kernels) ------------------------------------


def output_channels_last(x: torch.Tensor, reduction: str, output_size) -> bool:
    """Whether torch returns the output channels-last for batched ``x``: 1-D and 2-D follow the
    input; 3-D is contiguous, except average pooling to 1x1x1 (torch takes a mean there, which
    keeps the input's format)."""
    ndim = len(output_size)
    if ndim == 3 and not (reduction == "avg" and is_global(output_size)):
        return False
    return is_channels_last(x, ndim)


def grad_channels_last(x: torch.Tensor, reduction: str, output_size) -> bool:
    """Whether torch returns the input gradient channels-last: 1-D and 2-D follow the input,
    except average pooling to size 1 (the gradient of torch's mean is contiguous); 3-D is always
    contiguous."""
    ndim = len(output_size)
    if ndim == 3 or (reduction == "avg" and is_global(output_size)):
        return False
    return is_channels_last(x, ndim)


def empty_output(x: torch.Tensor, output_size, channels_last: bool, dtype=None) -> torch.Tensor:
    shape = (*x.shape[:2], *output_size)
    strides = output_strides(shape, channels_last)
    return torch.empty_strided(shape, strides, dtype=dtype or x.dtype, device=x.device)


def empty_outputs(x: torch.Tensor, output_size, reduction: str, with_indices: bool):
    """(out, indices) as the forward returns them (the fake implementations' outputs)."""
    channels_last = output_channels_last(x, reduction, output_size)
    out = empty_output(x, output_size, channels_last)
    if with_indices and reduction == "max":
        return out, empty_output(x, output_size, channels_last, torch.int64)
    return out, out.new_empty(0, dtype=torch.int64)


def empty_grad(input_size, channels_last: bool, like: torch.Tensor) -> torch.Tensor:
    strides = output_strides(input_size, channels_last)
    return torch.empty_strided(tuple(input_size), strides, dtype=like.dtype, device=like.device)


def tile_of(t5: torch.Tensor) -> str:
    """'channels' when channels are contiguous and W is not (channels-last data), else 'rows'."""
    C, W = t5.shape[1], t5.shape[4]
    if t5.stride(1) == 1 and C > 1 and not (t5.stride(4) == 1 and W > 1):
        return "channels"
    return "rows"


# --- variants -------------------------------------------------------------------------------------


def offset_dtype(*tensors: torch.Tensor) -> str:
    """int32 element offsets when the farthest element of every tensor is within reach of them
    (cheaper arithmetic, half the registers), else int64. Lanes past the edges are masked, so an
    offset they overflow is never dereferenced."""
    farthest = max(sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride())) for t in tensors)
    return "tl.int32" if farthest < 2**31 - 2**24 else "tl.int64"


def context(family, reduction, ndim, tile, dtype, with_indices, extents, aligns, tensors):
    """Render context of one kernel variant. ``extents``: the input's and output's spatial sizes
    and the flattened outer extent (which decide the integer widths); ``aligns``: (ALIGN_IN,
    ALIGN_OUT, ALIGN_C); ``tensors``: those the kernel addresses."""
    sizes, outs, coord_extent = extents
    with_indices = with_indices and reduction == "max"
    suffix = "_idx" if with_indices else ""
    short = "fwd" if family == FORWARD else "bwd"
    a_in, a_out, a_c = aligns
    ctx = {
        "kernel_name": f"adaptive_{reduction}_pool{ndim}d_{short}_{tile}{suffix}",
        "variant": f"adaptive {reduction} {ndim}d {DTYPES[dtype]} {tile}{suffix.replace('_', ' ')}",
        "reduction": reduction,
        "tile": tile,
        "with_indices": with_indices,
        "acc": "tl.float64" if dtype == torch.float64 else "tl.float32",
        "win": window_dtype(sizes, outs),
        "pos": position_dtype(sizes, outs),
        # flat spatial indices: int32 whenever the input's spatial volume fits
        "index_dtype": "tl.int64" if math.prod(sizes) > 2**31 - 1 else "tl.int32",
        "off": offset_dtype(*tensors),
        "ALIGN_IN": a_in,
        "ALIGN_OUT": a_out,
        "ALIGN_C": a_c,
        "loop": "range",  # the window loops run at run time (the tuner then tries num_stages)
    }
    return with_coordinates(ctx, coord_extent)


#: the rows tiles' ``inner_step`` for the launch heuristic (launch.heuristic sizes tiles by
#: ``inner_step`` elements per column): a row's lanes keep their window bounds, offsets and
#: running max/sum live across the run-time window loops, several times the state of a window-pool
#: lane, and ptxas spills a few bytes to reach its occupancy targets. At the heuristic's tiles (4
#: to 8 elements per thread) the 3-D max forward with indices took 80 registers and spilled 24 to
#: 40 bytes, the 3-D backward 8 bytes (sm_80, sm_90a); at one element per thread (a weight of 4)
#: nothing spills in fp16, bf16 or fp32 (tests/test_adaptive_aot.py). The price: the rows
#: backward stores grad_in rows 16 to 64 bits wide instead of 128. Channels tiles carry the state
#: per position, shared by the channels: they keep the heuristic's tile and 128-bit accesses.
ROWS_STEP = {FORWARD: 4, BACKWARD: 4}


def _launch(family, ctx, args, outer, inner, dtype, vector) -> KernelLaunch:
    names = ("BLOCK_R", "BLOCK_W") if ctx["tile"] == "rows" else ("BLOCK_P", "BLOCK_C")
    problem = {"outer": outer, "inner": inner, "dtype": DTYPES[dtype], "vector": vector}
    if ctx["tile"] == "rows":
        problem["inner_step"] = ROWS_STEP[family]
    return tiled_launch(family, ctx, ctx["variant"], args, problem, names)


def _channel_alignments(a: torch.Tensor, b: torch.Tensor, *more: torch.Tensor):
    """(ALIGN of ``a``, ALIGN of ``b`` and ``more``, ALIGN_C) for the channels tile: each tensor
    whose channels are contiguous is aligned on its own; C is divided by the larger (both divide
    C, being powers of two that divide it)."""
    C = a.shape[1]
    a_a = alignment(a, 1, C)
    a_b = min(alignment(t, 1, C) for t in (b, *more))
    return a_a, a_b, max(a_a, a_b)


# --- forward --------------------------------------------------------------------------------------


def plan_forward(x: torch.Tensor, output_size, reduction: str, with_indices: bool):
    """(out, indices, launches) for batched ``x``: the outputs allocated in torch's memory format
    (same device as ``x``, meta included), indices empty unless ``with_indices`` (max), and the
    launches that fill them (none when the output is empty)."""
    output_size = tuple(output_size)
    with_indices = with_indices and reduction == "max"
    if is_global(output_size):
        out_cl = output_channels_last(x, reduction, output_size)
        return _plan_global_forward(x, output_size, reduction, with_indices, out_cl)
    out, idx = empty_outputs(x, output_size, reduction, with_indices)
    if out.numel() == 0:
        return out, idx, []
    x5, o5 = as_5d(x), as_5d(out)
    N, C = x5.shape[:2]
    sizes, outs = tuple(x5.shape[2:]), tuple(o5.shape[2:])
    tile = tile_of(x5)
    if tile == "rows":  # input taps are gathered; output rows are stored along W
        a_in, a_out = 1, alignment(o5, 4, outs[2])
        a_c = 1
        scaled = (C, *sizes, *outs[:2], outs[2] // a_out)
        outer, inner = N * C * outs[0] * outs[1], outs[2]
    else:
        a_in, a_out, a_c = _channel_alignments(x5, o5, *([as_5d(idx)] if with_indices else []))
        scaled = (C // a_c, *sizes, *outs)
        outer, inner = N * math.prod(outs), C
    ctx = context(
        FORWARD,
        reduction,
        x.dim() - 2,
        tile,
        x.dtype,
        with_indices,
        (sizes, outs, outer),
        (a_in, a_out, a_c),
        (x, out, *([idx] if with_indices else [])),
    )
    inner_dim = 4 if tile == "rows" else 1
    args = (
        x5,
        out,
        idx if with_indices else out,
        *scaled,
        outer,
        *(max_extent(i, o) for i, o in zip(sizes, outs)),
        *scaled_strides(x5, inner_dim, a_in),
        *scaled_strides(o5, inner_dim, a_out),
    )
    vector = tile == "channels" and a_in > 1
    return out, idx, [_launch(FORWARD, ctx, args, outer, inner, x.dtype, vector)]


def _collapses(x: torch.Tensor) -> bool:
    dims = [d for d in range(2, x.dim()) if x.shape[d] != 1]
    return all(x.stride(a) == x.stride(b) * x.shape[b] for a, b in zip(dims[:-1], dims[1:]))


def _plan_global_forward(x, output_size, reduction, with_indices, out_cl):
    """Output size 1: the global-pool kernels reduce each (n, c) plane; their (N, C) outputs are
    viewed as (N, C, 1, ...) with torch's strides. Spatial dims that do not collapse to one
    stride are copied once (as global_pool does)."""
    if not _collapses(x):
        x = x.contiguous()
    outputs, launches = global_kernels.plan_forward(
        x, None, None, None, reduction, "channels_first", 0.0, 1e-6, with_indices, False
    )
    out, _maxes, idx, _aux = outputs
    shape = (*x.shape[:2], *output_size)
    strides = output_strides(shape, out_cl)
    out = out.as_strided(shape, strides)
    idx = idx.as_strided(shape, strides) if with_indices else idx
    return out, idx, launches


def forward(x: torch.Tensor, output_size, reduction: str, with_indices: bool):
    """Pool batched ``x``; returns (out, indices) with indices empty unless asked for."""
    out, idx, launches = plan_forward(x, output_size, reduction, with_indices)
    for kernel_launch in launches:
        kernel_launch.run()
    return out, idx


# --- backward -------------------------------------------------------------------------------------


def plan_backward(grad_out, indices, input_size, channels_last: bool, reduction: str):
    """(grad_in, launches) with grad_in allocated in torch's format (``channels_last``), not
    filled when there is no launch (see ``backward``)."""
    output_size = tuple(grad_out.shape[2:])
    if is_global(output_size):
        return _plan_global_backward(grad_out, indices, input_size, channels_last, reduction)
    grad_in = empty_grad(input_size, channels_last, grad_out)
    if grad_in.numel() == 0 or grad_out.numel() == 0:
        return grad_in, []
    g5, i5 = as_5d(grad_out), as_5d(grad_in)
    k5 = as_5d(indices) if reduction == "max" else g5
    N, C = i5.shape[:2]
    sizes, outs = tuple(i5.shape[2:]), tuple(g5.shape[2:])
    tile = tile_of(i5)
    if tile == "rows":  # grad_out is gathered: only grad_in's stores are contiguous
        a_in, a_out, a_c = alignment(i5, 4, sizes[2]), 1, 1
        scaled = (C, *sizes[:2], sizes[2] // a_in, *outs)
        outer, inner = N * C * sizes[0] * sizes[1], sizes[2]
    else:
        a_in, a_out, a_c = _channel_alignments(i5, g5, k5)
        scaled = (C // a_c, *sizes, *outs)
        outer, inner = N * math.prod(sizes), C
    ctx = context(
        BACKWARD,
        reduction,
        len(input_size) - 2,
        tile,
        grad_out.dtype,
        False,
        (sizes, outs, outer),
        (a_in, a_out, a_c),
        (grad_out, grad_in, *([indices] if reduction == "max" else [])),
    )
    inner_dim = 4 if tile == "rows" else 1
    args = (
        g5,
        k5,
        grad_in,
        *scaled,
        outer,
        *(max_extent(o, i) for i, o in zip(sizes, outs)),
        *scaled_strides(g5, inner_dim, a_out),
        *scaled_strides(k5, inner_dim, a_out),
        *scaled_strides(i5, inner_dim, a_in),
    )
    vector = a_in > 1
    return grad_in, [_launch(BACKWARD, ctx, args, outer, inner, grad_out.dtype, vector)]


def _plan_global_backward(grad_out, indices, input_size, channels_last, reduction):
    """Output size 1: the global-pool backward. It reads x only for its shape and strides (the
    max and avg gradients need no input values), so a tensor laid out like the gradient torch
    returns stands in for x, and the gradient comes back in that layout."""
    like = empty_grad(input_size, channels_last, grad_out)
    N, C = input_size[:2]
    g = grad_out.reshape(N, C)
    k = indices.reshape(N, C) if reduction == "max" else g.new_empty(0, dtype=torch.int64)
    unused = g.new_empty(0)  # the forward's output: read only by lp and GeM
    grad_in, gather = global_kernels.plan_backward(
        g, None, like, None, None, k, unused, None, reduction, "channels_first", 0.0, 1e-6
    )
    return grad_in, [gather] if gather is not None else []


def backward(grad_out, indices, input_size, channels_last: bool, reduction: str) -> torch.Tensor:
    """Gradient of the batched input, gathered from grad_out (and the argmax for max)."""
    grad_in, launches = plan_backward(grad_out, indices, input_size, channels_last, reduction)
    for kernel_launch in launches:
        kernel_launch.run()
    if not launches and grad_in.numel() != 0:  # an empty output passes no gradient
        grad_in.zero_()
    return grad_in


# --- ahead-of-time planning -----------------------------------------------------------------------


def plan_adaptive_op(
    op: str,
    input_shape,
    dtype=torch.float16,
    layout: str = "channels_first",
    *,
    direction: str = "fwd",
    output_size=(7, 7),
    with_indices: bool = False,
) -> list[KernelLaunch]:
    """The launches of ``op`` ("adaptive_avg_pool2d", "adaptive_max_pool3d", ...) on a batched
    dense input of ``input_shape`` (N, C, *spatial) in ``layout``, planned on meta tensors for
    ahead-of-time compilation (tgpool/aot/compiler.py): "fwd" the forward; "bwd" what autograd runs
    for the input gradient (for max without saved indices: the forward that recomputes them, then
    the gather); "double_bwd" the gradient of the backward (index_gather for max, the forward
    for avg)."""
    from ..spec import meta_tensor
    from .window import plan_index_gather

    reduction, ndim = op.removeprefix("adaptive_")[:3], int(op[-2])
    if op != f"adaptive_{reduction}_pool{ndim}d" or reduction not in ("max", "avg"):
        raise ValueError(f"unknown op {op!r}; expected adaptive_avg_pool1d .. adaptive_max_pool3d")
    output_size = (output_size,) * ndim if isinstance(output_size, int) else tuple(output_size)
    if len(input_shape) != ndim + 2 or len(output_size) != ndim:
        raise ValueError(f"{op}: expected (N, C, *spatial) and {ndim} output sizes")
    x = meta_tensor(input_shape, dtype, layout == "channels_last")
    if direction == "fwd":
        return plan_forward(x, output_size, reduction, with_indices)[2]
    out, idx, recompute = plan_forward(x, output_size, reduction, reduction == "max")
    if direction == "bwd":
        grad_cl = grad_channels_last(x, reduction, output_size)
        _, gather = plan_backward(torch.empty_like(out), idx, list(x.shape), grad_cl, reduction)
        return (recompute if reduction == "max" and not with_indices else []) + gather
    if direction != "double_bwd":
        raise ValueError(f"direction must be fwd, bwd or double_bwd, got {direction!r}")
    if reduction == "max":
        return [plan_index_gather(torch.empty_like(x), idx)[1]]
    return plan_forward(torch.empty_like(x), output_size, reduction, False)[2]
