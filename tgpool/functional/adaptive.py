"""Adaptive pooling with torch.nn.functional's names, signatures, defaults and return types.

    y = adaptive_avg_pool2d(x, (7, 7))                        # any input size -> 7 x 7
    y = adaptive_avg_pool2d(x, (None, 1))                     # None keeps that input size
    y, idx = adaptive_max_pool1d(x, 4, return_indices=True)   # torch's int64 flat indices

Output o's window along a dim of input size I and output size O is torch's
[floor(o * I / O), ceil((o + 1) * I / O)). Every call is checked here, before any kernel is
generated or launched, with the exception type torch raises for the same mistake. Tensors on which
Triton runs (CUDA; CPU under ``TRITON_INTERPRET=1``) go to the ``tgpool::adaptive_*`` custom ops;
other tensors use torch's own pooling. An output size of 1 in every dim runs the global-pool
kernels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import runtime
from ..ops import adaptive as adaptive_ops
from ..spec import DTYPES
from . import autocast as autocast_policy
from . import checked as calls

__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
]


# --- checks (torch's order and exception types) ---------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool)


def _check_tensor(input, op: str, ndim: int) -> None:
    if isinstance(input, Tensor):
        return
    # torch's 2-D and 3-D functions call input.size() first (AttributeError); 1-D parses it
    error = TypeError if ndim == 1 else AttributeError
    raise error(f"{op}(): argument 'input' must be a Tensor, not {type(input).__name__}")


def _output_size_1d(output_size, op: str) -> tuple[int]:
    if _is_int(output_size):
        return (output_size,)
    if not isinstance(output_size, Sequence) or isinstance(output_size, str):
        raise TypeError(
            f"{op}(): argument 'output_size' must be an int or a tuple of one int, "
            f"not {type(output_size).__name__}"
        )
    for v in output_size:
        if not _is_int(v):
            raise TypeError(
                f"{op}(): argument 'output_size' must be a tuple of ints, but found an element "
                f"of type {type(v).__name__}"
            )
    if len(output_size) != 1:
        raise RuntimeError(
            f"{op}(): argument 'output_size' should contain one int (got {len(output_size)})"
        )
    return tuple(output_size)


def _output_size_nd(output_size, input: Tensor, op: str, ndim: int) -> tuple[int, ...]:
    """torch's F._list_with_default (None takes the input's size), then ATen's checks."""
    if _is_int(output_size):
        return (output_size,) * ndim
    if not isinstance(output_size, Sequence) or isinstance(output_size, str):
        raise TypeError(
            f"{op}(): argument 'output_size' must be an int or a tuple of ints (None keeps the "
            f"input's size), not {type(output_size).__name__}"
        )
    if input.dim() <= len(output_size):
        raise ValueError(
            f"{op}(): argument 'output_size' has {len(output_size)} sizes: the input dimension "
            f"should be at least {len(output_size) + 1}, but got {input.dim()}"
        )
    tail = input.shape[input.dim() - len(output_size) :]
    sizes = tuple(d if v is None else v for v, d in zip(output_size, tail))
    for v in sizes:
        if not _is_int(v):
            raise TypeError(
                f"{op}(): argument 'output_size' must be a tuple of ints or None, but found an "
                f"element of type {type(v).__name__}"
            )
    if len(sizes) != ndim:
        raise RuntimeError(f"{op}(): output_size must be {ndim} sizes, but got {len(sizes)}")
    return sizes


def _check_input(input: Tensor, op: str, ndim: int, output_size, reduction: str) -> bool:
    """Check the input against torch's rules; returns whether it is batched."""
    if any(v < 0 for v in output_size):
        raise RuntimeError(
            f"{op}(): elements of output_size must be greater than or equal to 0, but got "
            f"{tuple(output_size)}"
        )
    if input.dim() not in (ndim + 1, ndim + 2):
        raise RuntimeError(
            f"{op}(): expected a {ndim + 1}D (unbatched) or {ndim + 2}D (batched) input, "
            f"but got input of size {tuple(input.shape)}"
        )
    # ATen: every non-batch dim (dims 1.. of the input as given) must be non-empty, except for
    # avg 1-D and 2-D, which check the spatial dims only
    first = input.dim() - ndim if reduction == "avg" and ndim < 3 else 1
    for d in range(first, input.dim()):
        if input.shape[d] == 0:
            raise RuntimeError(
                f"{op}(): expected input with non-zero sizes for non-batch dimensions, but "
                f"input has sizes {tuple(input.shape)} with dimension {d} being empty"
            )
    if input.dtype not in DTYPES:
        raise NotImplementedError(
            f'"{op}" not implemented for {input.dtype}: tgpool supports float16, bfloat16, '
            f"float32 and float64 inputs"
        )
    return input.dim() == ndim + 2


