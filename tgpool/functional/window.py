"""Pooling functions with torch.nn.functional's names, signatures, defaults and return types.

Every call is checked here, before any kernel is generated or launched, with the exception types
torch raises for the same mistakes. Tensors on which Triton runs (CUDA; CPU under
``TRITON_INTERPRET=1``) go to the ``tgpool::`` custom ops; other tensors use torch's own pooling.

tgpool's additions to torch's signatures: max_pool and avg_pool take ``padding="valid"`` (no
padding) and ``padding="same"`` (TensorFlow's and Keras's: output ceil(input / stride), the total
padding max((out - 1) * stride + (k - 1) * dilation + 1 - input, 0) split before / after with the
odd element after; max ignores the padding, avg divides by the number of input elements in the
window, whatever count_include_pad says; divisor_override still applies). The padding is not
materialised: the kernels take it as window offsets and mask what lies outside the input.
lp_pool1d/2d/3d follow torch's composite exactly (see tgpool.ops.lp).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import runtime
from ..ops import lp as lp_ops
from ..ops import window as ops
from ..reference import padding as padding_reference
from ..spec import DTYPES, PADDING_STRINGS, WindowPoolSpec, same_padding, window_spec
from . import autocast as autocast_policy
from . import checked


def check_input(input: Tensor, op: str, ndim: int) -> bool:
    """Check a pooling input of ``ndim`` spatial dims; returns whether it is batched."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}(): argument 'input' must be a Tensor, not {type(input).__name__}")
    if input.dim() not in (ndim + 1, ndim + 2):
        if op in ("avg_pool2d", "lp_pool2d") and input.dim() < 3:
            # ATen's avg_pool2d (lp_pool2d's composite too) reads input.size(-3) before it
            # checks the rank
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


def _prepare(input: Tensor, spec: WindowPoolSpec, mode: str | None = None):
    """(batched x, batched, spec, the op's padding) after every check; ``mode``: the padding
    string (see _string_padding)."""
    batched = check_input(input, spec.op_name, spec.ndim)
    x = input if batched else input.unsqueeze(0)
    pad = list(spec.padding)
    if mode == "same":
        spec, pad = _same(spec, x)
    spec.output_size(x.shape[2:])  # raises if the output would be empty
    return x, batched, spec, pad


def _string_padding(op: str, padding, ceil_mode) -> str | None:
    """The padding string ("valid", "same"), None for torch's int padding; refuses unknown
    strings and "same" with ceil_mode (ValueError, as torch's conv refuses padding strings)."""
    if not isinstance(padding, str):
        return None
    if padding not in PADDING_STRINGS:
        raise ValueError(
            f"{op}(): invalid padding string {padding!r}, should be one of {PADDING_STRINGS}"
        )
    if padding == "same" and ceil_mode:
        raise ValueError(
            f"{op}(): padding='same' fixes the output size at ceil(input / stride); "
            f"ceil_mode=True has no meaning with it"
        )
    return padding


def _same(spec: WindowPoolSpec, x: Tensor) -> tuple[WindowPoolSpec, list[int]]:
    """The spec with padding="same"'s (before, after) for batched ``x``, and the op's padding."""
    before, after = same_padding(spec.kernel_size, spec.stride, spec.dilation, x.shape[2:])
    spec = window_spec(
        spec.reduction,
        spec.ndim,
        spec.kernel_size,
        spec.stride,
        before,
        spec.dilation,
        False,
        False,  # the count of input elements in the window: TensorFlow's "same"
        spec.divisor_override,
        padding_end=after,
    )
    return spec, list(before + after)


