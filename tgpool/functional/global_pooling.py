"""Global pooling: every spatial position of a row reduced to one value per channel.

    global_pool(x, "max")                                  # (N, C, *spatial) -> (N, C)
    global_pool(x, "avg", data_format="channels_last", mask=valid)   # Keras's layout and mask
    gem(x, p=torch.tensor([3.0], requires_grad=True))      # generalized mean, learnable p
    ragged_pool(values, offsets, "max")                    # packed (T, C) segments -> (B, C)

Semantics of every reduction, of masks and of empty rows: see reference/global_pool.py. Every call
is checked here, before any kernel is generated or launched; tensors on which Triton runs (CUDA, CPU
under ``TRITON_INTERPRET=1``) go to the ``tgpool::global_pool`` custom op, others to the
pure-torch reference.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import runtime
from ..kernels.global_layout import collapses
from ..ops import global_pool as global_ops
from ..reference import global_pool as global_reference
from ..spec import DTYPES
from . import autocast as autocast_policy
from . import checked as calls

__all__ = ["global_pool", "global_max_pool", "global_avg_pool", "gem", "ragged_pool"]

REDUCTIONS = ("max", "avg", "sum", "lp", "gem", "avgmax", "catavgmax")
DATA_FORMATS = ("channels_first", "channels_last")
#: what the kernels compute for each public reduction ("avg+max": both in one pass)
KERNEL_REDUCTION = {"avgmax": "avg+max", "catavgmax": "avg+max"}


# --- checks ---------------------------------------------------------------------------------------


def _check_dtype(t: Tensor, op: str, name: str) -> None:
    if t.dtype not in DTYPES:
        raise NotImplementedError(
            f'"{op}" not implemented for {t.dtype} ({name}): tgpool supports float16, bfloat16, '
            f"float32 and float64"
        )


def _check_reduction(reduction, op: str, return_indices: bool) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"{op}: unknown reduction {reduction!r}; expected one of {', '.join(REDUCTIONS)}"
        )
    if return_indices and reduction != "max":
        raise ValueError(f"{op}: return_indices=True needs reduction 'max', got {reduction!r}")


def _check_p(p, eps, reduction: str, op: str, device) -> None:
    """p must be a positive finite power; GeM's may be a one-element floating tensor."""
    if reduction not in ("lp", "gem"):
        return
    if isinstance(p, Tensor):
        if reduction != "gem":
            raise TypeError(f"{op}: p for reduction 'lp' must be a number, not a Tensor")
        if p.numel() != 1 or not p.is_floating_point():
            raise RuntimeError(
                f"{op}: p must be a number or a one-element floating tensor, got a {p.dtype} "
                f"tensor of shape {tuple(p.shape)}"
            )
        if p.device != device and p.device.type != "cpu":
            raise RuntimeError(f"{op}: p is on {p.device} but the input is on {device}")
        if p.device.type == "cpu" and not _tracing(p):
            # a CPU value is read for free; a device value would cost a host synchronisation
            _check_p(float(p.detach().reshape(())), eps, reduction, op, device)
        return
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{op}: p must be a number, not {type(p).__name__}")
    if not (math.isfinite(p) and p > 0):
        raise ValueError(f"{op}: p must be a positive finite number, got {p}")
    if reduction == "gem" and not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"{op}: eps must be a positive number, got {eps!r}")


def _tracing(t: Tensor) -> bool:
    """Whether ``t``'s values are unknown here (fake tensors under torch.compile or export)."""
    return torch.compiler.is_compiling() or type(t).__name__ == "FakeTensor"


def _check_mask(mask, x: Tensor, channels_last: bool, op: str) -> None:
    if mask is None:
        return
    if not isinstance(mask, Tensor):
        raise TypeError(f"{op}: mask must be a Tensor or None, not {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise RuntimeError(f"{op}: expected a bool mask (True = keep), but got {mask.dtype}")
    spatial = x.shape[1:-1] if channels_last else x.shape[2:]
    if tuple(mask.shape) != (x.shape[0], *spatial):
        raise RuntimeError(
            f"{op}: mask of shape {tuple(mask.shape)} does not match the input's batch and "
            f"spatial dims {(x.shape[0], *spatial)}"
        )
    if mask.device != x.device:
        raise RuntimeError(f"{op}: mask is on {mask.device} but the input is on {x.device}")


def _check_input(input, op: str) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}(): argument 'input' must be a Tensor, not {type(input).__name__}")
    if input.dim() not in (3, 4, 5):
        raise RuntimeError(
            f"{op}: expected a batched 3D, 4D or 5D input (N, C, *spatial) or (N, *spatial, C), "
            f"but got input of size {tuple(input.shape)}"
        )
    _check_dtype(input, op, "input")


# --- dense inputs ---------------------------------------------------------------------------------


