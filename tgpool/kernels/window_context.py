"""Render contexts of the window pooling kernels: what a ``WindowPoolSpec`` variant puts in
templates/window_pool_fwd and window_pool_bwd (window constants, tile, lp's exponents, W taps
selected from one loaded segment), and the dtype of the state the forward keeps for lp / max.

kernels/window.py (the launcher) adds the alignments and coordinates it measures on the tensors.
"""

from __future__ import annotations

import math

import torch

from ..spec import CHANNELS_LAST, WindowPoolSpec

#: windows with more taps than this loop at run time instead of being unrolled
MAX_UNROLLED_TAPS = 64
#: strides along W for which the channels-first forward selects taps from one loaded segment
SEGMENT_STRIDES = (1, 2, 4)


# --- variants -------------------------------------------------------------------------------------


def _window_context(spec: WindowPoolSpec) -> dict:
    w = spec.as_3d()
    ctx = {}
    for axis, i in (("D", 0), ("H", 1), ("W", 2)):
        ctx["K" + axis] = w["kernel"][i]
        ctx["S" + axis] = w["stride"][i]
        ctx["P" + axis] = w["padding"][i]
        ctx["P" + axis + "E"] = w["padding_end"][i]
        ctx["D" + axis] = w["dilation"][i]
    taps = ctx["KD"] * ctx["KH"] * ctx["KW"]
    return {
        **ctx,
        "reduction": spec.reduction,
        "kind": spec.kind,
        **(lp_context(spec.norm_type) if spec.reduction == "lp" else {}),
        "acc": "tl.float64" if spec.dtype == "float64" else "tl.float32",
        "tile": "channels" if spec.layout == CHANNELS_LAST else "rows",
        "count_include_pad": spec.count_include_pad,
        "divisor_override": spec.divisor_override,
        "loop": "tl.static_range" if taps <= MAX_UNROLLED_TAPS else "range",
        "coord": "tl.int32",  # see with_coordinates
        "variant": repr(spec),
    }


def _exponent(e: float) -> dict:
    """How the templates raise to the power ``e``: ``int`` (by multiplication) for a small
    integer e >= 0, else 2 ** (e * log2|x|) with the sign rule of ``parity`` (1: odd integer,
    0: even integer, -1: not an integer)."""
    integral = float(e).is_integer()
    small = integral and 0 <= e <= 8
    parity = (int(e) % 2) if integral else -1
    return {"int": int(e) if small else None, "value": repr(float(e)), "parity": parity}


def lp_context(p: float) -> dict:
    """Render context of lp pooling with norm_type ``p``: +-inf is a max of +-|x| (torch's
    max_pool of |x|, and minus that of -|x|), a finite p a sum of x ** p (_lp_math.py.jinja)."""
    if math.isinf(p):
        return {"lp_inf": 1 if p > 0 else -1, "lp_tap_doc": "|x|" if p > 0 else "-|x|"}
    return {
        "lp_inf": 0,
        "lp_tap_doc": f"x ** {p:g}",
        "lp_p": _exponent(p),
        "lp_root": _exponent(1.0 / p),
        "lp_coef": _exponent(1.0 / p - 1.0),
        "lp_grad": _exponent(p - 1.0),
    }


def segment_taps(spec: WindowPoolSpec) -> list[dict] | None:
    """Taps of the W window as (phase m, shift q) of one loaded segment, or None when the
    channels-first forward must load each tap directly (other strides, shifts beyond one output,
    windows too wide to unroll)."""
    w = spec.as_3d()
    k, s, p, d = w["kernel"][2], w["stride"][2], w["padding"][2], w["dilation"][2]
    if spec.layout == CHANNELS_LAST or s not in SEGMENT_STRIDES or k > MAX_UNROLLED_TAPS:
        return None
    taps = []
    for kw in range(k):
        r = kw * d - p
        q, m = divmod(r, s)
        if abs(q) > 1:
            return None
        halo = str(q * s + m) if q < 0 else f"BLOCK_W * SW + {(q - 1) * s + m}"
        taps.append(
            {
                "kw": kw,
                "r": r,
                "q": q,
                "m": m,
                "halo": f"({halo})",
                "halo_lane": "0" if q < 0 else "BLOCK_W - 1",
            }
        )
    return taps


def forward_context(
    spec: WindowPoolSpec,
    with_indices: bool,
    align_in: int = 1,
    align_out: int = 1,
    wide_indices: bool = False,
) -> dict:
    """Render context of the forward kernel. ``align_in``/``align_out``: see ``alignment``;
    ``wide_indices``: the input's spatial volume needs int64 argmax tracking."""
    ctx = _window_context(spec)
    with_state = with_indices and spec.reduction in ("max", "lp")
    with_sums = with_state and spec.kind == "avg"  # lp's state for a finite p
    suffix = ("_sums" if with_sums else "_idx") if with_state else ""
    ctx.update(
        kernel_name=f"{spec.op_name}_fwd_{ctx['tile']}{suffix}",
        with_indices=with_state and not with_sums,
        with_sums=with_sums,
        w_taps=segment_taps(spec) if ctx["tile"] == "rows" else None,
        ALIGN_IN=align_in,
        ALIGN_OUT=align_out,
        index_dtype="tl.int64" if wide_indices else "tl.int32",
    )
    return ctx


def backward_context(
    spec: WindowPoolSpec, align_in: int = 1, align_out: int = 1, align_x: int = 1
) -> dict:
    """Render context of the backward kernel; ``align_in`` is grad_in's, ``align_out``
    grad_out's and the indices', ``align_x`` the input's (lp only)."""
    ctx = _window_context(spec)
    for axis in "DHW":
        span = (ctx["K" + axis] - 1) * ctx["D" + axis] + 1
        ctx["N" + axis] = -(-span // ctx["S" + axis])
    ctx.update(
        kernel_name=f"{spec.op_name}_bwd_{ctx['tile']}",
        ALIGN_IN=align_in,
        ALIGN_OUT=align_out,
        ALIGN_X=align_x,
    )
    return ctx


def state_dtype(spec: WindowPoolSpec, dtype: torch.dtype) -> torch.dtype:
    """dtype of what the forward keeps for the backward: int64 argmax indices for a max (max,
    lp with p = +-inf), lp's window sums of x ** p in the accumulator's dtype otherwise."""
    if spec.kind == "max":
        return torch.int64
    return torch.float64 if dtype == torch.float64 else torch.float32
