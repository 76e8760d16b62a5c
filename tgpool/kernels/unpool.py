"""max_unpool: render context -> generated kernels -> launch configs -> launches.

Tensors reach this module checked (see functional/unpool_fractional.py) and batched (N, C,
*spatial).
The kernels see values, indices and outputs as (N, C, P) views with the spatial dims flattened
(P positions), so 1D, 2D and 3D share one kernel per tile; every stride is passed, so
channels-last and other strided inputs are read in place (spatial dims that cannot be viewed
as one, e.g. a slice of H with a full W, are copied once).

Forward: the output is zero-filled (``torch.zeros``), then each input element is stored at its
index: a plain store, no atomics. With repeated indices one of the stored values is kept (which
one is unspecified, as in torch; under torch.use_deterministic_algorithms(True) the last one,
as torch's CPU kernel: see last_writer_only); indices from max pooling repeat only where windows
overlap, and then they carry equal values, so the result is exact. Indices outside the output
are skipped, so a kernel never writes out of bounds (CPU tensors are checked before the launch,
as torch does).

Backward: a gather, grad_in[n, c, p] = grad_out[n, c, idx[n, c, p]] (0 for an index outside
the output): every element written once, deterministic.
"""

from __future__ import annotations

import math

import torch

from .. import launch
from ..spec import DTYPES, output_strides
from .common import KernelLaunch, coord_type, scaled_strides, tiled_launch, used_stride

FORWARD = "max_unpool_fwd"
BACKWARD = "max_unpool_bwd"
#: the widest vector Triton can prove, in elements, for the contiguous extent
MAX_ALIGN = 16


# --- shapes ---------------------------------------------------------------------------------------


def flat(t: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C, P): a view when the spatial dims collapse to one stride,
    else a contiguous copy."""
    n, c = t.shape[:2]
    try:
        return t.view(n, c, -1)
    except RuntimeError:
        return t.reshape(n, c, -1)


def empty_output(x: torch.Tensor, output_size, channels_last: bool) -> torch.Tensor:
    """The unpooled output of batched ``x`` (not yet zero-filled), in torch's memory format."""
    shape = (*x.shape[:2], *output_size)
    strides = output_strides(shape, channels_last)
    return torch.empty_strided(shape, strides, dtype=x.dtype, device=x.device)


