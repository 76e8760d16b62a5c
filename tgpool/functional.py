"""Pooling functions with torch.nn.functional's names, signatures, defaults and return types.

Every call is checked here, before any kernel is generated or launched, with the exception types
torch raises for the same mistakes. Tensors on which Triton runs (CUDA; CPU under
``TRITON_INTERPRET=1``) go to the ``tgpool::`` custom ops; other tensors use torch's own pooling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ops, runtime
from .global_functional import gem, global_avg_pool, global_max_pool, global_pool, ragged_pool
from .spec import DTYPES, WindowPoolSpec, window_spec

__all__ = [
    "global_pool",
    "global_max_pool",
    "global_avg_pool",
    "gem",
    "ragged_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
]


def check_input(input: Tensor, op: str, ndim: int) -> bool:
    """Check a pooling input of ``ndim`` spatial dims; returns whether it is batched."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}(): argument 'input' must be a Tensor, not {type(input).__name__}")
    if input.dim() not in (ndim + 1, ndim + 2):
        if op == "avg_pool2d" and input.dim() < 3:
            # ATen's avg_pool2d reads input.size(-3) before it checks the rank
            raise IndexError(
                f"{op}: expected a 3D (unbatched) or 4D (batched) input, "
                f"but got input of size {tuple(input.shape)}"
            )
        raise RuntimeError(
            f"{op}: expected a {ndim + 1}D (unbatched) or {ndim + 2}D (batched) input, "
            f"but got input of size {tuple(input.shape)}"
        )
    batched = input.dim() == ndim + 2
    if any(s == 0 for s in input.shape[int(batched) :]):
        raise RuntimeError(
            f"{op}: expected input with non-zero sizes except the optional batch dim, "
            f"but got input of size {tuple(input.shape)}"
        )
    if input.dtype not in DTYPES:
        raise NotImplementedError(
            f'"{op}" not implemented for {input.dtype}: tgpool supports float16, bfloat16, '
            f"float32 and float64 inputs"
        )
    return batched


def _prepare(input: Tensor, spec: WindowPoolSpec) -> tuple[Tensor, bool]:
    batched = check_input(input, spec.op_name, spec.ndim)
    x = input if batched else input.unsqueeze(0)
    spec.output_size(x.shape[2:])  # raises if the output would be empty
    return x, batched


def _max_pool(ndim, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    spec = window_spec("max", ndim, kernel_size, stride, padding, dilation, ceil_mode)
    x, batched = _prepare(input, spec)
    if not runtime.uses_triton(x):
        return getattr(F, f"max_pool{ndim}d")(
            input, kernel_size, stride, padding, dilation, ceil_mode, return_indices
        )
    with_indices = bool(return_indices) or (torch.is_grad_enabled() and x.requires_grad)
    out, idx = ops.max_pool(
        x,
        list(spec.kernel_size),
        list(spec.stride),
        list(spec.padding),
        list(spec.dilation),
        spec.ceil_mode,
        with_indices,
    )
    if not batched:
        out, idx = out.squeeze(0), idx.squeeze(0)
    return (out, idx) if return_indices else out


def _avg_pool(
    ndim, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
):
    spec = window_spec(
        "avg", ndim, kernel_size, stride, padding, 1, ceil_mode, count_include_pad, divisor_override
    )
    x, batched = _prepare(input, spec)
    if ndim == 3 and any(i < k for i, k in zip(x.shape[2:], spec.kernel_size, strict=True)):
        # ATen's avg_pool3d (pool3d_shape_check with check_input_size): padding does not count
        raise RuntimeError(
            f"avg_pool3d: input image {tuple(x.shape[2:])} smaller than kernel size "
            f"{spec.kernel_size}"
        )
    if not runtime.uses_triton(x):
        args = (input, kernel_size, stride, padding, ceil_mode, count_include_pad)
        if ndim == 1:
            return F.avg_pool1d(*args)
        return getattr(F, f"avg_pool{ndim}d")(*args, divisor_override)
    out = ops.avg_pool(
        x,
        list(spec.kernel_size),
        list(spec.stride),
        list(spec.padding),
        spec.ceil_mode,
        spec.count_include_pad,
        spec.divisor_override,
    )
    return out if batched else out.squeeze(0)


def max_pool1d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """1D max pooling over (N, C, L) or (C, L), as ``torch.nn.functional.max_pool1d``."""
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """2D max pooling over (N, C, H, W) or (C, H, W), as ``torch.nn.functional.max_pool2d``."""
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """3D max pooling over (N, C, D, H, W) or (C, D, H, W), as torch.nn.functional.max_pool3d."""
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """1D average pooling over (N, C, L) or (C, L), as ``torch.nn.functional.avg_pool1d``."""
    return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def avg_pool2d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """2D average pooling over (N, C, H, W) or (C, H, W), as ``torch.nn.functional.avg_pool2d``."""
    return _avg_pool(
        2, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )


def avg_pool3d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """3D average pooling over (N, C, D, H, W) or (C, D, H, W), as
    ``torch.nn.functional.avg_pool3d``."""
    return _avg_pool(
        3, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
