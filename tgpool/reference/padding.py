"""padding="same" in plain torch, for tensors on which Triton does not run (CPU without the
interpreter): the input padded explicitly (a copy the kernels never make), then torch's pooling.

max pads with -inf and maps torch's indices back to the unpadded input; avg pads with zeros and
divides each window's sum by its number of input elements (TensorFlow's "same"), or by
divisor_override.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..spec import WindowPoolSpec


def _pad_arg(spec: WindowPoolSpec) -> list[int]:
    """F.pad's argument: (before, after) pairs from the last dim to the first."""
    pad = []
    for before, after in reversed(list(zip(spec.padding, spec.pad_end, strict=True))):
        pad += [before, after]
    return pad


def _batched(input: Tensor, ndim: int) -> tuple[Tensor, bool]:
    batched = input.dim() == ndim + 2
    return (input if batched else input.unsqueeze(0)), batched


def max_pool_same(input: Tensor, spec: WindowPoolSpec, return_indices: bool):
    x, batched = _batched(input, spec.ndim)
    xp = F.pad(x, _pad_arg(spec), value=-math.inf)
    pool = getattr(F, f"max_pool{spec.ndim}d")
    out, idx = pool(xp, spec.kernel_size, spec.stride, 0, spec.dilation, return_indices=True)
    # flat index in the padded plane -> coordinates -> flat index in the input's plane
    padded_sizes, sizes = xp.shape[2:], x.shape[2:]
    flat = torch.zeros_like(idx)
    rest = idx
    coords = []
    for size in reversed(padded_sizes):
        coords.append(rest % size)
        rest = rest // size
    for coord, before, size in zip(reversed(coords), spec.padding, sizes, strict=True):
        flat = flat * size + (coord - before)
    if not batched:
        out, flat = out.squeeze(0), flat.squeeze(0)
    return (out, flat) if return_indices else out


def avg_pool_same(input: Tensor, spec: WindowPoolSpec) -> Tensor:
    x, batched = _batched(input, spec.ndim)
    pad = _pad_arg(spec)
    n = math.prod(spec.kernel_size)
    pool = getattr(F, f"avg_pool{spec.ndim}d")
    sums = pool(F.pad(x, pad), spec.kernel_size, spec.stride, 0) * n
    if spec.divisor_override is not None:
        out = sums / spec.divisor_override
    else:
        ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
        counts = (pool(F.pad(ones, pad), spec.kernel_size, spec.stride, 0) * n).round()
        out = sums / counts
    return out if batched else out.squeeze(0)
