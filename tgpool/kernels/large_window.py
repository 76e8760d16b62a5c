"""Large windows without a cliff: max and avg pooling one axis at a time (separable passes).

``window_pool``'s kernels load every window element: a 31x31 window costs 961 loads per output,
and windows of more than 64 taps stop being unrolled. A box window is separable: the max (or sum)
over a D x H x W box is the max over D of the maxima over H of the maxima over W. So this path
runs one pass per axis whose window does something (W, then H, then D): each pass reduces one
axis with K loads per output and writes partial maxima / sums (plus the flat argmax) that the
next pass reads. A 31x31 window costs 31 + 31 loads per output instead of 961.

Exactness, as torch:
- max values: a max is a max, in any order.
- indices: the flat index of torch's first maximum in row-major order. The first maximum of a box
  lies in the first row (plane) holding the box's maximum, at that row's first maximum, so each
  pass keeps the first winner of its axis and carries the previous pass's argmax along. A NaN
  wins and the last NaN is reported, by the same argument with "last". A window with nothing
  above -inf reports its first tap, as ATen.
- avg: torch's divisor is a product of per-axis extents (or divisor_override), so passes sum
  (in fp32, fp64 for fp64, partials kept in that dtype) and the last pass divides once.

Backward is a gather, one pass per axis in the opposite order (D, H, W), no atomics. For max, the
gradient of every output whose argmax lies in slice (d, h, ow) goes to that slice's own first
maximum, the same for every such output: a pass sums those gradients into one partial and keeps
that one argmax, and the next pass spreads it along the next axis. Sums are taken in a fixed
order, so the result is bit-identical from run to run; it may differ from window_pool's in the
last bits (another summation order), within the tests' tolerances.

``forward``/``backward`` have window_pool.forward/backward's signatures and results; ``prefer``
says which windows take this path.
"""

from __future__ import annotations

import math

import torch
import triton

from ..spec import CHANNELS_LAST, WindowPoolSpec, output_strides
from .common import KernelLaunch, as_5d, empty_like_input, empty_output, with_coordinates
from .window_context import MAX_UNROLLED_TAPS

FORWARD = "large_window_fwd"
BACKWARD = "large_window_bwd"
AXES = "DHW"  # axis letter by position in the (D, H, W) window of spec.as_3d()


def prefer(spec: WindowPoolSpec) -> bool:
    """Whether ``spec`` should run the separable passes instead of window_pool's kernels.

    True when the window has more than MAX_UNROLLED_TAPS (64) elements and extends along at
    least two axes. Reasoning (pooling is memory-bound; no GPU measured here):
    - window_pool loads every tap: prod(K) loads per output, from L1 after the first touch. An
      H100 SM's L1 moves ~128 B/clock (~33 TB/s in all) against ~3.3 TB/s of HBM, so once a
      window has more than ~20 fp32 taps (stride 1) window_pool is bound by L1 loads, not DRAM,
      and past 64 taps its window loop is no longer unrolled (the cliff).
    - the passes load sum(K) taps per output but write and re-read one intermediate per extra
      pass (stride 1: the input's size, so DRAM traffic doubles for two passes). That costs
      about what ~20 more L1-bound taps cost: a 7x7 (49 vs 14 taps + one round trip) is a wash,
      9x9 and larger are won (31x31 stride 1: 62 taps against 961, ~10x fewer load instructions),
      so the threshold sits at the unroll limit, where the direct kernel also loses unrolling.
    - a window along one axis only (1x25, 25x1, 100) is a single pass: the same loads as
      window_pool, so it stays there.
    Dilation is supported (each axis's taps are dilated); every avg rule is.
    """
    w = spec.as_3d()
    extended = sum(k > 1 for k in w["kernel"])
    return math.prod(w["kernel"]) > MAX_UNROLLED_TAPS and extended >= 2


def pass_axes(spec: WindowPoolSpec) -> list[int]:
    """The forward's passes, as positions in (D, H, W): W first, then H, then D; axes whose
    window is the identity (kernel 1, stride 1) have none (at least one pass always)."""
    w = spec.as_3d()
    axes = [a for a in (2, 1, 0) if w["kernel"][a] > 1 or w["stride"][a] > 1]
    return axes or [2]


def _acc(spec: WindowPoolSpec) -> str:
    return "tl.float64" if spec.dtype == "float64" else "tl.float32"


def _partial_dtype(x: torch.Tensor, spec: WindowPoolSpec) -> torch.dtype:
    """Partials: the input dtype for max (exact), the accumulator for sums."""
    if spec.reduction == "max":
        return x.dtype
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _context(spec: WindowPoolSpec, axis: int, tile: str, **extra) -> dict:
    w = spec.as_3d()
    ctx = {}
    for name, i in zip(AXES, range(3), strict=True):
        ctx["K" + name] = w["kernel"][i]
        ctx["S" + name] = w["stride"][i]
        ctx["P" + name] = w["padding"][i]
        ctx["D" + name] = w["dilation"][i]
    k, s, p, d = (w[key][axis] for key in ("kernel", "stride", "padding", "dilation"))
    return {
        **ctx,
        "AXIS": AXES[axis],
        "K": k,
        "S": s,
        "P": p,
        "DIL": d,
        "reduction": spec.reduction,
        "acc": _acc(spec),
        "tile": tile,
        "count_include_pad": spec.count_include_pad,
        "divisor_override": spec.divisor_override,
        "coord": "tl.int32",
        "variant": f"{spec!r} axis={AXES[axis]}",
        **extra,
    }


