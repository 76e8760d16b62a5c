"""max_unpool and fractional max pooling with torch.nn.functional's names, signatures, defaults,
output sizes and errors.

Every call is checked here, before any kernel is generated or launched, with the exception types
(and messages) torch raises for the same mistakes. Tensors on which Triton runs (CUDA; CPU under
``TRITON_INTERPRET=1``) go to the ``tgpool::`` custom ops; other tensors use torch's own functions.

Where tgpool differs from torch (documented in the README's integration notes):
- max_unpool: with repeated indices one of the values is kept (torch's CPU keeps the last, CUDA
  an unspecified one); out-of-range indices raise on CPU tensors as in torch, and are skipped
  without a host synchronisation on CUDA tensors (torch's CUDA kernel asserts on the device).
- fractional_max_pool: kernel sizes below 1 and samples on another device raise (torch computes
  windows outside the input for the former); windows are always clamped inside the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair, _single, _triple

from .. import runtime
from ..ops import fractional as fractional_ops
from ..ops import unpool as unpool_ops
from ..spec import DTYPES, _strides_like_channels_last, is_channels_last
from . import autocast as autocast_policy

__all__ = [
    "max_unpool1d",
    "max_unpool2d",
    "max_unpool3d",
    "fractional_max_pool2d",
    "fractional_max_pool3d",
]

_EXPAND = {1: _single, 2: _pair, 3: _triple}
#: c10's ScalarType names, as torch's messages print dtypes
_SCALAR_NAMES = {
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.float32: "Float",
    torch.float64: "Double",
    torch.int8: "Char",
    torch.uint8: "Byte",
    torch.int16: "Short",
    torch.int32: "Int",
    torch.int64: "Long",
    torch.bool: "Bool",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


def _scalar_name(dtype: torch.dtype) -> str:
    return _SCALAR_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _require_tensor(op: str, name: str, value) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}(): argument '{name}' must be a Tensor, not {type(value).__name__}")


def _require_ints(op: str, name: str, values) -> list[int]:
    values = list(values)
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(
                f"{op}(): argument '{name}' must be tuple of ints, but found element of type "
                f"{type(v).__name__} at pos {i}"
            )
    return values


# --- max_unpool -----------------------------------------------------------------------------------


def unpool_output_size(input: Tensor, kernel_size, stride, padding, output_size) -> list[int]:
    """torch.nn.functional._unpool_output_size: the default from kernel, stride and padding, or
    ``output_size`` (with or without the batch and channel dims) within a stride of it."""
    n = len(kernel_size)
    default = [
        (input.size(-n + d) - 1) * stride[d] + kernel_size[d] - 2 * padding[d] for d in range(n)
    ]
    if output_size is None:
        ret = default
    else:
        output_size = list(output_size)
        if len(output_size) == n + 2:
            output_size = output_size[2:]
        if len(output_size) != n:
            raise ValueError(
                f"output_size should be a sequence containing {n} or {n + 2} elements, but it "
                f"has a length of '{len(output_size)}'"
            )
        for d in range(n):
            low, high = default[d] - stride[d], default[d] + stride[d]
            if not low < output_size[d] < high:
                raise ValueError(
                    f'invalid output_size "{output_size}" (dim {d} must be between {low} and '
                    f"{high})"
                )
        ret = output_size
    for d in range(n):
        if ret[d] < 0:
            raise ValueError(
                "max_unpooling: output_size must contain non-negative spatial dimensions, but "
                f"got output_size[{d}]={ret[d]}"
            )
    return ret


def _unpool_output_channels_last(x: Tensor, ndim: int, batched: bool) -> bool:
    """torch's output memory format: 2D follows the input's suggest_memory_format (batched
    inputs only), 1D is computed as 2D on the (N, C, L, 1) view (channels-last only in
    degenerate cases), 3D is always contiguous."""
    if not batched or ndim == 3:
        return False
    if ndim == 2:
        return is_channels_last(x, 2)
    sizes, strides = [*x.shape, 1], [*x.stride(), 1]  # unsqueeze(-1) appends stride 1
    return _strides_like_channels_last(sizes, strides, (1, 3, 2, 0))


def _check_unpool(op: str, ndim: int, input: Tensor, indices: Tensor, output_size) -> None:
    """ATen's max_unpooling{2,3}d checks, in its order (1D is checked as 2D, as torch does)."""
    aten_ndim = max(ndim, 2)
    name = f"max_unpooling{aten_ndim}d"
    if indices.dtype != torch.int64:
        raise RuntimeError(
            f"elements in indices should be type int64 but got: {_scalar_name(indices.dtype)}"
        )
    shown_dim = input.dim() + (1 if ndim == 1 else 0)
    if shown_dim not in (aten_ndim + 1, aten_ndim + 2):
        raise RuntimeError(
            f"Input to {name} should be a {aten_ndim + 1}d or {aten_ndim + 2}d Tensor, but got a "
            f"tensor with {shown_dim} dimensions."
        )
    if input.shape != indices.shape:
        extra = [1] if ndim == 1 else []
        raise RuntimeError(
            "Expected shape of indices to be same as that of the input tensor "
            f"({[*input.shape, *extra]}) but got indices tensor with shape: "
            f"{[*indices.shape, *extra]}"
        )
    if input.device != indices.device:
        raise RuntimeError(
            f"{op}: expected 'indices' on the input's device {input.device}, got {indices.device}"
        )
    shown = [*input.shape, *([1] if ndim == 1 else [])]
    batched = input.dim() == ndim + 2
    for d in range(1 if batched else 0, len(shown)):
        if shown[d] == 0:
            raise RuntimeError(
                f"{name}_forward_out_{input.device.type}(): Expected input to have non-zero size "
                f"for non-batch dimensions, but got {shown} with dimension {d} being empty."
            )
    if input.dtype not in DTYPES:
        raise NotImplementedError(
            f"\"{op}\" not implemented for '{_scalar_name(input.dtype)}': tgpool supports "
            f"float16, bfloat16, float32 and float64 inputs"
        )


