"""What every Keras-style layer here shares: Keras's argument standardisation and Layer keywords.

``nn_global`` (Keras's global pooling layers) and ``nn_keras_pool`` (Keras's window pooling
layers) subclass ``KerasLayer``, so both take a Keras layer's keywords (``name``, ``trainable``,
``dtype``, ``autocast``, shape hints), check an input's rank with Keras's message, cast it to the
``dtype`` policy and lay out shapes per ``data_format`` the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor

DATA_FORMATS = ("channels_first", "channels_last")

#: Keras dtype policy names -> the dtype a layer computes in ("mixed_*": compute in 16 bits)
KERAS_COMPUTE_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "mixed_float16": torch.float16,
    "mixed_bfloat16": torch.bfloat16,
}


def keras_data_format(data_format) -> str:
    """Keras's ``standardize_data_format``: None is Keras's default image data format (no
    ``keras.json`` is read here: "channels_last"), names are case-insensitive."""
    if data_format is None:
        return "channels_last"
    data_format = str(data_format).lower()
    if data_format not in DATA_FORMATS:
        raise ValueError(
            "The `data_format` argument must be one of {'channels_first', 'channels_last'}. "
            f"Received: data_format={data_format}"
        )
    return data_format


def keras_compute_dtype(dtype) -> torch.dtype | None:
    """The dtype a layer computes in: None (the input's), a torch floating dtype, or a Keras
    dtype policy (or its name)."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        return dtype
    name = getattr(dtype, "name", dtype)  # a Keras DTypePolicy has a name
    if name not in KERAS_COMPUTE_DTYPES:
        raise ValueError(
            f"Cannot interpret dtype {dtype!r}: expected a torch floating dtype or one of "
            f"{', '.join(KERAS_COMPUTE_DTYPES)}"
        )
    return KERAS_COMPUTE_DTYPES[name]


def keras_tuple(value, n: int, name: str) -> tuple[int, ...]:
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


def keras_padding(padding) -> str:
    """Keras's ``standardize_padding`` for pooling: "valid" or "same", case-insensitive."""
    value = padding.lower() if isinstance(padding, str) else padding
    if value not in ("valid", "same"):
        raise ValueError(
            f"The `padding` argument must be one of {{'valid', 'same'}}. Received: {padding}"
        )
    return value


def split_shape(input_shape, data_format: str) -> tuple:
    """(batch, spatial sizes, channels) of a Keras input shape in ``data_format``."""
    input_shape = tuple(input_shape)
    if data_format == "channels_last":
        return input_shape[0], input_shape[1:-1], input_shape[-1]
    return input_shape[0], input_shape[2:], input_shape[1]


def join_shape(batch, spatial, channels, data_format: str) -> tuple:
    """The inverse of ``split_shape``."""
    if data_format == "channels_last":
        return (batch, *spatial, channels)
    return (batch, channels, *spatial)


class KerasLayer(torch.nn.Module):
    """Keras's ``Layer`` as far as a pooling layer uses it: keywords, rank check, dtype policy."""

    _rank: int
    _default_name: str

    def _take_layer_kwargs(self, kwargs: dict) -> None:
        """Keras's Layer keywords: the ones with a meaning here are kept, shape hints are dropped
        (Keras itself only warns about them), anything else is refused as Keras refuses it."""
        name = kwargs.pop("name", None)
        self.name = self._default_name if name is None else str(name)
        self.trainable = kwargs.pop("trainable", True)
        if not isinstance(self.trainable, bool):
            raise ValueError(
                f"Expected `trainable` to be a boolean. Received: trainable={self.trainable}"
            )
        self.dtype = kwargs.pop("dtype", None)
        self.compute_dtype = keras_compute_dtype(self.dtype)
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

    def _keras_input(self, inputs) -> Tensor:
        """``inputs`` as a tensor of the layer's rank, cast to its dtype policy."""
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
        return x

    def _dtype_repr(self) -> str:
        return "" if self.dtype is None else f", dtype={self.dtype}"
