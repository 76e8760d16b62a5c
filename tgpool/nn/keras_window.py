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

from torch import Tensor

from ..functional import window as F
from .keras_args import (
    KerasLayer,
    join_shape,
    keras_data_format,
    keras_padding,
    keras_tuple,
    split_shape,
)

__all__ = [
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
]


class _KerasPooling(KerasLayer):
    """Keras's ``BasePooling``: constructor, input rank check, pooling and output shapes."""

    _rank: int
    _mode: str  # "max" | "average"
    _default_name: str

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__()
        n = self._rank
        self.pool_size = keras_tuple(pool_size, n, "pool_size")
        self.strides = self.pool_size if strides is None else keras_tuple(strides, n, "strides")
        self.padding = keras_padding(padding)
        self.data_format = keras_data_format(data_format)
        self.pool_mode = self._mode
        self._take_layer_kwargs(kwargs)

    def forward(self, inputs) -> Tensor:
        x = self._keras_input(inputs)
        channels_last = self.data_format == "channels_last"
        if channels_last:
            x = x.movedim(-1, 1)  # a view: the kernels read the channels-contiguous data in place
        pool = getattr(F, f"{'max' if self._mode == 'max' else 'avg'}_pool{self._rank}d")
        out = pool(x, self.pool_size, self.strides, padding=self.padding)
        return out.movedim(1, -1) if channels_last else out

    def compute_output_shape(self, input_shape):
        """Keras's output shape for ``input_shape`` (None allowed for unknown sizes)."""
        batch, spatial, channels = split_shape(input_shape, self.data_format)
        out = []
        for size, k, s in zip(spatial, self.pool_size, self.strides, strict=True):
            if size is None:
                out.append(None)
            elif self.padding == "same":
                out.append(-(-size // s))
            else:
                out.append((size - k) // s + 1)
        return join_shape(batch, out, channels, self.data_format)

    def extra_repr(self) -> str:
        return (
            f"name={self.name}, pool_size={self.pool_size}, strides={self.strides}, "
            f"padding={self.padding}, data_format={self.data_format}{self._dtype_repr()}"
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