def checked(input, output_size, op: str, ndim: int, reduction: str):
    """(batched input, output size tuple, whether the input was batched) after torch's checks."""
    _check_tensor(input, op, ndim)
    if ndim == 1:
        sizes = _output_size_1d(output_size, op)
    else:
        sizes = _output_size_nd(output_size, input, op, ndim)
    batched = _check_input(input, op, ndim, sizes, reduction)
    return (input if batched else input.unsqueeze(0)), sizes, batched


# --- the functions --------------------------------------------------------------------------------


def _adaptive_avg(ndim: int, input, output_size):
    op = f"adaptive_avg_pool{ndim}d"
    input = autocast_policy.cast_input(op, input)
    key, call = calls.lookup(("adaptive_avg", ndim), input, output_size)
    if call is None:
        x, sizes, batched = checked(input, output_size, op, ndim, "avg")
        if not runtime.uses_triton(x):
            return getattr(F, op)(input, output_size)
        call = calls.remember(key, (batched, list(sizes)))
    batched, sizes = call
    out = adaptive_ops.adaptive_avg_pool(input if batched else input.unsqueeze(0), sizes)
    return out if batched else out.squeeze(0)


def _adaptive_max(ndim: int, input, output_size, return_indices):
    op = f"adaptive_max_pool{ndim}d"
    input = autocast_policy.cast_input(op, input)
    key, call = calls.lookup(("adaptive_max", ndim), input, output_size)
    if call is None:
        x, sizes, batched = checked(input, output_size, op, ndim, "max")
        if not runtime.uses_triton(x):
            return getattr(F, op)(input, output_size, return_indices)
        call = calls.remember(key, (batched, list(sizes)))
    batched, sizes = call
    x = input if batched else input.unsqueeze(0)
    with_indices = bool(return_indices) or (torch.is_grad_enabled() and x.requires_grad)
    out, idx = adaptive_ops.adaptive_max_pool(x, sizes, with_indices)
    if not batched:
        out, idx = out.squeeze(0), idx.squeeze(0)
    return (out, idx) if return_indices else out


def adaptive_avg_pool1d(input: Tensor, output_size) -> Tensor:
    """1D adaptive average pooling over (N, C, L) or (C, L), as
    ``torch.nn.functional.adaptive_avg_pool1d``."""
    return _adaptive_avg(1, input, output_size)


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """2D adaptive average pooling over (N, C, H, W) or (C, H, W), as
    ``torch.nn.functional.adaptive_avg_pool2d`` (None in ``output_size`` keeps that size)."""
    return _adaptive_avg(2, input, output_size)


def adaptive_avg_pool3d(input: Tensor, output_size) -> Tensor:
    """3D adaptive average pooling over (N, C, D, H, W) or (C, D, H, W), as
    ``torch.nn.functional.adaptive_avg_pool3d`` (None in ``output_size`` keeps that size)."""
    return _adaptive_avg(3, input, output_size)


def adaptive_max_pool1d(input: Tensor, output_size, return_indices: bool = False):
    """1D adaptive max pooling over (N, C, L) or (C, L), as
    ``torch.nn.functional.adaptive_max_pool1d``; indices are int64 positions along L."""
    return _adaptive_max(1, input, output_size, return_indices)


def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False):
    """2D adaptive max pooling over (N, C, H, W) or (C, H, W), as
    ``torch.nn.functional.adaptive_max_pool2d``; indices are int64 flat (H * W) positions."""
    return _adaptive_max(2, input, output_size, return_indices)


def adaptive_max_pool3d(input: Tensor, output_size, return_indices: bool = False):
    """3D adaptive max pooling over (N, C, D, H, W) or (C, D, H, W), as
    ``torch.nn.functional.adaptive_max_pool3d``; indices are int64 flat (D * H * W) positions."""
    return _adaptive_max(3, input, output_size, return_indices)