def empty_grad(grad_out: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The input gradient: contiguous, shaped like the indices (torch returns it contiguous)."""
    return torch.empty(indices.shape, dtype=grad_out.dtype, device=grad_out.device)


# --- alignment ------------------------------------------------------------------------------------


def tensor_alignment(t3: torch.Tensor, inner: int) -> int:
    """Largest power-of-two element count, at most 16 bytes, dividing ``t3``'s address and its
    strides other than the contiguous ``inner`` dim's (which must be 1)."""
    if used_stride(t3, inner) not in (0, 1):
        return 1
    if launch.misaligned(t3):
        return 1
    a = launch.VECTOR_BYTES // t3.element_size()
    strides = [used_stride(t3, d) for d in range(3) if d != inner]
    while a > 1 and any(s % a for s in strides):
        a //= 2
    return a


def extent_alignment(extent: int) -> int:
    """Largest power of two (at most MAX_ALIGN) dividing the contiguous extent."""
    a = MAX_ALIGN
    while a > 1 and extent % a:
        a //= 2
    return a


def tile_of(t3: torch.Tensor) -> str:
    """'channels' when channels are contiguous and positions are not, else 'rows'."""
    C, P = t3.shape[1], t3.shape[2]
    if C > 1 and t3.stride(1) == 1 and (P == 1 or t3.stride(2) != 1):
        return "channels"
    return "rows"


# --- launches -------------------------------------------------------------------------------------


def _plan(family: str, lead: torch.Tensor, aligned: dict, OP: int, dtype, ndim: int):
    """What both kernels share: the tile (from ``lead``, the tensor read contiguously: x for the
    forward, the indices for the backward), the render context with the alignment of each tensor
    in ``aligned`` (name -> (N, C, P) view), the size arguments and the launch problem."""
    tile = tile_of(lead)
    inner = 2 if tile == "rows" else 1
    N, C, P = lead.shape
    extent = P if tile == "rows" else C
    a_e = extent_alignment(extent)
    aligns = {name: tensor_alignment(t, inner) for name, t in aligned.items()}
    outer = N * C if tile == "rows" else N * P
    direction = "fwd" if family == FORWARD else "bwd"
    ctx = {
        "kernel_name": f"max_unpool{ndim}d_{direction}_{tile}",
        "tile": tile,
        "coord": coord_type(outer),
        **{f"ALIGN_{k}": v for k, v in aligns.items()},
        "ALIGN_E": a_e,
        "variant": f"max_unpool{ndim}d {DTYPES[dtype]} {tile}",
    }
    sizes = (C, P // a_e, OP, outer) if tile == "rows" else (C // a_e, P, OP, outer)
    problem = {"outer": outer, "inner": extent, "inner_step": 1, "dtype": DTYPES[dtype]}
    return ctx, sizes, aligns, inner, problem


def plan_forward(x: torch.Tensor, indices: torch.Tensor, output_size, channels_last: bool):
    """(out, launch) for batched ``x`` and its indices: ``out`` allocated (not zero-filled),
    launch None when there is nothing to store."""
    out = empty_output(x, output_size, channels_last)
    if x.numel() == 0 or out.numel() == 0:
        return out, None
    x3, k3, o3 = flat(x), flat(indices), flat(out)
    ctx, sizes, a, inner, problem = _plan(
        FORWARD, x3, {"X": x3, "K": k3}, o3.shape[2], x.dtype, x.dim() - 2
    )
    strides = (
        *scaled_strides(x3, inner, a["X"]),
        *scaled_strides(k3, inner, a["K"]),
        *scaled_strides(o3, inner, 1),
    )
    return out, _launch(FORWARD, ctx, (x3, k3, o3, *sizes, *strides), problem)


def last_writer_only(indices: torch.Tensor) -> torch.Tensor:
    """``indices`` with every repeated index of a plane but its last occurrence set to -1 (which
    the kernels skip): torch's CPU rule (the last value wins), one store per output element.

    Used under ``torch.use_deterministic_algorithms(True)``: on a GPU, stores of different
    values to one address from different programs land in an unspecified order (torch's
    max_unpool raises in that mode instead). A stable sort and a gather: no host sync."""
    if indices.numel() == 0:
        return indices
    planes = indices.reshape(indices.shape[0] * indices.shape[1], math.prod(indices.shape[2:]))
    order, perm = torch.sort(planes, dim=1, stable=True)
    last = torch.ones_like(order, dtype=torch.bool)
    last[:, :-1] = order[:, 1:] != order[:, :-1]
    keep = last.gather(1, torch.argsort(perm, dim=1))
    return torch.where(keep, planes, -1).reshape(indices.shape)


def forward(x: torch.Tensor, indices: torch.Tensor, output_size, channels_last: bool):
    """Unpool batched ``x``: zeros everywhere but at the indices (the last of repeated indices
    wins in deterministic mode; see last_writer_only)."""
    if torch.are_deterministic_algorithms_enabled():
        indices = last_writer_only(indices)
    out, kernel_launch = plan_forward(x, indices, output_size, channels_last)
    out.zero_()
    if kernel_launch is not None:
        kernel_launch.run()
    return out


def plan_backward(grad_out: torch.Tensor, indices: torch.Tensor):
    """(grad_in, launch) with grad_in allocated (not filled), launch None when it is empty."""
    grad_in = empty_grad(grad_out, indices)
    if grad_in.numel() == 0:
        return grad_in, None
    g3, k3, i3 = flat(grad_out), flat(indices), flat(grad_in)
    ctx, sizes, a, inner, problem = _plan(
        BACKWARD, k3, {"K": k3, "I": i3}, g3.shape[2], grad_out.dtype, indices.dim() - 2
    )
    strides = (
        *scaled_strides(g3, inner, 1),
        *scaled_strides(k3, inner, a["K"]),
        *scaled_strides(i3, inner, a["I"]),
    )
    return grad_in, _launch(BACKWARD, ctx, (g3, k3, i3, *sizes, *strides), problem)


def backward(grad_out: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """grad_in[n, c, p] = grad_out[n, c, indices[n, c, p]] (0 outside the output)."""
    grad_in, kernel_launch = plan_backward(grad_out, indices)
    if kernel_launch is not None:
        kernel_launch.run()
    return grad_in


def _launch(family, ctx, args, problem) -> KernelLaunch:
    names = ("BLOCK_R", "BLOCK_P") if ctx["tile"] == "rows" else ("BLOCK_P", "BLOCK_C")
    return tiled_launch(family, ctx, ctx["variant"], args, problem, names)


# --- checks ---------------------------------------------------------------------------------------


def check_indices_in_range(indices: torch.Tensor, output_size) -> None:
    """torch's CPU check: every index inside the output plane (reads the values: CPU only)."""
    volume = math.prod(output_size)
    if indices.numel() == 0:
        return
    low, high = indices.aminmax()  # one pass; the common case stops here
    if int(low) < 0 or int(high) >= volume:
        bad = (indices < 0) | (indices >= volume)
        value = int(indices[bad][0])
        dims = list(output_size) + ([1] if len(output_size) == 1 else [])
        raise RuntimeError(
            f"Found an invalid max index: {value} (output volumes are of size "
            f"{'x'.join(map(str, dims))})"
        )


# --- ahead-of-time planning -----------------------------------------------------------------------


def plan_unpool_op(
    op: str,
    input_shape,
    dtype=torch.float16,
    layout: str = "channels_first",
    *,
    direction: str = "fwd",
    kernel_size=2,
    stride=None,
    padding=0,
    output_size=None,
    with_indices: bool = False,  # accepted as every planner does; nothing changes with it
) -> list[KernelLaunch]:
    """The launches of ``op`` ("max_unpool1d" .. "max_unpool3d") on meta tensors, for
    ahead-of-time compilation (aot.plan_window_op's signature): ``input_shape`` is the pooled
    tensor's (N, C, *spatial) in ``layout``, its indices laid out alike; "fwd" the unpooling,
    "bwd" the gather of the input gradient, "double_bwd" the unpooling of a gradient."""
    from torch.nn.modules.utils import _ntuple

    from ..spec import meta_tensor

    ndim = int(op.removeprefix("max_unpool").removesuffix("d"))
    expand = _ntuple(ndim)
    k = expand(kernel_size)
    s = expand(stride) if stride is not None else k
    p = expand(padding)
    spatial = input_shape[2:]
    size = list(
        output_size or [(i - 1) * ss + kk - 2 * pp for i, kk, ss, pp in zip(spatial, k, s, p)]
    )
    channels_last = layout == "channels_last"
    x = meta_tensor(input_shape, dtype, channels_last)
    idx = meta_tensor(input_shape, torch.int64, channels_last)
    if direction == "fwd":
        return [plan_forward(x, idx, size, channels_last and ndim == 2)[1]]
    if direction == "bwd":
        grad_out = empty_output(x, size, channels_last and ndim == 2)
        return [plan_backward(grad_out, idx)[1]]
    grad_grad_in = torch.empty(tuple(input_shape), dtype=dtype, device="meta")
    return [plan_forward(grad_grad_in, idx, size, False)[1]]
