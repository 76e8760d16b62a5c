"""Fractional max pooling: interval rule -> render context -> generated kernels -> launches.

Each (n, c) plane draws one sample u in [0, 1) per spatial dim; output o's window along a dim of
input size IN, output size OUT and kernel K starts at ATen's

    alpha = (IN - K) / (OUT - 1)
    start(o) = int((o + u) * alpha) - int(u * alpha)   for o < OUT - 1;   start(OUT - 1) = IN - K

computed, like torch's CPU kernel, in the input's dtype with every operation rounded to it (for
float16 and bfloat16 too; torch's CUDA kernel computes in float32 there, so for 16-bit inputs its
windows can differ from its own CPU kernel's: tgpool gives the CPU's on every device). The
kernels emulate that rounding exactly (``_round`` in the templates); ``reference_starts`` is the
same rule in torch, used to bound the backward and by the tests.

Backward: a gather. Window starts never decrease with o, so the outputs whose windows cover an
input position are consecutive, ending at the last window starting at or before it (a binary
search in the kernel); ``max_cover`` bounds how many there are, per dim, for every possible sample.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from ..spec import DTYPES
from .common import (
    INNER_DIM,
    KernelLaunch,
    alignment,
    as_5d,
    coord_type,
    scaled_strides,
    tiled_launch,
)

FORWARD = "fractional_max_pool_fwd"
BACKWARD = "fractional_max_pool_bwd"
#: windows with more taps than this loop at run time instead of being unrolled
MAX_UNROLLED_TAPS = 64
#: sample column of each dim: 2D samples are (w, h), 3D samples (t, h, w), as ATen reads them
SAMPLE_COLUMNS = {2: {"COL_W": 0, "COL_H": 1}, 3: {"COL_T": 0, "COL_H": 1, "COL_W": 2}}
#: significand bits (with the implicit one) of each dtype
_PRECISION = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}
_ONE_BITS = {"float16": 0x3C00, "bfloat16": 0x3F80}  # bit pattern of 1.0: every u in [0, 1) below


# --- the interval rule ----------------------------------------------------------------------------


def reference_starts(u: torch.Tensor, IN: int, OUT: int, K: int) -> torch.Tensor:
    """(..., OUT) int64 window starts for samples ``u`` (any shape, the input's dtype), computed
    as ATen's CPU kernel does: every operation in ``u``'s dtype (torch's CPU elementwise ops
    round each result to it, as c10::Half / BFloat16 arithmetic does)."""
    dt = u.dtype
    starts = torch.full((*u.shape, OUT), IN - K, dtype=torch.int64, device=u.device)
    if OUT > 1:
        alpha = torch.tensor(IN - K, dtype=dt) / torch.tensor(OUT - 1, dtype=dt)
        i = torch.arange(OUT - 1, device=u.device).to(dt)
        a = ((i + u[..., None]) * alpha.to(u.device)).to(torch.int32)
        b = (u * alpha.to(u.device)).to(torch.int32)[..., None]
        starts[..., : OUT - 1] = (a - b).to(torch.int64)
    return starts.clamp(0, IN - K)


@lru_cache(maxsize=1024)
def max_cover(IN: int, OUT: int, K: int, dtype: str) -> int:
    """At most how many outputs' windows cover one input position along a dim, for any sample.

    16-bit dtypes: exact, by trying every value in [0, 1) of the dtype (about 16k). float32 and
    float64: in exact arithmetic starts grow by at least alpha >= 1 per output; each computed
    start moves by less than one plus the rounding error, so a bound follows."""
    if OUT <= 1:
        return 1
    if dtype in _ONE_BITS:
        dt = getattr(torch, dtype)
        cover = 1
        bits = torch.arange(0, _ONE_BITS[dtype], dtype=torch.int16)
        for chunk in bits.split(2048):
            s = reference_starts(chunk.view(dt), IN, OUT, K)
            right = torch.searchsorted(s, s + (K - 1), right=True)
            left = torch.searchsorted(s, s, right=False)
            cover = max(cover, int((right - left).max()))
        return min(cover, OUT)
    alpha = (IN - K) / (OUT - 1)
    err = 4 * IN * 2.0 ** -_PRECISION[dtype]
    return min(OUT, math.ceil((K + 1 + 2 * err) / alpha) + 1)


# --- variants -------------------------------------------------------------------------------------


def _context(kernel_size, dtype: torch.dtype, direction: str) -> dict:
    ndim = len(kernel_size)
    k = (1,) * (3 - ndim) + tuple(kernel_size)
    name = DTYPES[dtype]
    taps = math.prod(k)
    return {
        "ndim": ndim,
        "KT": k[0],
        "KH": k[1],
        "KW": k[2],
        **SAMPLE_COLUMNS[ndim],
        "dt": f"tl.{name}",
        "acc": "tl.float64" if name == "float64" else "tl.float32",
        "round": name in _ONE_BITS,
        "loop": "tl.static_range" if taps <= MAX_UNROLLED_TAPS else "range",
        "kernel_name": f"fractional_max_pool{ndim}d_{direction}",
        "variant": f"fractional_max_pool{ndim}d k{'x'.join(map(str, kernel_size))} {name}",
    }


def empty_outputs(x: torch.Tensor, output_size):
    """(out, indices) of batched ``x``: contiguous, as torch returns them."""
    shape = (*x.shape[:2], *output_size)
    out = torch.empty(shape, dtype=x.dtype, device=x.device)
    return out, torch.empty(shape, dtype=torch.int64, device=x.device)


def empty_grad(input_size, grad_out: torch.Tensor) -> torch.Tensor:
    """The input gradient: contiguous, as torch returns it."""
    return torch.empty(tuple(input_size), dtype=grad_out.dtype, device=grad_out.device)


def _launch(family, ctx, args, outer: int, inner: int, dtype: torch.dtype) -> KernelLaunch:
    problem = {"outer": outer, "inner": inner, "inner_step": 1, "dtype": DTYPES[dtype]}
    return tiled_launch(family, ctx, ctx["variant"], args, problem, ("BLOCK_R", "BLOCK_W"))


# --- launches -------------------------------------------------------------------------------------


def plan_forward(x: torch.Tensor, samples: torch.Tensor, kernel_size, output_size):
    """(out, indices, launch) for batched ``x``; ``samples`` contiguous (N', C, ndim), N' >= N.
    launch is None when the output is empty."""
    out, idx = empty_outputs(x, output_size)
    if out.numel() == 0:
        return out, idx, None
    x5, o5 = as_5d(x), as_5d(out)
    C = x5.shape[1]
    IT, IH, IW = x5.shape[2:]
    OT, OH, OW = o5.shape[2:]
    inner_dim = INNER_DIM["rows"]
    # out and idx are contiguous with the same strides, all multiples of OW: one alignment
    a_out = alignment(o5, inner_dim, OW)
    rows = x5.shape[0] * C * OT * OH
    ctx = {
        **_context(kernel_size, x.dtype, "fwd"),
        "coord": coord_type(rows),
        "ALIGN_OUT": a_out,
    }
    args = (
        x5,
        samples,
        out,
        idx,
        C,
        IT,
        IH,
        IW,
        OT,
        OH,
        OW // a_out,
        rows,
        *x5.stride(),
        *scaled_strides(o5, inner_dim, a_out),
    )
    return out, idx, _launch(FORWARD, ctx, args, rows, OW, x.dtype)


def forward(x: torch.Tensor, samples: torch.Tensor, kernel_size, output_size):
    """(out, indices) of fractional max pooling of batched ``x``."""
    out, idx, kernel_launch = plan_forward(x, samples, kernel_size, output_size)
    if kernel_launch is not None:
        kernel_launch.run()
    return out, idx


def plan_backward(grad_out, indices, samples, input_size, kernel_size):
    """(grad_in, launch) with grad_in allocated (not filled), launch None when either side is
    empty."""
    grad_in = empty_grad(input_size, grad_out)
    if grad_in.numel() == 0 or grad_out.numel() == 0:
        return grad_in, None
    g5, k5, i5 = as_5d(grad_out), as_5d(indices), as_5d(grad_in)
    C = i5.shape[1]
    IT, IH, IW = i5.shape[2:]
    OT, OH, OW = g5.shape[2:]
    ks = (1,) * (3 - len(kernel_size)) + tuple(kernel_size)
    name = DTYPES[grad_out.dtype]
    cover = [max_cover(i, o, k, name) for i, o, k in zip((IT, IH, IW), (OT, OH, OW), ks)]
    inner_dim = INNER_DIM["rows"]
    a_in = alignment(i5, inner_dim, IW)
    rows = i5.shape[0] * C * IT * IH
    ctx = {
        **_context(kernel_size, grad_out.dtype, "bwd"),
        "coord": coord_type(rows),
        "ALIGN_IN": a_in,
        "NT": cover[0],
        "NH": cover[1],
        "NW": cover[2],
        "cover_loop": "tl.static_range" if math.prod(cover) <= MAX_UNROLLED_TAPS else "range",
    }
    args = (
        g5,
        k5,
        samples,
        grad_in,
        C,
        IT,
        IH,
        IW // a_in,
        OT,
        OH,
        OW,
        rows,
        *((o - 1).bit_length() for o in (OT, OH, OW)),
        *g5.stride(),
        *k5.stride(),
        *scaled_strides(i5, inner_dim, a_in),
    )
    return grad_in, _launch(BACKWARD, ctx, args, rows, IW, grad_out.dtype)


def backward(grad_out, indices, samples, input_size, kernel_size) -> torch.Tensor:
    """Gradient of the batched input, gathered from grad_out where the argmax is the position."""
    grad_in, kernel_launch = plan_backward(grad_out, indices, samples, input_size, kernel_size)
    if kernel_launch is not None:
        kernel_launch.run()
    elif grad_in.numel() != 0:
        grad_in.zero_()
    return grad_in


# --- ahead-of-time planning -----------------------------------------------------------------------


def plan_fractional_op(
    op: str,
    input_shape,
    dtype=torch.float16,
    layout: str = "channels_first",
    *,
    direction: str = "fwd",
    kernel_size=2,
    output_size=None,
    output_ratio=0.5,
    with_indices: bool = False,  # accepted as every planner does; nothing changes with it
) -> list[KernelLaunch]:
    """The launches of ``op`` ("fractional_max_pool2d" / "3d") on meta tensors, for
    ahead-of-time compilation (aot.plan_window_op's signature): "fwd" the forward, "bwd" the
    gather of the input gradient (the backward's double backward is ops.index_gather's)."""
    from torch.nn.modules.utils import _ntuple

    from ..spec import meta_tensor

    ndim = int(op.removeprefix("fractional_max_pool").removesuffix("d"))
    expand = _ntuple(ndim)
    spatial = input_shape[2:]
    k = list(expand(kernel_size))
    if output_size is None:
        output_size = [int(i * r) for i, r in zip(spatial, expand(output_ratio))]
    size = list(expand(output_size))
    x = meta_tensor(input_shape, dtype, layout == "channels_last")
    samples = torch.empty((input_shape[0], input_shape[1], ndim), dtype=dtype, device="meta")
    if direction == "fwd":
        return [plan_forward(x, samples, k, size)[2]]
    out, idx = empty_outputs(x, size)
    return [plan_backward(torch.empty_like(out), idx, samples, list(input_shape), k)[1]]