def _max_unpool(ndim, input, indices, kernel_size, stride, padding, output_size):
    op = f"max_unpool{ndim}d"
    _require_tensor(op, "input", input)
    _require_tensor(op, "indices", indices)
    input = autocast_policy.cast_input(op, input)
    expand = _EXPAND[ndim]
    kernel_size = expand(kernel_size)
    stride = expand(stride) if stride is not None else kernel_size
    padding = expand(padding)
    size = unpool_output_size(input, kernel_size, stride, padding, output_size)
    size = _require_ints(op, "output_size", size)
    if ndim == 3:
        _check_unpool3d_stride(op, stride, padding)
    _check_unpool(op, ndim, input, indices, size)
    if not runtime.uses_triton(input):
        return getattr(F, op)(input, indices, kernel_size, stride, padding, output_size)
    return _unpool(ndim, input, indices, size)


def max_unpool_to_size(ndim, input, indices, output_size, stride=None, padding=None):
    """max_unpool{ndim}d to ``output_size`` (the spatial size), as ATen's ``max_unpool2d/3d`` op
    takes it (``tgpool.enable`` routes that op here); ``stride`` and ``padding``: max_unpool3d's,
    checked as ATen checks them."""
    op = f"max_unpool{ndim}d"
    size = _require_ints(op, "output_size", output_size)
    if ndim == 3:
        _check_unpool3d_stride(op, stride, padding)
    _check_unpool(op, ndim, input, indices, size)
    return _unpool(ndim, input, indices, size)


def _check_unpool3d_stride(op: str, stride, padding) -> None:
    """ATen's max_unpool3d checks: stride and padding ints, stride positive."""
    stride = _require_ints(op, "stride", stride)
    _require_ints(op, "padding", padding)
    if any(s <= 0 for s in stride):
        raise RuntimeError(f"strides should be greater than zero, but got stride: {stride}")


