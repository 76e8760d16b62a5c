"""Launch planning on meta tensors for the window-pool variants aot.plan_window_op does not
know: lp_pool1d/2d/3d (norm_type) and max/avg pooling with ``padding="same"`` / ``"valid"``.

``plan_pool_op`` has aot.plan_window_op's signature (the family registry's planner contract) and
hands every other call to it; aot.inspect_many compiles its launches through the registry.
"""

from __future__ import annotations

import re

import torch

from ..kernels import window as window_pool
from ..spec import CHANNELS_LAST, DTYPES, is_channels_last, same_padding, window_spec
from . import plan as aot

_LP = re.compile(r"lp_pool([123])d")


def _meta_input(op, input_shape, dtype, layout, ndim):
    if dtype not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype}")
    if len(input_shape) != ndim + 2:
        raise ValueError(f"{op}: input_shape must be batched (N, C, *spatial), got {input_shape}")
    return aot.meta_tensor(input_shape, dtype, aot._LAYOUTS[layout] == CHANNELS_LAST)


def _plan(spec, x, direction, with_indices, x_for_backward=False):
    """fwd: the forward; bwd: the gather (after the forward that recomputes the state when the
    forward kept none), as window_pool launches them."""
    if direction == "fwd":
        return [window_pool.plan_forward(x, spec, with_indices)[2]]
    if direction != "bwd":
        raise ValueError(f"direction must be 'fwd' or 'bwd' here, got {direction!r}")
    stateful = spec.reduction in ("max", "lp")
    out, state, recompute = window_pool.plan_forward(x, spec, stateful)
    grad_in, gather = window_pool.plan_backward(
        torch.empty_like(out),
        state if stateful else None,
        list(x.shape),
        is_channels_last(x, spec.ndim),
        spec,
        x if x_for_backward else None,
    )
    launches = [recompute] if stateful and not with_indices else []
    return [p for p in launches + [gather] if p is not None]


def plan_pool_op(
    op: str,
    input_shape,
    dtype=torch.float16,
    layout="channels_first",
    *,
    direction: str = "fwd",
    with_indices=False,
    **args,
) -> list[window_pool.KernelLaunch]:
    """The launches of ``op`` on a batched input of ``input_shape``: lp_pool*d (``norm_type``,
    ``kernel_size``, ``stride``, ``ceil_mode``; ``with_indices``: the forward keeps the
    backward's state), max/avg pooling with a padding string, large windows as
    large_window.plan_large_window_op (as window_pool dispatches them), anything else as
    aot.plan_window_op."""
    m = _LP.fullmatch(op)
    if m:
        ndim = int(m.group(1))
        spec = window_spec(
            "lp",
            ndim,
            args["kernel_size"],
            args.get("stride"),
            0,
            1,
            args.get("ceil_mode", False),
            norm_type=args.get("norm_type", 2.0),
        )
        x = _meta_input(op, input_shape, dtype, layout, ndim)
        return _plan(spec, x, direction, with_indices, x_for_backward=True)
    padding = args.get("padding", 0)
    if padding == "valid":
        args = {**args, "padding": 0}
    elif padding == "same":
        base = aot.op_spec(op, **{**args, "padding": 0})
        x = _meta_input(op, input_shape, dtype, layout, base.ndim)
        before, after = same_padding(base.kernel_size, base.stride, base.dilation, x.shape[2:])
        spec = window_spec(
            base.reduction,
            base.ndim,
            base.kernel_size,
            base.stride,
            before,
            base.dilation,
            False,
            False,  # "same" averages over the input elements only
            base.divisor_override,
            padding_end=after,
        )
        return _plan(spec, x, direction, with_indices)
    window = {k: v for k, v in args.items() if k != "output_size"}
    if direction in ("fwd", "bwd") and window_pool.takes_large_window_path(
        aot.op_spec(op, **window)
    ):
        from ..kernels import large_window  # the separable passes window_pool.forward dispatches to

        return large_window.plan_large_window_op(
            op, input_shape, dtype, layout, direction=direction, with_indices=with_indices, **args
        )
    return aot.plan_window_op(
        op, input_shape, dtype, layout, direction=direction, with_indices=with_indices, **args
    )
