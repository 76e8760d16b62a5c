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

WINDOW_OPS = ("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d")


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

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "window_pool_fwd",
            "max/avg pooling forward over a sliding window (optionally writing argmax indices)",
            WINDOW_OPS,
            {
                "op": "max_pool2d",
                "input_shape": (8, 64, 112, 112),
                "direction": "fwd",
                **_RESNET_STEM,
            },
        ),
        Family(
            "window_pool_bwd",
            "max/avg pooling input gradient, gathered per input position (no atomics)",
            WINDOW_OPS,
            {
                "op": "avg_pool2d",
                "input_shape": (8, 64, 112, 112),
                "direction": "bwd",
                **_RESNET_STEM,
            },
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
