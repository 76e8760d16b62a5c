"""What tgpool's functions return under ``torch.autocast``: what torch's pooling would.

tgpool's custom ops have no autocast kernel, so autocast passes them the caller's tensors
unchanged. torch's autocast, though, runs some pooling ops in float32: a float16 or bfloat16
input of one of them is cast to float32 first (float64 and float32 are left alone), and the
output is float32. No pooling op is on a lower-precision list, so a float32 input stays float32
everywhere. The functional layer asks ``cast(op, device_type, *tensors)`` before it checks the
dtypes; the cast is an ordinary differentiable ``.to``, so gradients come back in the caller's
dtype, as with torch.

Where the lists come from:

- ``cpu``: ATen's AutocastCPU registrations (aten/src/ATen/autocast_mode.cpp, the CPU ``fp32``
  policy), measured against torch here: max_pool3d (without indices: max_pool3d_with_indices is
  not on the list), avg_pool3d, adaptive_avg_pool3d, adaptive_max_pool3d,
  fractional_max_pool2d/3d, max_unpool2d/3d (max_unpool1d runs max_unpool2d). lp_pool3d is a
  composite of avg_pool3d (max_pool3d for an infinite norm), so float32 too.
- ``cuda``: ATen's AT_FORALL_FP32 / AT_FORALL_FP32_SET_OPT_DTYPE lists (autocast_mode.h),
  which name no pooling op; but ``pow`` is on them, and torch's lp_pool composite starts with
  ``input.pow(norm_type)``: lp pooling with a finite norm returns float32 (an infinite norm
  runs max_pool on ``abs``: the input's dtype).

tgpool-only ops (rules chosen here, not torch's):

- global_pool / global_max_pool / global_avg_pool and the modules on them: as
  ``adaptive_{max,avg}_pool{n}d(x, 1)`` of the same spatial rank n (max for "max", avg for the
  others, either one for "avgmax" / "catavgmax": float32 when either is); "lp" and "gem" as
  ``lp_pool{n}d`` (their torch compositions start with a ``pow``);
- ragged_pool: as a 1-D global pool of the same reduction;
- sppf: as max_pool2d (never cast).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["FLOAT32_OPS", "cast", "cast_input", "op_for_global", "runs_in_float32"]

#: device type -> the ops whose float16 / bfloat16 inputs autocast runs in float32
FLOAT32_OPS: dict[str, frozenset[str]] = {
    "cpu": frozenset(
        {
            "max_pool3d",
            "avg_pool3d",
            "lp_pool3d",
            "adaptive_avg_pool3d",
            "adaptive_max_pool3d",
            "fractional_max_pool2d",
            "fractional_max_pool3d",
            "max_unpool1d",
            "max_unpool2d",
            "max_unpool3d",
        }
    ),
    "cuda": frozenset({"lp_pool1d", "lp_pool2d", "lp_pool3d"}),
}

_REDUCED = (torch.float16, torch.bfloat16)


def op_for_global(reduction: str, ndim: int, inf_norm: bool = False) -> tuple[str, ...]:
    """The torch ops whose rule a global pool of ``reduction`` over ``ndim`` spatial dims
    follows (float32 when any of them is)."""
    n = max(1, min(ndim, 3))
    if reduction in ("lp", "gem"):
        return (f"max_pool{n}d",) if inf_norm else (f"lp_pool{n}d",)
    if reduction == "max":
        return (f"adaptive_max_pool{n}d",)
    if reduction in ("avgmax", "catavgmax", "avg+max"):
        return (f"adaptive_avg_pool{n}d", f"adaptive_max_pool{n}d")
    return (f"adaptive_avg_pool{n}d",)


#: whether autocast is on for any device (one C call: the common case costs nothing more)
any_enabled = torch._C._is_any_autocast_enabled


def runs_in_float32(ops: str | tuple[str, ...], device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` and runs one of ``ops`` in float32."""
    table = FLOAT32_OPS.get(device_type)
    if table is None or not torch.is_autocast_enabled(device_type):
        return False
    names = (ops,) if isinstance(ops, str) else ops
    return any(name in table for name in names)


def cast(ops: str | tuple[str, ...], device_type: str, *tensors):
    """``tensors`` as torch's autocast hands them to ``ops`` on ``device_type``: float16 and
    bfloat16 tensors cast to float32 where the policy says so, everything else (None, integer
    tensors, float32 / float64) as given. Returns a tuple of the same length."""
    if not runs_in_float32(ops, device_type):
        return tensors
    return tuple(
        t.to(torch.float32) if isinstance(t, Tensor) and t.dtype in _REDUCED else t for t in tensors
    )


def cast_input(ops: str | tuple[str, ...], input):
    """``input`` cast as ``cast`` says on its own device; anything but a Tensor as given (the
    caller's checks report it)."""
    if not any_enabled() or not isinstance(input, Tensor):
        return input
    return cast(ops, input.device.type, input)[0]
