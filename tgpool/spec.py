"""Kernel variants as frozen, hashable specs, built from torch-style pooling arguments.

A spec is everything that changes the generated source: the reduction (max, avg, or lp with its
norm_type), the window (kernel size, stride, padding, dilation), ceil_mode, the averaging rule, the
dtype and the memory layout. Shapes are not part of it: they are runtime arguments of the kernel.

Padding may be asymmetric (``padding_end``): tgpool's ``padding="same"`` puts the odd extra
element at the end, as TensorFlow and Keras do (``same_padding``).

Argument checks follow ATen's (aten/src/ATen/native/Pool.h) and raise the exception types torch
raises for the same mistakes, so a bad call fails here, before any kernel is generated or launched.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from functools import lru_cache

import torch

#: dtypes the kernels are generated for, with the accumulator each one uses.
DTYPES: dict[torch.dtype, str] = {
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
    torch.float64: "float64",
}

CHANNELS_FIRST = "channels_first"
CHANNELS_LAST = "channels_last"


@dataclasses.dataclass(frozen=True)
class WindowPoolSpec:
    """One window-pooling kernel variant (max, avg or lp, 1 to 3 spatial dims)."""

    reduction: str  # "max" | "avg" | "lp"
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    ceil_mode: bool = False
    count_include_pad: bool = True  # avg only
    divisor_override: int | None = None  # avg only
    dtype: str = "float32"
    layout: str = CHANNELS_FIRST
    #: padding after the input per dim, when it differs from ``padding`` (before the input)
    padding_end: tuple[int, ...] | None = None
    norm_type: float | None = None  # lp only: p, or +-inf

    @property
    def pad_end(self) -> tuple[int, ...]:
        return self.padding if self.padding_end is None else self.padding_end

    @property
    def kind(self) -> str:
        """ "max" for a maximum (max, lp with p = +-inf: a max of +-|x|), "avg" for a sum."""
        if self.reduction == "max" or (self.reduction == "lp" and math.isinf(self.norm_type)):
            return "max"
        return "avg"

    @property
    def ndim(self) -> int:
        return len(self.kernel_size)

    @property
    def op_name(self) -> str:
        return f"{self.reduction}_pool{self.ndim}d"

    def with_tensor(self, x: torch.Tensor) -> WindowPoolSpec:
        """The same window, specialised for ``x``'s dtype and memory layout."""
        return dataclasses.replace(self, dtype=DTYPES[x.dtype], layout=layout_of(x, self.ndim))

    def describe(self) -> str:
        """A short label, e.g. ``max k3x3 s2x2 p1x1 d1x1 float16 channels_last``."""
        x = lambda t: "x".join(map(str, t))  # noqa: E731
        reduction = self.reduction if self.norm_type is None else f"lp{self.norm_type:g}"
        parts = [
            reduction,
            f"k{x(self.kernel_size)}",
            f"s{x(self.stride)}",
            f"p{x(self.padding)}" + ("" if self.padding_end is None else f"+{x(self.padding_end)}"),
        ]
        if self.reduction == "max":
            parts.append(f"d{x(self.dilation)}")
        if self.ceil_mode:
            parts.append("ceil")
        if self.reduction == "avg" and not self.count_include_pad:
            parts.append("exclude_pad")
        if self.divisor_override is not None:
            parts.append(f"div{self.divisor_override}")
        return " ".join(parts + [self.dtype, self.layout])

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Spatial output size for the spatial ``input_size``, exactly as torch computes it."""
        out = tuple(
            pooling_output_size(i, k, s, p, d, self.ceil_mode, pe)
            for i, k, s, p, d, pe in zip(
                input_size, self.kernel_size, self.stride, self.padding, self.dilation, self.pad_end
            )
        )
        if any(o < 1 for o in out):
            raise RuntimeError(
                f"{self.op_name}: given input size {tuple(input_size)}, the calculated output size "
                f"{out} is too small (kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, ceil_mode={self.ceil_mode})"
            )
        return out

    def as_3d(self) -> dict[str, tuple[int, int, int]]:
        """Window parameters padded to (depth, height, width) with neutral leading dims."""
        lead = 3 - self.ndim
        return {
            "kernel": (1,) * lead + self.kernel_size,
            "stride": (1,) * lead + self.stride,
            "padding": (0,) * lead + self.padding,
            "padding_end": (0,) * lead + self.pad_end,
            "dilation": (1,) * lead + self.dilation,
        }


def pooling_output_size(
    size: int, k: int, s: int, p: int, d: int, ceil_mode: bool, p_end: int | None = None
) -> int:
    """ATen's pooling_output_shape: with ceil_mode the last window must start inside the input
    or its left padding. ``p_end``: padding after the input, when it differs from ``p``."""
    p_end = p if p_end is None else p_end
    numer = size + p + p_end - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = numer // s + 1  # floor division, as ATen's div_rtn
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _expand(name: str, op: str, value, ndim: int, *, allow_none: bool = False) -> tuple[int, ...]:
    if value is None and allow_none:
        return ()
    if isinstance(value, bool) or not isinstance(value, (int, Sequence)):
        raise TypeError(
            f"{op}(): argument '{name}' must be an int or a tuple of ints, "
            f"not {type(value).__name__}"
        )
    if isinstance(value, int):
        return (value,) * ndim
    value = tuple(value)
    if allow_none and len(value) == 0:
        return ()
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(
                f"{op}(): argument '{name}' must be a tuple of ints, but found {type(v).__name__}"
            )
    if len(value) == 1:
        return value * ndim
    if len(value) != ndim:
        raise RuntimeError(
            f"{op}: {name} must either be a single int, or a tuple of {ndim} ints, but got {value}"
        )
    return value


@lru_cache(maxsize=4096)
def _cached_spec(
    reduction,
    ndim,
    kernel_size,
    stride,
    padding,
    dilation,
    ceil_mode,
    count_include_pad,
    divisor_override,
    padding_end,
    norm_type,
    arg_types,
) -> WindowPoolSpec:
    # arg_types is only part of the cache key (see window_spec)
    op = f"{reduction}_pool{ndim}d"
    k = _expand("kernel_size", op, kernel_size, ndim)
    s = _expand("stride", op, stride, ndim, allow_none=True) or k
    p = _expand("padding", op, padding, ndim)
    d = _expand("dilation", op, dilation, ndim)
    pe = None if padding_end is None else _expand("padding", op, padding_end, ndim)
    if any(v <= 0 for v in k):
        raise RuntimeError(f"{op}: kernel_size must be greater than zero, but got {k}")
    if any(v <= 0 for v in s):
        raise RuntimeError(f"{op}: stride must be greater than zero, but got {s}")
    if any(v < 0 for v in p + (pe or ())):
        raise RuntimeError(f"{op}: padding must be non-negative, but got {p}")
    if any(v <= 0 for v in d):
        raise RuntimeError(f"{op}: dilation must be greater than zero, but got {d}")
    if pe is None:
        # ATen's pool{1,2,3}d_shape_check: half of the kernel size, whatever the dilation.
        if any(pp > kk // 2 for kk, pp in zip(k, p)):
            raise RuntimeError(
                f"{op}: padding should be at most half of the kernel size, but got "
                f"padding={p}, kernel_size={k} and dilation={d}"
            )
    elif any(max(a, b) > (kk - 1) * dd for kk, dd, a, b in zip(k, d, p, pe)):
        # asymmetric padding (padding="same" computes it): no window may lie in the padding only
        raise RuntimeError(
            f"{op}: padding {p} before and {pe} after the input must be smaller than the "
            f"kernel's extent (kernel_size={k}, dilation={d})"
        )
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, int):
            raise TypeError(f"{op}(): divisor_override must be an int or None")
        if divisor_override == 0:
            raise RuntimeError(f"{op}: divisor_override must be non-zero")
    return WindowPoolSpec(
        reduction=reduction,
        kernel_size=k,
        stride=s,
        padding=p,
        dilation=d,
        ceil_mode=bool(ceil_mode),
        count_include_pad=bool(count_include_pad),
        divisor_override=divisor_override,
        padding_end=None if pe == p else pe,
        norm_type=norm_type,
    )


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def _types(*values) -> tuple:
    """The types of the arguments and of their elements. lru_cache finds 2.0 and True equal to 2,
    so without them in the key a cached spec for kernel_size=2 would accept 2.0 or (2.0, 2)."""
    return tuple(
        (type(v), *map(type, v)) if isinstance(v, (list, tuple)) else type(v) for v in values
    )


def check_norm_type(norm_type, op: str) -> float:
    """lp pooling's p as a float: any number but 0 (torch divides by it: ZeroDivisionError) and
    NaN; +-inf are torch's max of +-|x|."""
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)):
        raise TypeError(
            f"{op}(): argument 'norm_type' must be an int or a float, not "
            f"{type(norm_type).__name__}"
        )
    if norm_type == 0:
        raise ZeroDivisionError(f"{op}(): norm_type must be non-zero (the root is 1 / norm_type)")
    if math.isnan(norm_type):
        raise ValueError(f"{op}(): norm_type must be a number, got nan")
    return float(norm_type)


