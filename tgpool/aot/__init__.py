"""Ahead-of-time tools: compile generated kernels for GPU targets without a GPU and report on them.

    plan.py          the launches an op makes, planned on meta tensors (plan_op, plan_window_op)
    window_plans.py  planners for the lp and padding="same" window variants
    families.py      the registry of kernel families (template, ops, example, planner)
    specialise.py    the specialisation Triton's JIT gives a launch
    compiler.py      compile for sm_80 / sm_90a, read registers, spills (cuobjdump)
    report.py        KernelReport, access widths from the PTX, the table
    __main__.py      python -m tgpool.aot

``from tgpool import aot`` then ``aot.inspect_op(...)``: the names below are the entry points.
"""

from .compiler import (
    ARCHS,
    AOTError,
    can_compile_here,
    compilable_kernel,
    compile_launch,
    inspect_many,
    inspect_op,
    resource_usage,
    target,
)
from .plan import (
    _LAYOUTS,
    DIRECTIONS,
    meta_tensor,
    op_spec,
    plan_op,
    plan_window_op,
    window_label,
)
from .report import KernelReport, format_table, global_access_widths
from .specialise import rule_specialisation, specialise

__all__ = [
    "ARCHS",
    "AOTError",
    "DIRECTIONS",
    "KernelReport",
    "can_compile_here",
    "compilable_kernel",
    "compile_launch",
    "format_table",
    "global_access_widths",
    "inspect_many",
    "inspect_op",
    "meta_tensor",
    "op_spec",
    "plan_op",
    "plan_window_op",
    "resource_usage",
    "rule_specialisation",
    "specialise",
    "target",
    "window_label",
]
_PRIVATE = (_LAYOUTS,)  # aot._LAYOUTS: the layout names plan_window_op accepts
