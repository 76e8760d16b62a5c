"""Global pooling's view of its tensors and its kernel variants.

Every input is read as a (B, S, C) strided view (see kernels/global_pool.py): ``canonical`` gives
its sizes and strides, ``tile_of``/``flat_rows`` the tile that follows its contiguous axis,
``alignment`` what Triton may assume about it, and ``context`` the render context of a variant.
"""

from __future__ import annotations

import math

import torch

from .. import launch

#: rows up to this many positions may use the "flat" tile (see flat_rows)
MAX_FLAT_ROW = 256
#: integer powers up to this are computed by multiplication (exact, as torch)
MAX_INT_POWER = 8


# --- shapes ---------------------------------------------------------------------------------------


def _collapsed_stride(t: torch.Tensor, dims) -> int:
    """The stride of ``dims`` read as one dim (the caller guarantees they collapse)."""
    live = [d for d in dims if t.shape[d] != 1]
    return t.stride(live[-1]) if live else 1


def canonical(t: torch.Tensor, layout: str, n_rows: int | None = None):
    """(B, S, C) sizes and (row, position, channel) strides of ``t`` in ``layout``. Strides of
    size-1 dims are reported as 0 (never used), which keeps them out of the alignment."""
    if layout == "ragged":
        B, (S, C) = n_rows, t.shape
        strides = (0, t.stride(0), t.stride(1))
    elif layout == "channels_last":
        B, C = t.shape[0], t.shape[-1]
        S = math.prod(t.shape[1:-1])
        strides = (t.stride(0), _collapsed_stride(t, range(1, t.dim() - 1)), t.stride(-1))
    else:
        B, C = t.shape[:2]
        S = math.prod(t.shape[2:])
        strides = (t.stride(0), _collapsed_stride(t, range(2, t.dim())), t.stride(1))
    sizes = (B, S, C)
    strides = tuple(0 if n == 1 else s for n, s in zip(sizes, strides))
    if layout == "ragged":
        strides = (0, t.stride(0), strides[2])
    return sizes, strides


def tile_of(strides, C: int) -> str:
    """'rows' when positions are contiguous (and channels are not), else 'channels'."""
    _, s_s, s_c = strides
    return "rows" if s_s == 1 and (C == 1 or s_c != 1) else "channels"


def flat_rows(tile, sizes, strides, align, item, splits, ragged) -> bool:
    """Whether short rows whose starts are not 16-byte aligned (a 7 x 7 fp16 plane is 98 bytes)
    are read as one contiguous block per program instead ("flat" tile): the block of
    BLOCK_C x S elements is loaded with wide accesses and rearranged into rows in registers.
    Needs the channels' rows packed back to back (channel stride S) and a row that fits a tile."""
    _, S, C = sizes
    _, _, s_c = strides
    return (
        tile == "rows"
        and not ragged
        and splits == 1
        and (s_c == S or C == 1)
        and S <= MAX_FLAT_ROW
        and align < launch.VECTOR_BYTES // item
    )


def alignment(tensors, tile: str, sizes, strides, ragged: bool) -> int:
    """Largest power-of-two element count (at most 16 bytes) dividing every tensor's address and
    the strides and extent the tile multiplies by ALIGN (see the templates). 1 when the tile's
    contiguous axis is not contiguous, or for packed rows read along positions (their starts
    are arbitrary)."""
    B, S, C = sizes
    s_b, s_s, s_c = strides
    if tile == "rows":
        if s_s != 1 or ragged:
            return 1
        values = [s_b, s_c, S]
    else:
        if s_c != 1 and C != 1:
            return 1
        values = [s_b, s_s, C]
    item = tensors[0].element_size()
    if any(launch.misaligned(t) for t in tensors):
        return 1
    a = launch.VECTOR_BYTES // item
    while a > 1 and any(v % a for v in values):
        a //= 2
    return a


def row_count(x: torch.Tensor, offsets, layout: str) -> int:
    return offsets.shape[0] - 1 if layout == "ragged" else x.shape[0]


def channels(x: torch.Tensor, layout: str) -> int:
    return x.shape[-1] if layout in ("channels_last", "ragged") else x.shape[1]


def empty_outputs(x, offsets, reduction, layout, with_indices, with_aux):
    """(out, maxes, indices, aux) as the forward returns them; unused ones are empty."""
    shape = (row_count(x, offsets, layout), channels(x, layout))
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = x.new_empty(shape)
    maxes = x.new_empty(shape if reduction == "avg+max" else (0,))
    idx = x.new_empty(shape if with_indices else (0,), dtype=torch.int64)
    aux = x.new_empty(shape if with_aux else (0,), dtype=acc)
    return out, maxes, idx, aux