def _unpool(ndim, input, indices, size):
    batched = input.dim() == ndim + 2
    x, k = (input, indices) if batched else (input.unsqueeze(0), indices.unsqueeze(0))
    channels_last = _unpool_output_channels_last(input, ndim, batched)
    out = unpool_ops.max_unpool(x, k, size, channels_last)
    return out if batched else out.squeeze(0)


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Partial inverse of max_pool1d over (N, C, L) or (C, L), as F.max_unpool1d."""
    return _max_unpool(1, input, indices, kernel_size, stride, padding, output_size)


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Partial inverse of max_pool2d over (N, C, H, W) or (C, H, W), as F.max_unpool2d."""
    return _max_unpool(2, input, indices, kernel_size, stride, padding, output_size)


def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Partial inverse of max_pool3d over (N, C, D, H, W) or (C, D, H, W), as F.max_unpool3d."""
    return _max_unpool(3, input, indices, kernel_size, stride, padding, output_size)


# --- fractional max pooling -----------------------------------------------------------------------

_DIM_NAMES = {2: ("height", "width"), 3: ("time", "height", "width")}


def fractional_output_size(ndim, input: Tensor, output_size, output_ratio):
    """torch.nn.functional's rule: ``output_size``, else int(input size * ratio) per dim."""
    op = f"fractional_max_pool{ndim}d"
    if output_size is None and output_ratio is None:
        raise ValueError(f"{op} requires specifying either an output_size or an output_ratio")
    if output_size is None:
        if ndim == 2 and len(output_ratio) > 2:
            raise ValueError(
                f"{op} requires output_ratio to either be a single Int or tuple of Ints."
            )
        ratio = _EXPAND[ndim](output_ratio)
        output_size = [int(input.size(d - ndim) * ratio[d]) for d in range(ndim)]
    return output_size


def _check_fractional(ndim: int, input: Tensor, kernel_size, output_size, samples) -> None:
    """ATen's fractional_max_pool{2,3}d checks, in its order."""
    op = f"fractional_max_pool{ndim}d"
    count = "Ints" if ndim == 2 else "three Ints"
    if len(kernel_size) != ndim:
        raise RuntimeError(f"{op}: kernel_size must either be a single Int or tuple of {count}")
    if len(output_size) != ndim:
        raise RuntimeError(f"{op}: output_size must either be a single Int or tuple of {count}")
    aten = op if ndim == 2 else f"{op}_out"
    if input.dim() not in (ndim + 1, ndim + 2):
        raise RuntimeError(
            f"{aten}(): Expected {ndim + 1}D or {ndim + 2}D input tensor, but got: "
            f"{list(input.shape)}"
        )
    for d in range(1, input.dim()):
        if input.shape[d] == 0:
            raise RuntimeError(
                f"{aten}(): Expected input to have non-zero size for non-batch dimensions, but "
                f"got{list(input.shape)} with dimension {d} being empty."
            )
    if any(k < 1 for k in kernel_size):  # torch accepts these and reads outside the input
        raise RuntimeError(f"{op}: kernel_size must be greater than zero, but got {kernel_size}")
    spatial = input.shape[-ndim:]
    for name, o, k, i in zip(_DIM_NAMES[ndim], output_size, kernel_size, spatial, strict=True):
        if not (o + k - 1 <= i if ndim == 2 else o + k - 1 < i):  # 3D: strict, as ATen
            raise RuntimeError(f"{aten}(): pool {name} {k} too large relative to input {name} {i}")
    batched = input.dim() == ndim + 2
    shape = [*input.shape[: input.dim() - ndim], *output_size]
    if any(o < 0 for o in output_size):
        bad = next(o for o in output_size if o < 0)
        raise RuntimeError(f"Trying to create tensor with negative dimension {bad}: {shape}")
    if input.dtype not in DTYPES:
        raise NotImplementedError(
            f"\"{op}\" not implemented for '{_scalar_name(input.dtype)}': tgpool supports "
            f"float16, bfloat16, float32 and float64 inputs"
        )
    if not isinstance(samples, Tensor):
        raise TypeError(
            f"{op}(): argument 'random_samples' (position 4) must be Tensor, not "
            f"{type(samples).__name__}"
        )
    if samples.dtype != input.dtype:
        raise RuntimeError("Expect _random_samples to have the same dtype as input")
    if samples.dim() != 3:
        raise RuntimeError(f"Expect _random_samples to have 3 dimensions, got {samples.dim()}")
    n, c = (input.shape[0], input.shape[1]) if batched else (1, input.shape[0])
    if samples.shape[0] < n:
        raise RuntimeError("Expect _random_samples.size(0) no less then input batch size.")
    if samples.shape[1] != c:
        raise RuntimeError("Expect _random_samples.size(1) equals to input channel size.")
    if samples.shape[2] != ndim:
        raise RuntimeError(
            f"Expect _random_samples.size(2) equals to {ndim}; got {samples.shape[2]}."
        )
    if samples.device != input.device:
        raise RuntimeError(
            f"{op}: expected '_random_samples' on the input's device {input.device}, got "
            f"{samples.device}"
        )
    if samples.requires_grad and torch.is_grad_enabled():  # torch's autograd refuses it too
        raise RuntimeError(
            f"The function '{op}' is not differentiable with respect to argument "
            "'_random_samples'. This input cannot have requires_grad True."
        )


