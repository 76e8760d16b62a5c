"""What every launcher shares: strided 5-D views, alignment, output allocation, and the launch
plan (``KernelLaunch``) that a launcher builds and runs.

A plan is fully determined by the tensors it was planned from: the render context, the kernel
argument tuple, and the problem the launch config is chosen for. Launchers build it from real
tensors for a launch, or from meta tensors of the same shapes, strides and dtypes for
ahead-of-time inspection (tgpool/aot), so the compiled specialisation is the one a real launch gets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import triton

from .. import codegen, launch, runtime
from ..spec import WindowPoolSpec, is_channels_last, output_strides

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
    if t5.stride(inner_dim) != 1 or launch.misaligned(t5, vector_bytes):
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


def spatial_sizes(t5: torch.Tensor) -> tuple:
    return tuple(t5.shape[2:])


# --- launches -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KernelLaunch:
    """One kernel launch, fully determined by the tensors it was planned from: the render
    context, the exact kernel argument tuple, and the problem the launch config is chosen for.

    The plan_* functions below build it from real tensors for a launch, or from meta tensors of
    the same shapes, strides and dtypes for ahead-of-time inspection (tgpool/aot/compiler.py), so
    the compiled specialisation is the one a real launch gets.
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