def empty_grad(x: torch.Tensor, layout: str) -> torch.Tensor:
    """x's gradient: x's strides when x is dense, else contiguous (torch.empty_like's rule)."""
    return torch.empty_like(x)


def row_counts(x, mask, offsets, layout) -> torch.Tensor:
    """Valid positions per row (B,), as float32: the divisor of avg and GeM."""
    if layout == "ragged":
        # the kernels' clamping: bounds into [0, total_tokens], an end before its start is empty
        o = offsets.to(torch.int64).clamp(0, x.shape[0])
        return (torch.maximum(o[1:], o[:-1]) - o[:-1]).float()
    if mask is None:
        spatial = x.shape[1:-1] if layout == "channels_last" else x.shape[2:]
        return torch.full((x.shape[0],), float(math.prod(spatial)), device=x.device)
    return mask.reshape(mask.shape[0], -1).sum(1, dtype=torch.float32)


def _mask_view(mask, layout):
    """The mask as uint8 (B, S) with its strides, or a placeholder."""
    if mask is None:
        return None, (0, 0)
    m = mask.view(torch.uint8)
    if m.dim() > 1 and not collapses(m, range(1, m.dim())):
        m = m.contiguous()
    s_s = _collapsed_stride(m, range(1, m.dim())) if m.dim() > 1 else 1
    return m, (m.stride(0), s_s)


def collapses(t: torch.Tensor, dims) -> bool:
    """Whether ``dims`` of ``t`` can be read as one strided dim (no copy needed)."""
    dims = [d for d in dims if t.shape[d] != 1]
    return all(t.stride(a) == t.stride(b) * t.shape[b] for a, b in zip(dims[:-1], dims[1:]))


def _scaled(tile, sizes, strides, align, ragged):
    """(B, S, C) as the kernel takes them: the contiguous extent divided by ALIGN."""
    B, S, C = sizes
    if tile in ("rows", "flat"):
        return (B, S if ragged else S // align, C)
    return (B, S, C // align)


def _scaled_strides(tile, strides, align):
    s_b, s_s, s_c = strides
    if tile in ("rows", "flat"):
        return (s_b // align, s_s, s_c // align)
    return (s_b // align, s_s // align, s_c)


# --- variants -------------------------------------------------------------------------------------


def _parity(e: float) -> int:
    """1 for an odd integer, 0 for an even one, -1 for any other power (see _pow)."""
    if float(e).is_integer():
        return int(abs(e)) % 2
    return -1


def _small_int(e: float) -> int:
    return int(e) if float(e).is_integer() and 1 <= e <= MAX_INT_POWER else 0


def context(
    family,
    reduction,
    layout,
    tile,
    dtype,
    masked,
    with_indices,
    with_aux,
    align,
    p_value,
    S,
    partial=False,
) -> dict:
    ragged = layout == "ragged"
    parts = [reduction, tile, str(dtype).removeprefix("torch.")]
    parts += [flag for flag, on in (("ragged", ragged), ("masked", masked)) if on]
    parts += [flag for flag, on in (("idx", with_indices), ("aux", with_aux)) if on]
    parts += ["partial"] if partial else []
    p_int = _small_int(p_value) if reduction == "lp" else 0
    inv = 1.0 / p_value if reduction == "lp" and p_value else 0.0
    short = {"fwd": "fwd", "combine": "combine", "bwd": "bwd"}[family.rsplit("_", 1)[1]]
    name = "global_" + reduction.replace("+", "") + f"_{short}_{tile}"
    name += "".join("_" + f for f in ("ragged", "masked") if f in parts)
    name += "_partial" if partial else ""
    return {
        "kernel_name": name,
        "variant": " ".join(parts) + (f" p={p_value:g}" if reduction == "lp" else ""),
        "reduction": reduction,
        "tile": tile,
        "ragged": ragged,
        "masked": masked,
        "with_indices": with_indices,
        "with_aux": with_aux,
        "partial": partial,
        "acc": "tl.float64" if dtype == torch.float64 else "tl.float32",
        "index_dtype": "tl.int32" if S < 2**31 - 2**24 else "tl.int64",
        "ALIGN": align,
        "P_INT": p_int,
        "P_PARITY": _parity(p_value) if reduction == "lp" else -1,
        "INV_INT": _small_int(inv) if reduction == "lp" else 0,
        "INV_PARITY": _parity(inv) if reduction == "lp" else -1,
        "ONE_MINUS_P_PARITY": _parity(1 - p_value) if reduction == "lp" else -1,
        "P_MINUS_ONE_PARITY": _parity(p_value - 1) if reduction == "lp" else -1,
    }