def _p_tensor(p, x: Tensor) -> Tensor:
    """The power as the kernels read it: a one-element device tensor (no host synchronisation for
    a learnable p; a number is exact in the accumulator dtype)."""
    if isinstance(p, Tensor):
        return p.reshape(1).to(device=x.device)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.full((1,), float(p), dtype=acc, device=x.device)


def global_pool(
    input: Tensor,
    reduction: str = "avg",
    *,
    data_format: str = "channels_first",
    keepdim: bool = False,
    mask: Tensor | None = None,
    p: float | Tensor = 3.0,
    eps: float = 1e-6,
    return_indices: bool = False,
):
    """Reduce every spatial position of (N, C, *spatial) (``channels_first``) or
    (N, *spatial, C) (``channels_last``) to (N, C) (``keepdim``: spatial dims kept as size 1).

    ``reduction``: max, avg, sum, lp (power ``p``), gem (generalized mean: ``p`` a number or a
    learnable one-element tensor, inputs clamped at ``eps``), avgmax ((avg + max) / 2) or
    catavgmax (avg and max concatenated on the channel axis: 2C channels).
    ``mask``: bool (N, *spatial), True where a position counts; a row with no valid position
    gives 0 (and index -1). ``return_indices`` (max only): also the flat spatial index of the
    maximum, in C order over the spatial dims.
    """
    key, call = None, None
    if mask is None and not isinstance(p, Tensor):
        arguments = (reduction, data_format, keepdim, p, eps, return_indices)
        key, call = calls.lookup("global_pool", input, *arguments)
    if call is None:
        # input and p as autocast hands them over
        call, input, p = _global_checked(
            input, reduction, data_format, mask, p, eps, return_indices
        )
        if call[0] is None:  # the reference path ran (no Triton on this device)
            values, channels_last = call[1], data_format == "channels_last"
        else:
            calls.remember(key, call)
    if call[0] is not None:
        contiguous, layout = call
        channels_last = layout == "channels_last"
        x = input.contiguous() if contiguous else input
        values = _pool_triton(x, mask, None, reduction, layout, p, eps, return_indices)
    spatial = range(1, input.dim() - 1) if channels_last else range(2, input.dim())
    out, idx = values
    if keepdim:
        shape = (
            (out.shape[0], *([1] * len(spatial)), out.shape[1])
            if channels_last
            else (*out.shape, *([1] * len(spatial)))
        )
        out = out.reshape(shape)
        idx = idx.reshape(shape) if idx is not None else None
    return (out, idx) if return_indices else out


def _global_checked(input, reduction, data_format, mask, p, eps, return_indices):
    """global_pool's checks: ((whether the input must be copied to collapse its spatial dims,
    the kernels' layout) or (None, the reference path's values) where Triton does not run,
    input, p), input and p as autocast hands them to the kernels."""
    op = "global_pool"
    _check_input(input, op)
    _check_reduction(reduction, op, return_indices)
    input, p = autocast_policy.cast(
        autocast_policy.op_for_global(reduction, input.dim() - 2), input.device.type, input, p
    )
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"{op}: unknown data_format {data_format!r}; expected 'channels_first' or "
            f"'channels_last'"
        )
    channels_last = data_format == "channels_last"
    _check_mask(mask, input, channels_last, op)
    _check_p(p, eps, reduction, op, input.device)
    spatial = range(1, input.dim() - 1) if channels_last else range(2, input.dim())
    if runtime.uses_triton(input):
        return (not collapses(input, spatial), data_format), input, p
    values = _pool_reference(
        global_reference.global_pool, (input, mask), reduction, channels_last, p, eps
    )
    return (None, values), input, p


def _pool_reference(fn, tensors, reduction, *rest):
    """The reference path (devices without Triton), composed like the Triton path."""
    *layout, p, eps = rest
    if isinstance(p, Tensor):  # a CPU p is accepted with any input, as on the Triton path
        p = p.to(tensors[0].device)
    kernel = KERNEL_REDUCTION.get(reduction, reduction)
    if kernel == "avg+max":
        avg, _ = fn(*tensors, "avg", *layout, p, eps)
        mx, _ = fn(*tensors, "max", *layout, p, eps)
        return _combine(reduction, avg, mx), None
    return fn(*tensors, reduction, *layout, p, eps)


def _combine(reduction: str, avg: Tensor, mx: Tensor) -> Tensor:
    if reduction == "avgmax":
        return 0.5 * (avg + mx)
    return torch.cat([avg, mx], dim=1)


def _pool_triton(x, mask, offsets, reduction, layout, p, eps, return_indices):
    kernel = KERNEL_REDUCTION.get(reduction, reduction)
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or (isinstance(p, Tensor) and p.requires_grad)
    )
    with_indices = "max" in kernel and (return_indices or needs_grad)
    p_tensor = _p_tensor(p, x) if kernel in ("gem", "lp") else None
    with_aux = kernel == "gem" and needs_grad and p_tensor.requires_grad
    p_value = float(p) if kernel == "lp" else 0.0
    out, maxes, idx, _aux = global_ops.global_pool(
        x, mask, offsets, p_tensor, kernel, layout, p_value, float(eps), with_indices, with_aux
    )
    if kernel == "avg+max":
        return _combine(reduction, out, maxes), None
    return out, (idx if return_indices else None)