def _dense(shape, channels_last: bool, dtype, like: torch.Tensor) -> torch.Tensor:
    strides = output_strides(shape, channels_last)
    return torch.empty_strided(tuple(shape), strides, dtype=dtype, device=like.device)


def _pass_launch(family, ctx, spec, args, dst5, tile) -> KernelLaunch:
    N, C, D, H, W = dst5.shape
    outer, inner = (N * C * D * H, W) if tile == "rows" else (N * D * H * W, C)
    ctx = with_coordinates(ctx, outer)
    problem = {
        "outer": outer,
        "inner": inner,
        "inner_step": 1,
        "dtype": spec.dtype,
        # lanes along W in the W pass of a rows tile are strided (or shifted by one tap): scalar
        "vector": not (tile == "rows" and ctx["AXIS"] == "W"),
    }
    return KernelLaunch(
        family,
        ctx,
        f"{spec.describe()} axis={ctx['AXIS']}",
        (*args[:14], outer, *args[14:]),
        problem,
        grid=lambda cfg: (triton.cdiv(outer, cfg.block_outer), triton.cdiv(inner, cfg.block_inner)),
        meta=lambda cfg: {"BLOCK_O": cfg.block_outer, "BLOCK_I": cfg.block_inner},
    )


def _index_dtype(sizes) -> tuple[torch.dtype, str]:
    wide = math.prod(sizes) > 2**31 - 1
    return (torch.int64, "tl.int64") if wide else (torch.int32, "tl.int32")


# --- forward --------------------------------------------------------------------------------------


def _pass_args(src, src_idx, dst, dst_idx, C, in_sizes, strided) -> tuple:
    """One pass's kernel arguments (forward and backward alike): the four tensors, C, the
    source's and destination's spatial sizes, the input's, then the strides of ``strided`` (the
    backward also passes its source indices' strides)."""
    return (
        src,
        src_idx,
        dst,
        dst_idx,
        C,
        *src.shape[2:],
        *dst.shape[2:],
        *in_sizes,
        *(stride for t in strided for stride in t.stride()),
    )


def plan_forward(x: torch.Tensor, spec: WindowPoolSpec, with_indices: bool):
    """(out, indices, launches) for batched ``x`` (meta tensors included): one launch per pass,
    in order; no launch when the output is empty."""
    spec = spec.with_tensor(x)
    out = empty_output(x, spec)
    with_indices = with_indices and spec.reduction == "max"
    idx = (
        empty_output(x, spec, torch.int64) if with_indices else out.new_empty(0, dtype=torch.int64)
    )
    if out.numel() == 0:
        return out, idx, []
    x5, o5 = as_5d(x), as_5d(out)
    i5 = as_5d(idx) if with_indices else o5
    N, C = x5.shape[:2]
    in_sizes, out_sizes = tuple(x5.shape[2:]), tuple(o5.shape[2:])
    tile = "channels" if spec.layout == CHANNELS_LAST else "rows"
    index_torch, index_tl = _index_dtype(in_sizes)
    axes = pass_axes(spec)
    src, src_idx = x5, x5
    sizes = list(in_sizes)
    pooled: set[int] = set()
    launches = []
    for n, axis in enumerate(axes):
        first, last = n == 0, n == len(axes) - 1
        sizes[axis] = out_sizes[axis]
        pooled.add(axis)
        if last:
            dst, dst_idx = o5, i5
        else:
            shape = (N, C, *sizes)
            dst = _dense(shape, tile == "channels", _partial_dtype(x, spec), x)
            dst_idx = _dense(shape, tile == "channels", index_torch, x) if with_indices else dst
        coords = {a: f"o{AXES[a].lower()}" for a in range(3)}
        init = {
            a: f"_first_tap({c}, S{AXES[a]}, P{AXES[a]}, D{AXES[a]})" if a in pooled else c
            for a, c in coords.items()
        }
        here = {a: "i" if a == axis else c for a, c in coords.items()}
        suffix = "_idx" if with_indices else ""
        ctx = _context(
            spec,
            axis,
            tile,
            kernel_name=f"{spec.op_name}_large_{AXES[axis].lower()}_{tile}{suffix}",
            first=first,
            last=last,
            with_indices=with_indices,
            index_dtype=index_tl,
            loop="range",  # a run-time loop: unrolled taps spill in the 3-D passes (AOT, sm_90a)
            **{f"init_{AXES[a].lower()}": v for a, v in init.items()},
            **{f"here_{AXES[a].lower()}": v for a, v in here.items()},
        )
        args = _pass_args(src, src_idx, dst, dst_idx, C, in_sizes, (src, dst))
        launches.append(_pass_launch(FORWARD, ctx, spec, args, dst, tile))
        src, src_idx = dst, dst_idx
    return out, idx, launches