def _max_pool(ndim, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    # autocast's list names max_pool3d, not max_pool3d_with_indices
    op = f"max_pool{ndim}d" + ("_with_indices" if return_indices else "")
    input = autocast_policy.cast_input(op, input)
    window = (kernel_size, stride, padding, dilation, ceil_mode)
    key, call = checked.lookup(("max", ndim), input, *window)
    if call is None:
        mode = _string_padding(f"max_pool{ndim}d", padding, ceil_mode)
        spec = window_spec(
            "max", ndim, kernel_size, stride, 0 if mode else padding, dilation, ceil_mode
        )
        x, batched, spec, pad = _prepare(input, spec, mode)
        if not runtime.uses_triton(x):
            if mode == "same":
                return padding_reference.max_pool_same(input, spec, return_indices)
            return getattr(F, f"max_pool{ndim}d")(input, *window, return_indices)
        call = checked.remember(
            key,
            (
                batched,
                list(spec.kernel_size),
                list(spec.stride),
                pad,
                list(spec.dilation),
                spec.ceil_mode,
            ),
        )
    batched, *args = call
    x = input if batched else input.unsqueeze(0)
    with_indices = bool(return_indices) or (torch.is_grad_enabled() and x.requires_grad)
    out, idx = ops.max_pool(x, *args, with_indices)
    if not batched:
        out, idx = out.squeeze(0), idx.squeeze(0)
    return (out, idx) if return_indices else out


def _avg_pool(
    ndim, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
):
    input = autocast_policy.cast_input(f"avg_pool{ndim}d", input)
    window = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    key, call = checked.lookup(("avg", ndim), input, *window)
    if call is None:
        call = _avg_pool_checked(ndim, input, *window)
        if isinstance(call, Tensor):  # torch's own pooling ran (no Triton on this device)
            return call
        checked.remember(key, call)
    batched, *args = call
    out = ops.avg_pool(input if batched else input.unsqueeze(0), *args)
    return out if batched else out.squeeze(0)


def _avg_pool_checked(
    ndim, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
):
    """(batched, the op's window arguments) after every check, or torch's result where Triton
    does not run."""
    mode = _string_padding(f"avg_pool{ndim}d", padding, ceil_mode)
    spec = window_spec(
        "avg",
        ndim,
        kernel_size,
        stride,
        0 if mode else padding,
        1,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )
    x, batched, spec, pad = _prepare(input, spec, mode)
    if (
        ndim == 3
        and mode != "same"
        and any(i < k for i, k in zip(x.shape[2:], spec.kernel_size, strict=True))
    ):
        # ATen's avg_pool3d (pool3d_shape_check with check_input_size): padding does not count
        raise RuntimeError(
            f"avg_pool3d: input image {tuple(x.shape[2:])} smaller than kernel size "
            f"{spec.kernel_size}"
        )
    if not runtime.uses_triton(x):
        if mode == "same":
            return padding_reference.avg_pool_same(input, spec)
        args = (input, kernel_size, stride, 0 if mode else padding, ceil_mode, count_include_pad)
        if ndim == 1:
            return F.avg_pool1d(*args)
        return getattr(F, f"avg_pool{ndim}d")(*args, divisor_override)
    window = (list(spec.kernel_size), list(spec.stride), pad, spec.ceil_mode)
    return (batched, *window, spec.count_include_pad, spec.divisor_override)


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


# --- lp pooling -----------------------------------------------------------------------------------


def _lp_pool(ndim: int, input, norm_type, kernel_size, stride, ceil_mode) -> Tensor:
    op = f"lp_pool{ndim}d"
    # torch's composite runs max_pool on abs() for an infinite norm, else pow() and avg_pool
    infinite = isinstance(norm_type, (int, float)) and abs(norm_type) == float("inf")
    input = autocast_policy.cast_input(f"max_pool{ndim}d" if infinite else op, input)
    key, call = checked.lookup(("lp", ndim), input, norm_type, kernel_size, stride, ceil_mode)
    if call is None:
        call = _lp_pool_checked(ndim, input, norm_type, kernel_size, stride, ceil_mode)
        if isinstance(call, Tensor):  # torch's own pooling ran (no Triton on this device)
            return call
        checked.remember(key, call)
    batched, *args = call
    x = input if batched else input.unsqueeze(0)
    with_state = torch.is_grad_enabled() and x.requires_grad
    out, _ = lp_ops.lp_pool(x, *args, with_state)
    return out if batched else out.squeeze(0)


def _lp_pool_checked(ndim: int, input, norm_type, kernel_size, stride, ceil_mode):
    """(batched, the op's arguments) after every check, or torch's result where Triton does not
    run."""
    op = f"lp_pool{ndim}d"
    # checks norm_type and the window (torch's lp_pool has no padding and no dilation)
    spec = window_spec("lp", ndim, kernel_size, stride, 0, 1, ceil_mode, norm_type=norm_type)
    x, batched, spec, _ = _prepare(input, spec)
    if (
        ndim == 3
        and spec.kind == "avg"
        and any(i < k for i, k in zip(x.shape[2:], spec.kernel_size, strict=True))
    ):
        # torch's composite runs avg_pool3d, which refuses an input smaller than the kernel
        raise RuntimeError(
            f"{op}: input image {tuple(x.shape[2:])} smaller than kernel size {spec.kernel_size}"
        )
    if not runtime.uses_triton(x):
        return getattr(F, op)(input, norm_type, kernel_size, stride, ceil_mode)
    return (batched, spec.norm_type, list(spec.kernel_size), list(spec.stride), spec.ceil_mode)


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """1D power-average pooling over (N, C, L) or (C, L), as ``torch.nn.functional.lp_pool1d``
    (one kernel; semantics and edge cases in tgpool.ops.lp)."""
    return _lp_pool(1, input, norm_type, kernel_size, stride, ceil_mode)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """2D power-average pooling over (N, C, H, W) or (C, H, W), as
    ``torch.nn.functional.lp_pool2d``."""
    return _lp_pool(2, input, norm_type, kernel_size, stride, ceil_mode)


def lp_pool3d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """3D power-average pooling over (N, C, D, H, W) or (C, D, H, W), as
    ``torch.nn.functional.lp_pool3d``."""
    return _lp_pool(3, input, norm_type, kernel_size, stride, ceil_mode)