def window_spec(
    reduction: str,
    ndim: int,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    *,
    padding_end=None,
    norm_type: float | None = None,
) -> WindowPoolSpec:
    """Normalise and check torch-style arguments into a (layout- and dtype-free) spec.

    ``padding_end``: padding after the input when it differs from ``padding`` (before it);
    ``norm_type``: lp pooling's p (reduction "lp", which has no padding and no dilation)."""
    if reduction not in ("max", "avg", "lp"):
        raise ValueError(f"unknown reduction {reduction!r}; expected 'max', 'avg' or 'lp'")
    if reduction == "lp":
        norm_type = check_norm_type(norm_type, f"lp_pool{ndim}d")
    else:
        norm_type = None
    try:
        return _cached_spec(
            reduction,
            ndim,
            _hashable(kernel_size),
            _hashable(stride),
            _hashable(padding),
            _hashable(dilation),
            ceil_mode,
            count_include_pad,
            divisor_override,
            _hashable(padding_end),
            norm_type,
            _types(kernel_size, stride, padding, dilation, divisor_override, padding_end),
        )
    except TypeError as e:
        if "unhashable" not in str(e):
            raise
        raise TypeError(
            f"{reduction}_pool{ndim}d(): arguments must be ints or tuples of ints"
        ) from e