def global_max_pool(
    input: Tensor,
    *,
    data_format: str = "channels_first",
    keepdim: bool = False,
    mask: Tensor | None = None,
    return_indices: bool = False,
):
    """Global max pooling (Keras's GlobalMaxPooling*D; masks accepted as well)."""
    return global_pool(
        input,
        "max",
        data_format=data_format,
        keepdim=keepdim,
        mask=mask,
        return_indices=return_indices,
    )


def global_avg_pool(
    input: Tensor,
    *,
    data_format: str = "channels_first",
    keepdim: bool = False,
    mask: Tensor | None = None,
):
    """Global average pooling (Network in Network's classifier head; Keras's
    GlobalAveragePooling*D)."""
    return global_pool(input, "avg", data_format=data_format, keepdim=keepdim, mask=mask)


def gem(
    input: Tensor,
    p: float | Tensor = 3.0,
    eps: float = 1e-6,
    *,
    data_format: str = "channels_first",
    keepdim: bool = False,
    mask: Tensor | None = None,
):
    """Generalized-mean pooling, (mean of max(x, eps)**p) ** (1/p); ``p`` may be a learnable
    one-element tensor (its gradient is computed too)."""
    return global_pool(
        input, "gem", data_format=data_format, keepdim=keepdim, mask=mask, p=p, eps=eps
    )


# --- ragged inputs --------------------------------------------------------------------------------


def _check_offsets(values, offsets, validate, op: str) -> None:
    if not isinstance(values, Tensor) or not isinstance(offsets, Tensor):
        raise TypeError(f"{op}: values and offsets must be Tensors")
    if values.dim() != 2:
        raise RuntimeError(
            f"{op}: expected values of shape (total_tokens, C), got {tuple(values.shape)}"
        )
    _check_dtype(values, op, "values")
    if offsets.dim() != 1 or offsets.dtype not in (torch.int32, torch.int64):
        raise RuntimeError(
            f"{op}: expected 1-D int32 or int64 offsets (B + 1 segment bounds), got a "
            f"{offsets.dtype} tensor of shape {tuple(offsets.shape)}"
        )
    if offsets.numel() == 0:
        raise RuntimeError(f"{op}: offsets must hold at least one bound (B + 1 values)")
    if offsets.device != values.device and offsets.device.type != "cpu":
        raise RuntimeError(f"{op}: offsets are on {offsets.device}, values on {values.device}")
    if validate is None:  # check when it costs no host synchronisation
        validate = offsets.device.type == "cpu"
    if not validate or _tracing(offsets):
        return
    o = offsets.detach()
    total = values.shape[0]
    if o.numel() <= 1024:  # a list of bounds is checked faster than three tensor ops
        bounds = o.tolist()
        ok = bounds[0] == 0 and bounds[-1] == total
        ok = ok and all(a <= b for a, b in zip(bounds, bounds[1:]))
    else:
        ok = bool((o[0] == 0) & (o[1:] >= o[:-1]).all() & (o[-1] == total))
    if not ok:
        raise RuntimeError(
            f"{op}: offsets must start at 0, never decrease and end at total_tokens ({total}); "
            f"got {o.tolist() if o.numel() <= 16 else 'a tensor that does not'}"
        )


def ragged_pool(
    values: Tensor,
    offsets: Tensor,
    reduction: str = "max",
    *,
    p: float | Tensor = 3.0,
    eps: float = 1e-6,
    return_indices: bool = False,
    validate: bool | None = None,
):
    """Pool packed variable-length segments: ``values`` (total_tokens, C), segment b holding rows
    ``offsets[b]:offsets[b + 1]`` -> (B, C). Reductions as in ``global_pool``; an empty segment
    gives 0 (index -1); indices count from the segment's start.

    No host synchronisation: offsets are read by the kernels. ``validate`` checks that offsets
    start at 0, never decrease and end at total_tokens; by default only when that is free (CPU
    offsets). Unchecked bad offsets never read out of bounds: bounds are clamped to
    [0, total_tokens] and a segment whose end precedes its start is empty.
    """
    op = "ragged_pool"
    _check_offsets(values, offsets, validate, op)
    _check_reduction(reduction, op, return_indices)
    values, p = autocast_policy.cast(
        autocast_policy.op_for_global(reduction, 1), values.device.type, values, p
    )
    _check_p(p, eps, reduction, op, values.device)
    if runtime.uses_triton(values):
        offsets = offsets.to(device=values.device, non_blocking=True)
        out, idx = _pool_triton(values, None, offsets, reduction, "ragged", p, eps, return_indices)
    else:
        out, idx = _pool_reference(
            global_reference.ragged_pool, (values, offsets), reduction, p, eps
        )
    return (out, idx) if return_indices else out
