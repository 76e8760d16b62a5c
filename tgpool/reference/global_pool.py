"""Global pooling in plain torch: the documented semantics, and what devices without Triton run.

Every reduction works on one canonical view, (B, S, C) values with a (B, S) validity mask:
B rows, each reducing S positions, per channel. Dense inputs give B = N and S = the product of
the spatial sizes; ragged inputs give one row per segment.

Results over the valid positions of a row:

=========  ==========================================  ===============================
reduction  value                                       empty row (no valid position)
=========  ==========================================  ===============================
max        the maximum (NaN if any is NaN); the index  0, index -1, zero gradient
           is the first maximum (the last NaN)
sum        sum of x                                    0
avg        sum of x / count                            0
lp         (sum of x**p) ** (1/p)  (torch's lp_pool)   0
gem        (sum of max(x, eps)**p / count) ** (1/p)    0, zero gradient for x and p
=========  ==========================================  ===============================

``avgmax`` is (avg + max) / 2 and ``catavgmax`` concatenates avg and max on the channel axis.
The Triton kernels compute the same things (tests hold them to torch, not to this module).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _finalize_empty(value: Tensor, count: Tensor) -> Tensor:
    return torch.where(count[:, None] > 0, value, torch.zeros_like(value))


def reduce_rows(x3: Tensor, valid: Tensor, reduction: str, p, eps: float):
    """(value (B, C), indices or None) for canonical ``x3`` (B, S, C) and ``valid`` (B, S)."""
    count = valid.sum(1)
    keep = valid[:, :, None]
    if reduction == "max":
        filled = x3.masked_fill(~keep, float("-inf"))
        if x3.shape[1] == 0:
            value = x3.new_zeros(x3.shape[0], x3.shape[2])
            return value, value.new_full(value.shape, -1, dtype=torch.int64)
        value, index = filled.max(dim=1)
        empty = count[:, None] == 0
        return value.masked_fill(empty, 0), index.masked_fill(empty, -1)
    if reduction in ("sum", "avg"):
        total = x3.masked_fill(~keep, 0).sum(1)
        if reduction == "sum":
            return total, None
        return _finalize_empty(total / count.clamp(min=1)[:, None].to(x3.dtype), count), None
    if reduction == "lp":
        total = x3.pow(p).masked_fill(~keep, 0).sum(1)
        return _finalize_empty(total.pow(1.0 / p), count), None
    if reduction == "gem":
        powered = x3.clamp(min=eps).pow(p).masked_fill(~keep, 0)
        mean = powered.sum(1) / count.clamp(min=1)[:, None].to(x3.dtype)
        safe = torch.where(count[:, None] > 0, mean, torch.ones_like(mean))
        return _finalize_empty(safe.pow(1.0 / p), count), None
    raise ValueError(f"unknown reduction {reduction!r}")


def canonical(x: Tensor, channels_last: bool) -> Tensor:
    """(N, C, *spatial) or (N, *spatial, C) -> (N, S, C)."""
    if channels_last:
        return x.reshape(x.shape[0], -1, x.shape[-1])
    return x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)


def global_pool(x: Tensor, mask: Tensor | None, reduction: str, channels_last: bool, p, eps):
    """(value (N, C), indices or None) of a dense input."""
    x3 = canonical(x, channels_last)
    if mask is None:
        valid = torch.ones(x3.shape[:2], dtype=torch.bool, device=x.device)
    else:
        valid = mask.reshape(x3.shape[:2])
    return reduce_rows(x3, valid, reduction, p, eps)


def ragged_pool(values: Tensor, offsets: Tensor, reduction: str, p, eps):
    """(value (B, C), indices or None) of packed segments; indices count from a segment's start.
    Reads the offsets on the host: this path serves devices without Triton only."""
    bounds = offsets.tolist()
    B = len(bounds) - 1
    longest = max([e - s for s, e in zip(bounds[:-1], bounds[1:])], default=0)
    longest = max(longest, 0)
    x3 = values.new_zeros(B, longest, values.shape[1])
    valid = torch.zeros(B, longest, dtype=torch.bool, device=values.device)
    rows = []
    for b, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        n = max(e - s, 0)
        rows.append(torch.nn.functional.pad(values[s:e], (0, 0, 0, longest - n)))
        valid[b, :n] = True
    if rows:
        x3 = torch.stack(rows)
    return reduce_rows(x3, valid, reduction, p, eps)
