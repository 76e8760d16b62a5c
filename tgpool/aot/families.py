"""The kernel families: one registry that ``tgpool list`` prints and ``tgpool inspect`` compiles.

A family is one template (``templates/<name>.py.jinja``). Adding a family means adding one
``Family`` entry here: what it does, the public ops that launch it, an example call that
``tgpool inspect`` compiles when given no op, and the planner that builds its launches on meta
tensors for ahead-of-time compilation. The tuner needs no entry (launch.GENERIC_SPACE covers
families without their own search space).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

#: max and lp ops (lp: max of |x| for an infinite norm) come first: index_gather serves max only
WINDOW_OPS = (
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "lp_pool1d",
    "lp_pool2d",
    "lp_pool3d",
)
#: window ops whose planner also knows lp and padding="same" / "valid"
_WINDOW_PLANNER = "tgpool.aot.window_plans:plan_pool_op"
#: global pooling: global_max_pool, global_avg_pool and gem are global_pool with a reduction
GLOBAL_OPS = ("global_pool", "ragged_pool")


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    description: str
    ops: tuple[str, ...]  # public functions (tgpool.<op>) whose calls launch it
    #: an aot.inspect_op call that launches this family: op, input_shape, direction, op arguments
    example: dict
    #: "module:function" with aot.plan_window_op's signature: the launches of an op on meta tensors
    planner: str = "tgpool.aot:plan_window_op"

    def plan_function(self) -> Callable:
        module, _, name = self.planner.partition(":")
        return getattr(importlib.import_module(module), name)


_RESNET_STEM = {"kernel_size": 3, "stride": 2, "padding": 1}
_GLOBAL_PLANNER = "tgpool.kernels.global_pool:plan_global_op"
ADAPTIVE_OPS = tuple(f"adaptive_{r}_pool{n}d" for r in ("avg", "max") for n in (1, 2, 3))
_ADAPTIVE_PLANNER = "tgpool.kernels.adaptive:plan_adaptive_op"
UNPOOL_OPS = ("max_unpool1d", "max_unpool2d", "max_unpool3d")
FRACTIONAL_OPS = ("fractional_max_pool2d", "fractional_max_pool3d")


def _fwd_bwd(
    stem: str, fwd: str, bwd: str, ops: tuple[str, ...], example: dict, planner: str
) -> tuple[Family, Family]:
    """The ``stem``_fwd and ``stem``_bwd families of a planner whose backward example is the
    forward's with direction "bwd"."""
    return (
        Family(f"{stem}_fwd", fwd, ops, example, planner=planner),
        Family(f"{stem}_bwd", bwd, ops, {**example, "direction": "bwd"}, planner=planner),
    )


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "window_pool_fwd",
            "max/avg/lp pooling forward over a sliding window (optionally writing argmax indices)",
            WINDOW_OPS,
            {
                "op": "max_pool2d",
                "input_shape": (8, 64, 112, 112),
                "direction": "fwd",
                **_RESNET_STEM,
            },
            planner=_WINDOW_PLANNER,
        ),
        Family(
            "window_pool_bwd",
            "max/avg/lp pooling input gradient, gathered per input position (no atomics)",
            WINDOW_OPS,
            {
                "op": "avg_pool2d",
                "input_shape": (8, 64, 112, 112),
                "direction": "bwd",
                **_RESNET_STEM,
            },
            planner=_WINDOW_PLANNER,
        ),
        Family(
            "index_gather",
            "max pooling double backward: gathers a tensor at the saved argmax indices",
            WINDOW_OPS[:3],
            {
                "op": "max_pool2d",
                "input_shape": (8, 64, 112, 112),
                "direction": "double_bwd",
                **_RESNET_STEM,
            },
        ),
        Family(
            "global_pool_fwd",
            "global max/avg/sum/lp/GeM pooling (masks, packed segments), one tile per row block",
            GLOBAL_OPS,
            {"op": "global_pool", "input_shape": (256, 2048, 7, 7), "reduction": "avg"},
            planner=_GLOBAL_PLANNER,
        ),
        Family(
            "global_pool_combine",
            "global pooling of long rows: combines the splits' partials in order (no atomics)",
            GLOBAL_OPS,
            {"op": "global_pool", "input_shape": (1, 64, 1000000), "reduction": "max"},
            planner=_GLOBAL_PLANNER,
        ),
        Family(
            "global_pool_bwd",
            "global pooling input gradient: each position reads its row's coefficients",
            GLOBAL_OPS,
            {
                "op": "ragged_pool",
                "input_shape": (4096, 256),
                "reduction": "catavgmax",
                "direction": "bwd",
            },
            planner=_GLOBAL_PLANNER,
        ),
        Family(
            "adaptive_pool_fwd",
            "adaptive max/avg pooling forward: windows floor(o*I/O)..ceil((o+1)*I/O), any size",
            ADAPTIVE_OPS,
            {
                "op": "adaptive_avg_pool2d",
                "input_shape": (32, 512, 14, 14),
                "output_size": (7, 7),
                "direction": "fwd",
            },
            planner=_ADAPTIVE_PLANNER,
        ),
        Family(
            "adaptive_pool_bwd",
            "adaptive max/avg pooling input gradient, gathered from the outputs covering it",
            ADAPTIVE_OPS,
            {
                "op": "adaptive_max_pool2d",
                "input_shape": (16, 64, 10, 10),
                "output_size": (4, 4),
                "direction": "bwd",
                "with_indices": True,
            },
            planner=_ADAPTIVE_PLANNER,
        ),
        *_fwd_bwd(
            "max_unpool",
            "max unpooling: zero fill, then each value stored at its index (no atomics)",
            "max unpooling input gradient: a gather at the indices",
            UNPOOL_OPS,
            {"op": "max_unpool2d", "input_shape": (8, 64, 56, 56), "kernel_size": 2},
            "tgpool.kernels.unpool:plan_unpool_op",
        ),
        *_fwd_bwd(
            "fractional_max_pool",
            "fractional max pooling: ATen's per-plane interval rule, windows gathered per output",
            "fractional max pooling input gradient: a gather over the covering windows",
            FRACTIONAL_OPS,
            {"op": "fractional_max_pool2d", "input_shape": (8, 64, 56, 56), "output_size": 32},
            "tgpool.kernels.fractional:plan_fractional_op",
        ),
        *_fwd_bwd(
            "large_window",
            "max/avg pooling of large windows: one separable pass per axis (argmax carried)",
            "large-window pooling input gradient: one gather pass per axis (no atomics)",
            WINDOW_OPS[:6],
            {
                "op": "max_pool2d",
                "input_shape": (8, 64, 64, 64),
                "direction": "fwd",
                "kernel_size": 31,
                "stride": 1,
                "padding": 15,
            },
            "tgpool.kernels.large_window:plan_large_window_op",
        ),
        Family(
            "sppf_fwd",
            "fused SPPF: x and its three chained 'same' max pools concatenated, one input read",
            ("sppf",),
            {"op": "sppf", "input_shape": (16, 256, 20, 20), "layout": "channels_last"},
            planner="tgpool.kernels.sppf:plan_sppf_op",
        ),
        Family(
            "sppf_bwd",
            "fused SPPF input gradient: the x part plus the three pools' argmax gathers",
            ("sppf",),
            {"op": "sppf", "input_shape": (16, 256, 20, 20), "direction": "bwd"},
            planner="tgpool.kernels.sppf:plan_sppf_op",
        ),
    )
}


def ops() -> list[str]:
    """Every public op of every family, in registry order."""
    return list(dict.fromkeys(op for f in FAMILIES.values() for op in f.ops))


def planner_for(op: str) -> Callable:
    """The planner of the first family that lists ``op``."""
    for family in FAMILIES.values():
        if op in family.ops:
            return family.plan_function()
    raise ValueError(f"unknown op {op!r}; known: {', '.join(ops())}")