def forward(x: torch.Tensor, spec: WindowPoolSpec, with_indices: bool):
    """Pool batched ``x``; returns (out, indices) with indices empty unless asked for (as
    window_pool.forward)."""
    out, idx, launches = plan_forward(x, spec, with_indices)
    for kernel_launch in launches:
        kernel_launch.run()
    return out, idx


# --- backward -------------------------------------------------------------------------------------


def plan_backward(
    grad_out: torch.Tensor,
    indices: torch.Tensor | None,
    input_shape,
    channels_last: bool,
    spec: WindowPoolSpec,
):
    """(grad_in, launches): grad_in allocated (not filled), one launch per pass (D, H, W order),
    none when either side is empty."""
    grad_in = empty_like_input(input_shape, channels_last, grad_out)
    spec = spec.with_tensor(grad_in)
    if grad_in.numel() == 0 or grad_out.numel() == 0:
        return grad_in, []
    g5, t5 = as_5d(grad_out), as_5d(grad_in)
    is_max = spec.reduction == "max"
    k5 = as_5d(indices) if is_max else g5
    N, C = t5.shape[:2]
    in_sizes = tuple(t5.shape[2:])
    tile = "channels" if spec.layout == CHANNELS_LAST else "rows"
    index_torch, index_tl = _index_dtype(in_sizes)
    w = spec.as_3d()
    axes = pass_axes(spec)[::-1]
    src, src_idx = g5, k5
    sizes = list(g5.shape[2:])
    launches = []
    for n, axis in enumerate(axes):
        first, last = n == 0, n == len(axes) - 1
        sizes[axis] = in_sizes[axis]
        if last:
            dst, dst_idx = t5, t5
        else:
            shape = (N, C, *sizes)
            dst = _dense(shape, tile == "channels", _partial_dtype_bwd(grad_out), grad_out)
            dst_idx = _dense(shape, tile == "channels", index_torch, grad_out) if is_max else dst
        k, s, d = w["kernel"][axis], w["stride"][axis], w["dilation"][axis]
        ncand = -(-((k - 1) * d + 1) // s)
        div_args = ", ".join("o" if a == axis else f"t{AXES[a].lower()}" for a in range(3))
        ctx = _context(
            spec,
            axis,
            tile,
            kernel_name=f"{spec.op_name}_large_bwd_{AXES[axis].lower()}_{tile}",
            first=first,
            last=last,
            NCAND=ncand,
            index_dtype=index_tl,
            div_args=div_args,
            loop="range",  # unrolling 13+ candidates with their indices spills (AOT, sm_90a)
        )
        args = _pass_args(src, src_idx, dst, dst_idx, C, in_sizes, (src, src_idx, dst))
        launches.append(_pass_launch(BACKWARD, ctx, spec, args, dst, tile))
        src, src_idx = dst, dst_idx
    return grad_in, launches


def _partial_dtype_bwd(grad_out: torch.Tensor) -> torch.dtype:
    return torch.float64 if grad_out.dtype == torch.float64 else torch.float32


def backward(
    grad_out: torch.Tensor,
    indices: torch.Tensor | None,
    input_shape,
    channels_last: bool,
    spec: WindowPoolSpec,
) -> torch.Tensor:
    """Gradient of the batched input (as window_pool.backward): gathered one axis at a time."""
    grad_in, launches = plan_backward(grad_out, indices, input_shape, channels_last, spec)
    for kernel_launch in launches:
        kernel_launch.run()
    if not launches and grad_in.numel() != 0:  # no output, so no gradient reaches the input
        grad_in.zero_()
    return grad_in


# --- ahead-of-time planning -----------------------------------------------------------------------


def plan_large_window_op(
    op: str,
    input_shape,
    dtype=torch.float16,
    layout: str = "channels_first",
    *,
    direction: str = "fwd",
    with_indices: bool = False,
    **window,
) -> list[KernelLaunch]:
    """The launches of this path for ``op`` ("max_pool2d", "avg_pool3d", ...) on a meta input
    (aot.plan_window_op's signature): "fwd" the passes of the forward, "bwd" the gather passes
    (after the forward that writes the indices for max)."""
    from ..spec import meta_tensor, op_spec

    spec = op_spec(op, **window)
    x = meta_tensor(input_shape, dtype, layout == "channels_last")
    if direction == "fwd":
        return plan_forward(x, spec, with_indices)[2]
    out, idx, forward_launches = plan_forward(x, spec, spec.reduction == "max")
    grad_in, gather = plan_backward(
        torch.empty_like(out),
        idx if spec.reduction == "max" else None,
        list(x.shape),
        layout == "channels_last" and not (spec.reduction == "avg" and spec.ndim == 3),
        spec,
    )
    return (forward_launches if spec.reduction == "max" else []) + gather