def _fractional(ndim, input, kernel_size, output_size, output_ratio, return_indices, samples):
    op = f"fractional_max_pool{ndim}d"
    _require_tensor(op, "input", input)
    output_size = fractional_output_size(ndim, input, output_size, output_ratio)
    kernel = _require_ints(op, "kernel_size", _EXPAND[ndim](kernel_size))
    size = _require_ints(op, "output_size", _EXPAND[ndim](output_size))
    if samples is None:
        if input.dim() < ndim + 1:  # torch reads input.size(-ndim - 1) to draw the samples
            raise IndexError(
                f"{op}(): Dimension out of range: samples are drawn for input.size({-ndim - 1}) "
                f"channels, but the input has size {list(input.shape)} (expected "
                f"{ndim + 1}D or {ndim + 2}D)"
            )
        if input.dtype not in DTYPES:  # torch.rand refuses them too, before drawing
            raise NotImplementedError(
                f"\"check_uniform_bounds\" not implemented for '{_scalar_name(input.dtype)}' "
                "(the input's dtype: tgpool supports float16, bfloat16, float32 and float64)"
            )
        # exactly torch's draw, so that the same seed gives the same windows
        n_batch = 1 if input.dim() == ndim + 1 else input.size(0)
        samples = torch.rand(
            n_batch, input.size(-ndim - 1), ndim, dtype=input.dtype, device=input.device
        )
    # torch draws the samples in the input's dtype, then autocast casts both
    input, samples = autocast_policy.cast(op, input.device.type, input, samples)
    _check_fractional(ndim, input, kernel, size, samples)
    if not runtime.uses_triton(input):
        fn = getattr(F, f"{op}_with_indices")
        out, idx = fn(input, kernel, size, None, True, _random_samples=samples)
        return (out, idx) if return_indices else out
    batched = input.dim() == ndim + 2
    x = input if batched else input.unsqueeze(0)
    out, idx = fractional_ops.fractional_max_pool(x, samples, kernel, size)
    if not batched:
        out, idx = out.squeeze(0), idx.squeeze(0)
    return (out, idx) if return_indices else out


def fractional_max_pool2d(
    input,
    kernel_size,
    output_size=None,
    output_ratio=None,
    return_indices=False,
    _random_samples=None,
):
    """2D fractional max pooling over (N, C, H, W) or (C, H, W), as
    ``torch.nn.functional.fractional_max_pool2d``: the same windows and results for the same
    samples, and the same samples as torch draws under the same seed."""
    return _fractional(
        2, input, kernel_size, output_size, output_ratio, return_indices, _random_samples
    )


def fractional_max_pool3d(
    input,
    kernel_size,
    output_size=None,
    output_ratio=None,
    return_indices=False,
    _random_samples=None,
):
    """3D fractional max pooling over (N, C, T, H, W) or (C, T, H, W), as
    ``torch.nn.functional.fractional_max_pool3d``."""
    return _fractional(
        3, input, kernel_size, output_size, output_ratio, return_indices, _random_samples
    )
