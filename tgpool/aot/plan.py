"""Ahead-of-time planning: the launches tgpool would make for an op, built on meta tensors.

``plan_op`` asks the family registry (tgpool/aot/families.py) for the op's planner; window ops are
planned here by ``plan_window_op`` with the launcher's own ``window_pool.plan_*``, so the kernel
arguments are the ones a real launch gets. tgpool/aot/compiler.py compiles and reports on what
these return (and re-exports every name here, so ``aot.plan_op`` & co. keep working).
"""

from __future__ import annotations

import torch

from ..kernels import window as window_pool
from ..spec import (
    CHANNELS_FIRST,
    CHANNELS_LAST,
    DTYPES,
    WindowPoolSpec,
    is_channels_last,
    meta_tensor,
    op_spec,
)

DIRECTIONS = ("fwd", "bwd", "double_bwd")

_LAYOUTS = {
    "channels_first": CHANNELS_FIRST,
    "contiguous": CHANNELS_FIRST,
    "channels_last": CHANNELS_LAST,
}


def window_label(spec: WindowPoolSpec) -> str:
    """E.g. "k3 s2 p1": per-dim values joined by x where they differ; dilation and ceil_mode
    when set."""

    def dims(values):
        return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))

    label = f"k{dims(spec.kernel_size)} s{dims(spec.stride)} p{dims(spec.padding)}"
    if any(d != 1 for d in spec.dilation):
        label += f" d{dims(spec.dilation)}"
    return label + (" ceil" if spec.ceil_mode else "")


def plan_op(op: str, input_shape, dtype=torch.float16, layout="channels_first", **kwargs):
    """The launches tgpool makes for ``op`` on a batched input of ``input_shape`` (meta tensors),
    planned by the family registry's planner for ``op`` (tgpool/aot/families.py); for window ops,
    ``plan_window_op``."""
    from .families import planner_for

    return planner_for(op)(op, input_shape, dtype, layout, **kwargs)


def plan_window_op(
    op: str,
    input_shape,
    dtype=torch.float16,
    layout="channels_first",
    *,
    direction: str = "fwd",
    with_indices=False,
    **window,
) -> list[window_pool.KernelLaunch]:
    """The launches tgpool makes for ``op`` ("max_pool2d", "avg_pool3d", ...) on a batched input
    of ``input_shape``, ``window`` as torch's arguments (kernel_size, stride, padding, ...):
    "fwd" is the forward; "bwd" what autograd runs for the input gradient (for max without saved
    indices: the forward that recomputes them, then the gather); "double_bwd" the gradient of the
    backward (index_gather for max, the forward for avg)."""
    spec = op_spec(op, **window)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if dtype not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype}")
    reduction, ndim = spec.reduction, spec.ndim
    if len(input_shape) != ndim + 2:
        raise ValueError(f"{op}: input_shape must be batched (N, C, *spatial), got {input_shape}")
    channels_last = _LAYOUTS[layout] == CHANNELS_LAST
    x = meta_tensor(input_shape, dtype, channels_last)
    if direction == "fwd":
        return [window_pool.plan_forward(x, spec, with_indices)[2]]
    out, idx, recompute = window_pool.plan_forward(x, spec, reduction == "max")
    if direction == "bwd":
        grad_out = torch.empty_like(out)  # autograd's incoming gradient, laid out like out
        grad_in, gather = window_pool.plan_backward(
            grad_out,
            idx if reduction == "max" else None,
            list(x.shape),
            is_channels_last(x, ndim),
            spec,
        )
        launches = [recompute] if reduction == "max" and not with_indices else []
        return [p for p in launches + [gather] if p is not None]
    grad_grad_in = torch.empty_like(x)
    if reduction == "max":
        return [window_pool.plan_index_gather(grad_grad_in, idx)[1]]
    return [window_pool.plan_forward(grad_grad_in, spec, False)[2]]
