"""Global pooling: variant -> render context -> generated kernels -> launch configs -> launches.

Every input is read in place as a (B, S, C) strided view: B rows, each reducing S positions, per
channel. Dense (N, C, *spatial) and (N, *spatial, C) inputs give B = N and S = the product of the
spatial sizes (their spatial dims must collapse to one stride: functional/window.py copies those
that do not); packed (T, C) values give one row per segment, positions offsets[b]:offsets[b+1].

Tiles follow the contiguous axis: "rows" (positions contiguous, e.g. NCHW) loads BLOCK_C x
BLOCK_S with wide loads along each row; "channels" (channels contiguous: channels_last, packed
sequences) loads BLOCK_S x BLOCK_C with wide loads along the channels.

When B x channel blocks cannot fill a GPU and rows are long (N=1, C=64, L=10**6), each row is
split over ``n_splits`` programs that write partial accumulators; a second kernel combines them in
split order, so the result does not depend on timing (no atomics anywhere).
"""

from __future__ import annotations

import torch
import triton

from ..launch import next_pow2
from .common import KernelLaunch
from .global_layout import (
    _mask_view,
    _scaled,
    _scaled_strides,
    alignment,
    canonical,
    context,
    empty_grad,
    empty_outputs,
    flat_rows,
    row_count,
    row_counts,
    tile_of,
)

FORWARD = "global_pool_fwd"
COMBINE = "global_pool_combine"
BACKWARD = "global_pool_bwd"

#: splitting rows pays off until about this many programs are in flight
TARGET_PROGRAMS = 1024
#: a split reduces at least this many positions (fewer would cost more in partials than it gains)
MIN_SPLIT_POSITIONS = 4096
#: channels per program assumed when deciding splits (before the launch config is known)
SPLIT_CHANNEL_BLOCK = 64


