"""Keras 3's window pooling layers as ``torch.nn.Module``s on tgpool's kernels.

``MaxPooling1D/2D/3D`` and ``AveragePooling1D/2D/3D`` take Keras's constructor arguments and
defaults (``pool_size``: 2 per dim for MaxPooling, required for AveragePooling; ``strides=None``
= pool_size; ``padding="valid"`` or ``"same"``, case-insensitive; ``data_format=None`` =
"channels_last"; ``name`` and a layer's other keywords) and give Keras's results.
"channels_last" inputs (batch, *spatial, channels) are pooled in place: the layer hands the
kernels a (batch, channels, *spatial) view whose channels are contiguous, so nothing is transposed
or copied, and the output is returned in Keras's layout.

Where these differ from Keras 3.15 on its torch backend, on purpose:

- AveragePooling with ``padding="same"`` where the padding is uneven (an even pool size with
  stride 1, and similar): Keras's torch backend pads by replicating the edge and divides by the
  full pool size, so the edge element counts several times; TensorFlow, JAX and Keras's other
  backends divide the sum of the input elements by their number, and so does tgpool (Keras has
  since changed its torch backend to do the same: keras-team/keras#23233). Even padding, and every
  max pooling, agree with Keras 3.15 exactly.
- ``dtype=None`` keeps the input's dtype (as torch modules do, so ``model.half()`` pools in
  float16); Keras's default policy computes in float32. Passing ``dtype`` casts as Keras does.
- Only float16, bfloat16, float32 and float64 inputs (tgpool's kernels); float16 / bfloat16
  AveragePooling3D works (Keras on a CPU torch raises NotImplementedError there).
- An unknown ``padding`` string raises ValueError at construction (Keras 3.15 on torch pools
  it as "valid").
- Max pooling's gradient goes to the first maximum of a window, as in Keras on torch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import functional as F
from .nn_global import _keras_compute_dtype, _keras_data_format

__all__ = [
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
]


def _keras_tuple(value, n: int, name: str) -> tuple[int, ...]:
    """Keras's ``standardize_tuple``: an int or n ints, each positive (ValueError otherwise)."""
    if isinstance(value, int) and not isinstance(value, bool):
        values = (value,) * n
    else:
        try:
            values = tuple(value)
        except TypeError:
            values = ()
        if len(values) != n:
            raise ValueError(
                f"The `{name}` argument must be a tuple of {n} integers. Received {name}={value}"
            )
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(
                f"The `{name}` argument must be a tuple of {n} positive integers. "
                f"Received {name}={value}"
            )
    return values


def _keras_padding(padding) -> str:
    """Keras's ``standardize_padding`` for pooling: "valid" or "same", case-insensitive."""
    value = padding.lower() if isinstance(padding, str) else padding
    if value not in ("valid", "same"):
        raise ValueError(
            f"The `padding` argument must be one of {{'valid', 'same'}}. Received: {padding}"
        )
    return value