# --- string paddings ------------------------------------------------------------------------------

#: padding strings tgpool accepts (TensorFlow's / Keras's; torch's pooling takes none)
PADDING_STRINGS = ("valid", "same")


def same_padding(kernel_size, stride, dilation, input_size) -> tuple[tuple, tuple]:
    """(before, after) per dim for padding="same": output ceil(I / s), total padding
    max((O - 1) * s + (k - 1) * d + 1 - I, 0), the odd element after (TensorFlow's rule)."""
    before, after = [], []
    for k, s, d, i in zip(kernel_size, stride, dilation, input_size, strict=True):
        out = -(-i // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - i, 0)
        before.append(total // 2)
        after.append(total - total // 2)
    return tuple(before), tuple(after)


# --- memory layout -------------------------------------------------------------------------------


def _strides_like_channels_last(sizes: Sequence[int], strides: Sequence[int], order) -> bool:
    """c10's is_channels_last_strides_{2,3}d_s{4,5} heuristic, so outputs follow torch's choice."""
    if strides[1] == 0:
        return False
    min_stride = 0
    for d in order:
        if sizes[d] == 0:
            return False
        if strides[d] < min_stride:
            return False
        if d == 0 and min_stride == strides[1]:
            return False
        min_stride = strides[d]
        if sizes[d] > 1:
            min_stride *= sizes[d]
    return True


def is_channels_last(x: torch.Tensor, ndim: int) -> bool:
    """Whether torch would treat the batched input ``x`` (N, C, *spatial) as channels-last."""
    sizes, strides = list(x.shape), list(x.stride())
    if ndim == 1:  # torch pools 1D inputs as (N, C, 1, L)
        strides.insert(2, sizes[2] * strides[2])
        sizes.insert(2, 1)
        ndim = 2
    order = (1, 3, 2, 0) if ndim == 2 else (1, 4, 3, 2, 0)
    return _strides_like_channels_last(sizes, strides, order)


def layout_of(x: torch.Tensor, ndim: int) -> str:
    """Which tile the kernel uses: channels-last (C contiguous) or channels-first."""
    return CHANNELS_LAST if is_channels_last(x, ndim) and x.shape[1] > 1 else CHANNELS_FIRST


def output_strides(shape: Sequence[int], channels_last: bool) -> tuple[int, ...]:
    """Dense strides for ``shape`` (N, C, *spatial), contiguous or channels-last."""
    shape = list(shape)
    order = list(range(len(shape) - 1, -1, -1))  # innermost first
    if channels_last:
        order = [1] + list(range(len(shape) - 1, 1, -1)) + [0]
    strides = [0] * len(shape)
    acc = 1
    for d in order:
        strides[d] = acc
        acc *= max(shape[d], 1)
    return tuple(strides)


# --- specs and tensors for planning without data (ahead-of-time tools, launch planners) ---


def meta_tensor(shape, dtype, channels_last: bool) -> torch.Tensor:
    """A dense meta tensor of ``shape`` (N, C, *spatial), contiguous or channels-last."""
    return torch.empty_strided(
        tuple(shape), output_strides(shape, channels_last), dtype=dtype, device="meta"
    )


def op_spec(
    op: str,
    *,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
) -> WindowPoolSpec:
    """The window spec of ``op`` ("max_pool1d" .. "avg_pool3d") for torch-style arguments."""
    m = re.fullmatch(r"(max|avg)_pool([123])d", op)
    if m is None:
        raise ValueError(f"unknown op {op!r}; expected max_pool1d .. avg_pool3d")
    reduction, ndim = m.group(1), int(m.group(2))
    if reduction == "avg" and dilation != 1:
        raise ValueError(f"{op} has no dilation")
    return window_spec(
        reduction,
        ndim,
        kernel_size,
        stride,
        padding,
        dilation,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )
