"""``sppf``: YOLOv5/v8's SPPF pooling (the three chained 'same' max pools and the concatenation)
as one fused kernel. Every argument is checked before anything launches, with the exception type
torch's composition raises for the same mistake; non-Triton devices run that composition."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import runtime
from ..ops import sppf as sppf_ops
from ..spec import DTYPES

__all__ = ["sppf", "sppf_reference"]


def sppf_reference(input: Tensor, kernel_size: int = 5) -> Tensor:
    """The composition SPPF blocks compute, in torch: the semantics of ``sppf``."""
    pad = kernel_size // 2
    y1 = F.max_pool2d(input, kernel_size, 1, pad)
    y2 = F.max_pool2d(y1, kernel_size, 1, pad)
    y3 = F.max_pool2d(y2, kernel_size, 1, pad)
    return torch.cat([input, y1, y2, y3], 1)


def check(input, kernel_size) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"sppf(): argument 'input' must be a Tensor, not {type(input).__name__}")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise TypeError(
            f"sppf(): argument 'kernel_size' must be an int, not {type(kernel_size).__name__}"
        )
    if input.dim() != 4:
        raise RuntimeError(
            f"sppf: expected a 4D (N, C, H, W) input, but got input of size {tuple(input.shape)}"
        )
    if any(s == 0 for s in input.shape[1:]):
        raise RuntimeError(
            f"sppf: expected input with non-zero sizes except the batch dim, "
            f"but got input of size {tuple(input.shape)}"
        )
    if input.dtype not in DTYPES:
        raise NotImplementedError(
            f'"sppf" not implemented for {input.dtype}: tgpool supports float16, bfloat16, '
            f"float32 and float64 inputs"
        )
    if kernel_size <= 0:
        raise RuntimeError(f"sppf: kernel_size must be greater than zero, but got {kernel_size}")
    if kernel_size % 2 == 0:
        # torch's composition fails in cat: 'same' padding of an even window adds a row
        raise RuntimeError(
            f"sppf: kernel_size must be odd (padding kernel_size // 2 keeps the size only for "
            f"odd windows), but got {kernel_size}"
        )


def sppf(input: Tensor, kernel_size: int = 5) -> Tensor:
    """``cat([x, y1, y2, y3], 1)`` with ``y1 = max_pool2d(x, k, 1, k // 2)``, ``y2`` and ``y3``
    the same pool of ``y1`` and ``y2``: (N, C, H, W) -> (N, 4C, H, W), in one kernel.

    Values equal torch's composition; gradients too, except where a (2k-1)^2 or (3k-2)^2 window
    holds its maximum at several positions (see tgpool.kernels.sppf.TIE_RULE)."""
    check(input, kernel_size)
    if not runtime.uses_triton(input):
        return sppf_reference(input, kernel_size)
    with_indices = torch.is_grad_enabled() and input.requires_grad
    return sppf_ops.sppf(input, kernel_size, with_indices)[0]