class _KerasPooling(torch.nn.Module):
    """Keras's ``BasePooling``: constructor, input rank check, pooling and output shapes."""

    _rank: int
    _mode: str  # "max" | "average"
    _default_name: str

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__()
        n = self._rank
        self.pool_size = _keras_tuple(pool_size, n, "pool_size")
        self.strides = self.pool_size if strides is None else _keras_tuple(strides, n, "strides")
        self.padding = _keras_padding(padding)
        self.data_format = _keras_data_format(data_format)
        self.pool_mode = self._mode
        # Keras's Layer keywords: the ones with a meaning here are kept, shape hints dropped
        # (Keras itself only warns about them), anything else refused as Keras refuses it.
        name = kwargs.pop("name", None)
        self.name = self._default_name if name is None else str(name)
        self.trainable = kwargs.pop("trainable", True)
        if not isinstance(self.trainable, bool):
            raise ValueError(
                f"Expected `trainable` to be a boolean. Received: trainable={self.trainable}"
            )
        self.dtype = kwargs.pop("dtype", None)
        self.compute_dtype = _keras_compute_dtype(self.dtype)
        self.autocast = kwargs.pop("autocast", True)
        if kwargs.pop("activity_regularizer", None) is not None:
            raise NotImplementedError(
                "activity_regularizer: a Keras training hook with no torch counterpart; add the "
                "penalty to the loss instead"
            )
        kwargs.pop("input_shape", None)
        kwargs.pop("input_dim", None)
        if kwargs:
            raise ValueError(
                f"Unrecognized keyword arguments passed to {type(self).__name__}: {kwargs}"
            )

    def forward(self, inputs) -> Tensor:
        x = inputs if isinstance(inputs, Tensor) else torch.as_tensor(inputs)
        if x.dim() != self._rank + 2:
            raise ValueError(
                f"Input 0 of layer '{self.name}' is incompatible with the layer: expected "
                f"ndim={self._rank + 2}, found ndim={x.dim()}. Full shape received: "
                f"{tuple(x.shape)}"
            )
        if (
            self.compute_dtype is not None
            and self.autocast
            and x.is_floating_point()
            and x.dtype != self.compute_dtype
        ):
            x = x.to(self.compute_dtype)
        channels_last = self.data_format == "channels_last"
        if channels_last:
            x = x.movedim(-1, 1)  # a view: the kernels read the channels-contiguous data in place
        pool = getattr(F, f"{'max' if self._mode == 'max' else 'avg'}_pool{self._rank}d")
        out = pool(x, self.pool_size, self.strides, padding=self.padding)
        return out.movedim(1, -1) if channels_last else out

    def compute_output_shape(self, input_shape):
        """Keras's output shape for ``input_shape`` (None allowed for unknown sizes)."""
        input_shape = tuple(input_shape)
        if self.data_format == "channels_last":
            spatial, batch, channels = input_shape[1:-1], input_shape[0], input_shape[-1]
        else:
            spatial, batch, channels = input_shape[2:], input_shape[0], input_shape[1]
        out = []
        for size, k, s in zip(spatial, self.pool_size, self.strides, strict=True):
            if size is None:
                out.append(None)
            elif self.padding == "same":
                out.append(-(-size // s))
            else:
                out.append((size - k) // s + 1)
        if self.data_format == "channels_last":
            return (batch, *out, channels)
        return (batch, channels, *out)

    def extra_repr(self) -> str:
        dtype = "" if self.dtype is None else f", dtype={self.dtype}"
        return (
            f"name={self.name}, pool_size={self.pool_size}, strides={self.strides}, "
            f"padding={self.padding}, data_format={self.data_format}{dtype}"
        )


class MaxPooling1D(_KerasPooling):
    """Keras's MaxPooling1D: (batch, steps, features) -> (batch, pooled steps, features)
    ("channels_first": (batch, features, steps))."""

    _rank, _mode, _default_name = 1, "max", "max_pooling1d"

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class MaxPooling2D(_KerasPooling):
    """Keras's MaxPooling2D: (batch, height, width, channels) -> pooled, same layout."""

    _rank, _mode, _default_name = 2, "max", "max_pooling2d"

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kw):
        super().__init__(pool_size, strides, padding, data_format, **kw)


class MaxPooling3D(_KerasPooling):
    """Keras's MaxPooling3D: (batch, d1, d2, d3, channels) -> pooled, same layout."""

    _rank, _mode, _default_name = 3, "max", "max_pooling3d"

    def __init__(self, pool_size=(2, 2, 2), strides=None, padding="valid", data_format=None, **kw):
        super().__init__(pool_size, strides, padding, data_format, **kw)


class AveragePooling1D(_KerasPooling):
    """Keras's AveragePooling1D; "same" averages the input elements of each window only."""

    _rank, _mode, _default_name = 1, "average", "average_pooling1d"

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling2D(_KerasPooling):
    """Keras's AveragePooling2D; "same" averages the input elements of each window only."""

    _rank, _mode, _default_name = 2, "average", "average_pooling2d"

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, **kw):
        super().__init__(pool_size, strides, padding, data_format, **kw)


class AveragePooling3D(_KerasPooling):
    """Keras's AveragePooling3D; "same" averages the input elements of each window only."""

    _rank, _mode, _default_name = 3, "average", "average_pooling3d"

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, **kw):
        super().__init__(pool_size, strides, padding, data_format, **kw)
