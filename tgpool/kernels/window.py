"""Window pooling: spec -> render context -> generated kernel -> launch config -> launch.

Tensors reach this module already checked (see functional.py) and batched (N, C, *spatial). The
kernels see every tensor as 5-D (N, C, D, H, W); 1-D and 2-D pools get neutral leading dims by
views, never copies, and every stride is passed explicitly, so any strided input is read in place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import triton

from . import codegen, launch, runtime
from .spec import CHANNELS_LAST, WindowPoolSpec, is_channels_last, output_strides
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

# --- alignment ------------------------------------------------------------------------------------
#
# Triton vectorises an access only when it can prove the offsets are multiples of the vector width,
# and on its own it only recognises integer arguments that are multiples of 16. A 56-wide fp16 row
# (a multiple of 8) would get scalar loads. So the launcher passes each stride and the contiguous
# extent divided by the largest power of two that divides them (up to 16 bytes), and the kernel
# multiplies them back by that constexpr: the products are then known multiples of it.

#: the contiguous dim of the 5-D view (N, C, D, H, W) for each tile
INNER_DIM = {"rows": 4, "channels": 1}


def alignment(t5: torch.Tensor, inner_dim: int, extent: int) -> int:
    """Largest power-of-two element count, at most launch.VECTOR_BYTES, dividing ``t5``'s address,
    every stride but the contiguous ``inner_dim``'s (which must be 1), and ``extent``."""
    vector_bytes = launch.VECTOR_BYTES
    if t5.stride(inner_dim) != 1 or (t5.device.type != "meta" and t5.data_ptr() % vector_bytes):
        return 1
    values = [used_stride(t5, d) for d in range(t5.dim()) if d != inner_dim] + [extent]
    a = vector_bytes // t5.element_size()
    while a > 1 and any(v % a for v in values):
        a //= 2
    return a


def used_stride(t: torch.Tensor, d: int) -> int:
    """``t``'s stride along ``d``, 0 for a size-1 dim (its stride is never used)."""
    return 0 if t.shape[d] == 1 else t.stride(d)


def scaled_strides(t5: torch.Tensor, inner_dim: int, a: int) -> tuple[int, ...]:
    """``t5``'s strides as the kernel takes them: divided by ``a``, except the contiguous one."""
    return tuple(
        used_stride(t5, d) if d == inner_dim else used_stride(t5, d) // a for d in range(t5.dim())
    )


def coord_type(extent: int) -> str:
    """Decompose flat tile coordinates in int32 (int64 division is a slow subroutine on GPUs)
    unless the flattened extent could overflow it."""
    return "tl.int32" if extent < 2**31 - 2**20 else "tl.int64"


def with_coordinates(ctx: dict, extent: int) -> dict:
    """``ctx`` with its ``coord`` type for ``extent`` (see coord_type)."""
    return {**ctx, "coord": coord_type(extent)}


def generated(family: str, ctx: dict):
    """(kernel, source path) for a render context."""
    module = codegen.load(family, ctx)
    return getattr(module, ctx["kernel_name"]), module.__file__


# --- shapes ---------------------------------------------------------------------------------------


def as_5d(t: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C, D, H, W) view with size-1 leading spatial dims."""
    while t.dim() < 5:
        t = t.unsqueeze(2)
    return t


def returns_channels_last(x: torch.Tensor, reduction: str, ndim: int) -> bool:
    """Whether torch returns the output (and the input gradient) of this pool channels-last for
    batched ``x``: when ``x`` is, except for avg_pool3d, which is always contiguous.
    ``reduction``: a spec's ``kind`` (lp's output is its avg_pool's or, for +-inf, max_pool's;
    lp's gradient always has the input's layout)."""
    return is_channels_last(x, ndim) and not (reduction == "avg" and ndim == 3)


def empty_output(x: torch.Tensor, spec: WindowPoolSpec, dtype=None) -> torch.Tensor:
    """Output for batched ``x`` in the memory format torch returns."""
    shape = (*x.shape[:2], *spec.output_size(x.shape[2:]))
    strides = output_strides(shape, returns_channels_last(x, spec.kind, spec.ndim))
    return torch.empty_strided(shape, strides, dtype=dtype or x.dtype, device=x.device)


def empty_like_input(shape, channels_last: bool, like: torch.Tensor) -> torch.Tensor:
    """A dense gradient of the input's shape, channels-last when the input was."""
    strides = output_strides(shape, channels_last)
    return torch.empty_strided(tuple(shape), strides, dtype=like.dtype, device=like.device)


def _sizes(t5: torch.Tensor) -> tuple:
    return tuple(t5.shape[2:])


# --- launches -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KernelLaunch:
    """One kernel launch, fully determined by the tensors it was planned from: the render
    context, the exact kernel argument tuple, and the problem the launch config is chosen for.

    The plan_* functions below build it from real tensors for a launch, or from meta tensors of
    the same shapes, strides and dtypes for ahead-of-time inspection (tgpool/aot.py), so the
    compiled specialisation is the one a real launch gets.
    """

    family: str
    ctx: dict
    variant: object  # what launch.config_for keys on: the spec, or a variant string
    args: tuple
    problem: dict
    grid: Callable[[launch.LaunchConfig], tuple]
    meta: Callable[[launch.LaunchConfig], dict]

    def kernel(self):
        """(kernel, source path) of the generated kernel."""
        return generated(self.family, self.ctx)

    def config(self) -> launch.LaunchConfig:
        # plan=self: the tuner may re-run this launch with other configs (launch.current_plan)
        return launch.config_for(self.family, self.variant, self.problem, plan=self)

    def run(self) -> None:
        kernel, source = self.kernel()
        config = self.config()
        runtime.launch(
            kernel,
            self.grid(config),
            self.args,
            meta=self.meta(config),
            num_warps=config.num_warps,
            num_stages=config.num_stages,
            variant=getattr(self.variant, "describe", lambda: self.variant)(),
            source=source,
            config=config,
        )


def tiled_launch(family, ctx, variant, args, problem, block_names) -> KernelLaunch:
    """A launch over a 2-D grid of tiles: ``problem["outer"]`` by ``problem["inner"]`` in blocks
    of the config's block_outer x block_inner, passed as the kernel's ``block_names``."""
    outer, inner = problem["outer"], problem["inner"]
    return KernelLaunch(
        family,
        ctx,
        variant,
        args,
        problem,
        grid=lambda cfg: (triton.cdiv(outer, cfg.block_outer), triton.cdiv(inner, cfg.block_inner)),
        meta=lambda cfg: {block_names[0]: cfg.block_outer, block_names[1]: cfg.block_inner},
    )


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
    ID, IH, IW = _sizes(x5)
    OD, OH, OW = _sizes(o5)
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
    from . import large_window  # imports this module: imported when first needed

    return large_window.prefer(spec)


def forward(x: torch.Tensor, spec: WindowPoolSpec, with_indices: bool):
    """Pool batched ``x``; returns (out, indices) with indices empty unless asked for. For lp,
    ``with_indices`` asks for the backward's state instead (see state_dtype)."""
    if takes_large_window_path(spec):
        from . import large_window

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
    ID, IH, IW = _sizes(i5)
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
        *_sizes(g5),
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
        from . import large_window

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
        *_sizes(s5),
        *_sizes(k5),
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