def split_count(B: int, S_per_row: int, C: int) -> int:
    """How many programs share one row: enough to fill about TARGET_PROGRAMS programs, never a
    split shorter than MIN_SPLIT_POSITIONS. Chosen before the launch config, from shapes only."""
    programs = max(B, 1) * triton.cdiv(max(C, 1), SPLIT_CHANNEL_BLOCK)
    if programs >= TARGET_PROGRAMS:
        return 1
    return max(1, min(triton.cdiv(TARGET_PROGRAMS, programs), S_per_row // MIN_SPLIT_POSITIONS))


def _problem(tile, S_per_split, C, dtype, align_ok) -> dict:
    outer, inner = (C, S_per_split) if tile in ("rows", "flat") else (S_per_split, C)
    return {
        "outer": max(outer, 1),
        "inner": max(inner, 1),
        "dtype": str(dtype).removeprefix("torch."),
        "vector": align_ok,
    }


def _grid_meta(tile, S):
    def meta(cfg):
        if tile == "flat":  # one tile covers a row: BLOCK_S is the padded row
            rows = next_pow2(S)
            block = next_pow2(cfg.block_outer * S)
            return {"BLOCK_C": cfg.block_outer, "BLOCK_S": rows, "BLOCK_F": block}
        if tile == "rows":
            return {"BLOCK_C": cfg.block_outer, "BLOCK_S": cfg.block_inner}
        return {"BLOCK_S": cfg.block_outer, "BLOCK_C": cfg.block_inner}

    return meta


def _present(t, dummy):
    """``t``, or ``dummy`` in the argument slot of an absent (None or empty) tensor: the variant
    never reads that pointer."""
    return dummy if t is None or t.numel() == 0 else t


def _c_block(tile, cfg) -> int:
    return cfg.block_outer if tile in ("rows", "flat") else cfg.block_inner


# --- launches -------------------------------------------------------------------------------------


def _row_launch(family, ctx, args, problem, tile, B, C, S, splits) -> KernelLaunch:
    """The forward's or backward's launch over rows: one program per (row, channel block,
    split), the channel block from the config (as _c_block)."""
    return KernelLaunch(
        family,
        ctx,
        ctx["variant"],
        args,
        problem,
        grid=lambda cfg: (B, triton.cdiv(C, _c_block(tile, cfg)), splits),
        meta=_grid_meta(tile, S),
    )


def plan_forward(x, mask, offsets, p, reduction, layout, p_value, eps, with_indices, with_aux):
    """(outputs, launches): the four outputs allocated, and the one or two launches that fill
    them (none for an empty output)."""
    outputs = empty_outputs(x, offsets, reduction, layout, with_indices, with_aux)
    out, maxes, idx, aux = outputs
    B = row_count(x, offsets, layout)
    sizes, strides = canonical(x, layout, B)
    _, S, C = sizes
    if out.numel() == 0:
        return outputs, []
    ragged = layout == "ragged"
    m, m_strides = _mask_view(mask, layout)
    tile = tile_of(strides, C)
    align = alignment([x], tile, sizes, strides, ragged)
    per_row = S // max(B, 1) if ragged else S
    splits = split_count(B, per_row, C)
    if flat_rows(tile, sizes, strides, align, x.element_size(), splits, ragged):
        tile, align = "flat", 1
    scaled = _scaled(tile, sizes, strides, align, ragged)
    counts = row_counts(x, mask, offsets, layout) if mask is not None else None
    p_t = p if p is not None else out
    dummy = out
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    partial = splits > 1
    variant = (reduction, layout, tile, x.dtype, mask is not None, with_indices, with_aux)
    variant += (align, p_value, S)
    ctx = context(FORWARD, *variant, partial)
    problem = _problem(tile, triton.cdiv(per_row, splits), C, x.dtype, align > 1 or tile == "flat")
    if partial:
        shape = (B, splits, C)
        psum = torch.empty(shape, dtype=acc, device=x.device)
        pmax = torch.empty(shape, dtype=acc, device=x.device)
        pidx = torch.empty(shape, dtype=torch.int64, device=x.device)
        paux = torch.empty(shape if with_aux else (0,), dtype=acc, device=x.device)
        targets = (psum, pmax, pidx, paux if with_aux else psum)
        o_strides = psum.stride()
    else:
        targets = (out, _present(maxes, dummy), _present(idx, dummy), _present(aux, dummy))
        o_strides = (out.stride(0), 0, out.stride(1))
    args = (
        x,
        _present(m, dummy),
        _present(offsets, dummy),
        _present(counts, dummy),
        p_t,
        *targets,
        *scaled,
        splits,
        *_scaled_strides(tile, strides, align),
        *m_strides,
        *o_strides,
        float(eps),
    )
    launches = [_row_launch(FORWARD, ctx, args, problem, tile, B, C, S, splits)]
    if partial:
        cctx = context(COMBINE, *variant)
        cargs = (
            psum,
            pmax,
            pidx,
            paux if with_aux else psum,
            _present(offsets, dummy),
            _present(counts, dummy),
            p_t,
            out,
            _present(maxes, dummy),
            _present(idx, dummy),
            _present(aux, dummy),
            B,
            S,
            C,
            splits,
            *psum.stride(),
            out.stride(0),
            out.stride(1),
        )
        launches.append(
            KernelLaunch(
                COMBINE,
                cctx,
                cctx["variant"],
                cargs,
                {"outer": 1, "inner": C, "dtype": problem["dtype"]},
                grid=lambda cfg: (B, triton.cdiv(C, cfg.block_inner)),
                meta=lambda cfg: {"BLOCK_C": cfg.block_inner},
            )
        )
    return outputs, launches


def forward(x, mask, offsets, p, reduction, layout, p_value, eps, with_indices, with_aux):
    outputs, launches = plan_forward(
        x, mask, offsets, p, reduction, layout, p_value, eps, with_indices, with_aux
    )
    for kernel_launch in launches:
        kernel_launch.run()
    return outputs


def plan_backward(
    grad_out, grad_maxes, x, mask, offsets, indices, out, p, reduction, layout, p_value, eps
):
    """(grad_in, launch or None)."""
    ragged = layout == "ragged"
    grad_in = torch.zeros_like(x) if ragged else empty_grad(x, layout)
    if grad_in.stride() != x.stride():
        x = x.contiguous()  # the kernel reads x and writes grad_in with one set of strides
    B = row_count(x, offsets, layout)
    sizes, strides = canonical(grad_in, layout, B)
    _, S, C = sizes
    if grad_in.numel() == 0 or B == 0 or C == 0:
        return grad_in, None
    m, m_strides = _mask_view(mask, layout)
    tile = tile_of(strides, C)
    align = alignment([x, grad_in], tile, sizes, strides, ragged)
    per_row = S // max(B, 1) if ragged else S
    splits = split_count(B, per_row, C)
    if flat_rows(tile, sizes, strides, align, x.element_size(), splits, ragged):
        tile, align = "flat", 1
    counts = row_counts(x, mask, offsets, layout) if mask is not None else None
    ctx = context(
        BACKWARD,
        reduction,
        layout,
        tile,
        x.dtype,
        mask is not None,
        False,
        False,
        align,
        p_value,
        S,
    )
    dummy = grad_out
    g = grad_out.contiguous()
    gm = grad_maxes.contiguous() if reduction == "avg+max" else g
    k = indices if indices is not None and indices.numel() else g
    o = out if out.numel() else g
    for t in (gm, k, o):
        live = [d for d in range(2) if g.shape[d] != 1]
        assert all(t.stride(d) == g.stride(d) for d in live), "(B, C) tensors share strides"
    args = (
        x,
        _present(m, dummy),
        _present(offsets, dummy),
        _present(counts, dummy),
        _present(p, dummy),
        g,
        gm,
        k,
        o,
        grad_in,
        *_scaled(tile, sizes, strides, align, ragged),
        splits,
        *_scaled_strides(tile, strides, align),
        *m_strides,
        g.stride(0),
        g.stride(1),
        float(eps),
    )
    problem = _problem(tile, triton.cdiv(per_row, splits), C, x.dtype, align > 1 or tile == "flat")
    return grad_in, _row_launch(BACKWARD, ctx, args, problem, tile, B, C, S, splits)


def backward(
    grad_out, grad_maxes, x, mask, offsets, indices, out, p, reduction, layout, p_value, eps
):
    grad_in, kernel_launch = plan_backward(
        grad_out, grad_maxes, x, mask, offsets, indices, out, p, reduction, layout, p_value, eps
    )
    if kernel_launch is not None:
        kernel_launch.run()
    elif grad_in.numel() and layout != "ragged":
        grad_in.zero_()
    return grad_in


# --- ahead-of-time planning -----------------------------------------------------------------------


def plan_global_op(
    op: str,
    input_shape,
    dtype=torch.float16,
    layout: str = "channels_first",
    *,
    direction: str = "fwd",
    reduction: str = "avg",
    masked: bool = False,
    with_indices: bool = False,
    segments: int = 32,
) -> list[KernelLaunch]:
    """The launches of ``global_pool`` (input_shape in ``layout``'s order, dense) or
    ``ragged_pool`` (input_shape (total_tokens, C), ``segments`` rows) on meta tensors, for
    ahead-of-time compilation (tgpool/aot/compiler.py): "fwd" is the forward (one launch, or two for
    split rows), "bwd" the input gradient."""
    kernel = {"avgmax": "avg+max", "catavgmax": "avg+max"}.get(reduction, reduction)
    x = torch.empty(tuple(input_shape), dtype=dtype, device="meta")
    offsets = mask = p = None
    if op == "ragged_pool":
        layout = "ragged"
        offsets = torch.empty(segments + 1, dtype=torch.int64, device="meta")
    elif op != "global_pool":
        raise ValueError(f"plan_global_op plans global_pool and ragged_pool, not {op!r}")
    if masked and layout != "ragged":
        spatial = input_shape[1:-1] if layout == "channels_last" else input_shape[2:]
        mask = torch.empty((input_shape[0], *spatial), dtype=torch.bool, device="meta")
    if kernel in ("lp", "gem"):
        p = torch.empty(1, dtype=torch.float32, device="meta")
    p_value = 2.0 if kernel == "lp" else 0.0
    with_indices = with_indices or ("max" in kernel and direction == "bwd")
    outputs, launches = plan_forward(
        x, mask, offsets, p, kernel, layout, p_value, 1e-6, with_indices, False
    )
    if direction == "fwd":
        return launches
    out, maxes, idx, _ = outputs
    grad = torch.empty_like(out)
    _, gather = plan_backward(
        grad, torch.empty_like(maxes), x, mask, offsets, idx, out, p, kernel, layout, p_value, 1e-6
    )
    return [gather] if gather is not None else []


def read_at_argmax(t: torch.Tensor, offsets, indices: torch.Tensor, layout: str) -> torch.Tensor:
    """(B, C): ``t`` (laid out like the pooled input) at each row's argmax, 0 for empty rows.
    Max pooling's double backward; an indexing op (torch.gather), not a pooling."""
    found = indices >= 0
    at = indices.clamp(min=0)
    if layout == "ragged":
        picked = t.gather(0, at + offsets[:-1, None].to(at.dtype).clamp(min=0))
    elif layout == "channels_last":
        picked = t.reshape(t.shape[0], -1, t.shape[-1]).gather(1, at[:, None, :])[:, 0]
    else:
        picked = t.reshape(t.shape[0], t.shape[1], -1).gather(2, at[:, :, None])[:, :, 0]
    return torch.where(found, picked, torch.zeros_like(picked))
