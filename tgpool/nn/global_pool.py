"""Global pooling modules on ``tgpool.functional.global_pooling``, in two dialects.

Keras 3's layers (``GlobalMaxPooling1D`` .. ``GlobalAveragePooling3D``): Keras's constructor
(``data_format=None`` = "channels_last", ``keepdims``, a layer's ``name``/``dtype``/... keywords),
Keras's input checks and results, as ``torch.nn.Module``s, so a model ported from Keras keeps its
layers' meaning while running tgpool's kernels.

torch / timm style (``GlobalMaxPool``, ``GlobalAvgPool``, ``GeM``, ``SelectGlobalPool``):
"channels_first" by default and timm's pool types, for classifier heads of torch models.

Where these differ from Keras or timm on purpose (each says why in its docstring):

- A row whose mask is all False pools to 0 (Keras's masked average divides 0 by 0: NaN), so padding
  a batch with empty sequences cannot poison a loss.
- Max pooling's gradient goes to the first maximum of a row, as torch's max pooling does; Keras
  (``torch.amax`` on its torch backend) splits it evenly between tied maxima.
- Keras layers cast floating inputs to their dtype policy (float32 unless ``dtype`` says otherwise);
  here ``dtype=None`` keeps the input's dtype, as torch modules do, so ``model.half()`` still pools
  in float16. Passing ``dtype`` casts as Keras does.
- Only float16, bfloat16, float32 and float64 inputs (tgpool's kernels); Keras also pools integers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..functional import global_pooling as GF
from .keras_args import DATA_FORMATS, KerasLayer, join_shape, keras_data_format, split_shape

__all__ = [
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "GlobalMaxPool",
    "GlobalAvgPool",
    "GeM",
    "SelectGlobalPool",
]


def _check_data_format(data_format) -> str:
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}"
        )
    return data_format


# --- Keras 3 layers -------------------------------------------------------------------------------


def _bool_mask(mask, device) -> Tensor:
    """Keras casts a mask to bool before pooling: any non-zero value marks a valid step (a float
    mask that requires grad gets none: it selects positions, it is not a value). A tensor mask
    on another device than the input's is refused, as torch's ops refuse mixed devices."""
    if isinstance(mask, Tensor) and mask.device != device:
        raise RuntimeError(f"mask is on {mask.device} but the input is on {device}")
    mask = torch.as_tensor(mask, device=device)
    return mask if mask.dtype == torch.bool else mask != 0


class _KerasGlobalPooling(KerasLayer):
    """Keras's ``BaseGlobalPooling``: constructor, input rank check and output shapes."""

    _rank: int
    _reduction: str
    _default_name: str

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__()
        self.data_format = keras_data_format(data_format)
        self.keepdims = keepdims
        self._take_layer_kwargs(kwargs)

    def forward(self, inputs, mask=None):
        x = self._keras_input(inputs)
        if mask is not None:
            mask = _bool_mask(mask, x.device)
        return GF.global_pool(
            x, self._reduction, data_format=self.data_format, keepdim=self.keepdims, mask=mask
        )

    def compute_output_shape(self, input_shape):
        """Keras's output shape for ``input_shape`` (None allowed for unknown sizes)."""
        batch, spatial, channels = split_shape(input_shape, self.data_format)
        spatial = (1,) * len(spatial) if self.keepdims else ()
        return join_shape(batch, spatial, channels, self.data_format)

    def extra_repr(self) -> str:
        return (
            f"name={self.name}, data_format={self.data_format}, "
            f"keepdims={self.keepdims}{self._dtype_repr()}"
        )


class GlobalMaxPooling1D(_KerasGlobalPooling):
    """Keras's GlobalMaxPooling1D: (batch, steps, features) -> (batch, features)
    ("channels_first": (batch, features, steps)).

    ``forward(inputs, mask=None)``: unlike Keras, a (batch, steps) mask is accepted (bool, or
    non-zero = valid step), so padded sequences can be max-pooled; a row with no valid step gives
    0. The gradient of tied maxima goes to the first one (Keras splits it).
    """

    _rank = 1
    _reduction = "max"
    _default_name = "global_max_pooling1d"


class GlobalMaxPooling2D(_KerasGlobalPooling):
    """Keras's GlobalMaxPooling2D: (batch, height, width, channels) -> (batch, channels).

    ``mask`` (batch, height, width), an extension (Keras takes none): positions where it is
    False (zero) are left out; a fully masked image gives 0.
    """

    _rank = 2
    _reduction = "max"
    _default_name = "global_max_pooling2d"


class GlobalMaxPooling3D(_KerasGlobalPooling):
    """Keras's GlobalMaxPooling3D: (batch, d1, d2, d3, channels) -> (batch, channels).

    ``mask`` (batch, d1, d2, d3), an extension as in GlobalMaxPooling2D.
    """

    _rank = 3
    _reduction = "max"
    _default_name = "global_max_pooling3d"


class GlobalAveragePooling1D(_KerasGlobalPooling):
    """Keras's GlobalAveragePooling1D: (batch, steps, features) -> (batch, features).

    ``forward(inputs, mask=None)``: ``mask`` (batch, steps) in either data format, as Keras takes
    it: bool or numbers, non-zero = valid step; the average is over the valid steps. A row with
    no valid step gives 0 where Keras gives NaN (0 / 0): a padded empty sequence must not turn a
    whole batch's loss into NaN.
    """

    _rank = 1
    _reduction = "avg"
    _default_name = "global_average_pooling1d"


class GlobalAveragePooling2D(_KerasGlobalPooling):
    """Keras's GlobalAveragePooling2D: (batch, height, width, channels) -> (batch, channels).

    ``mask`` (batch, height, width), an extension (Keras takes none): the average over valid
    positions, 0 where none is valid.
    """

    _rank = 2
    _reduction = "avg"
    _default_name = "global_average_pooling2d"


class GlobalAveragePooling3D(_KerasGlobalPooling):
    """Keras's GlobalAveragePooling3D: (batch, d1, d2, d3, channels) -> (batch, channels).

    ``mask`` (batch, d1, d2, d3), an extension as in GlobalAveragePooling2D.
    """

    _rank = 3
    _reduction = "avg"
    _default_name = "global_average_pooling3d"


# --- torch / timm style ---------------------------------------------------------------------------


class _GlobalPool(torch.nn.Module):
    _reduction: str

    def __init__(self, data_format: str = "channels_first", keepdim: bool = False):
        super().__init__()
        self.data_format = _check_data_format(data_format)
        self.keepdim = keepdim

    def forward(self, input: Tensor, mask: Tensor | None = None) -> Tensor:
        return GF.global_pool(
            input, self._reduction, data_format=self.data_format, keepdim=self.keepdim, mask=mask
        )

    def extra_repr(self) -> str:
        return f"data_format={self.data_format}, keepdim={self.keepdim}"


class GlobalMaxPool(_GlobalPool):
    """Max over every spatial position: (N, C, *spatial) -> (N, C) (1 to 3 spatial dims;
    ``keepdim``: (N, C, 1, ..)). ``mask`` (N, *spatial) bool, True = counts; an all-False row
    gives 0. The gradient goes to the first maximum, as torch's max pooling does."""

    _reduction = "max"


class GlobalAvgPool(_GlobalPool):
    """Mean over every spatial position (Network in Network's head), ``mask`` as GlobalMaxPool."""

    _reduction = "avg"


class GeM(torch.nn.Module):
    """Generalized-mean pooling (Radenović et al.), (mean of max(x, eps)**p) ** (1/p) over every
    spatial position: p = 1 is the average, large p approaches the maximum.

    ``p`` is learned (an ``nn.Parameter`` of shape (1,)) unless ``learnable=False`` (then a
    buffer, still in the state dict so a checkpoint restores it). Its gradient comes from tgpool's
    kernels in the same pass as the input's. ``mask`` as in GlobalMaxPool (an all-False row gives
    0 and no gradient). A p trained to 0 or below is rejected by the next forward rather than
    silently producing inf.
    """

    def __init__(
        self,
        p: float = 3.0,
        eps: float = 1e-6,
        learnable: bool = True,
        data_format: str = "channels_first",
        keepdim: bool = False,
    ):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"p must be a number, not {type(p).__name__}")
        if not (math.isfinite(p) and p > 0):
            raise ValueError(f"p must be a positive finite number, got {p}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        self.eps = float(eps)
        self.learnable = learnable
        self.data_format = _check_data_format(data_format)
        self.keepdim = keepdim
        p_tensor = torch.full((1,), float(p))
        if learnable:
            self.p = torch.nn.Parameter(p_tensor)
        else:
            self.register_buffer("p", p_tensor)

    def forward(self, input: Tensor, mask: Tensor | None = None) -> Tensor:
        return GF.gem(
            input,
            self.p,
            self.eps,
            data_format=self.data_format,
            keepdim=self.keepdim,
            mask=mask,
        )

    def extra_repr(self) -> str:
        p = "?" if self.p.is_meta else round(float(self.p.detach().reshape(())), 4)
        return (
            f"p={p}, eps={self.eps}, learnable={self.learnable}, "
            f"data_format={self.data_format}, keepdim={self.keepdim}"
        )


#: timm's pool types -> global_pool's reduction ('' = no pooling)
POOL_TYPES = {"": None, "avg": "avg", "max": "max", "avgmax": "avgmax", "catavgmax": "catavgmax"}


class SelectGlobalPool(torch.nn.Module):
    """timm's ``SelectAdaptivePool2d`` with output size 1, for 1 to 3 spatial dims.

    ``pool_type``: 'avg', 'max', 'avgmax' ((avg + max) / 2), 'catavgmax' (avg and max
    concatenated on the channel axis: ``feat_mult()`` = 2) or '' (no pooling: the input comes
    back, flattened from dim 1 if ``flatten``; a mask has nothing to act on and is ignored).
    timm's 'fast' prefix ('fast', 'fastmax', ..) is accepted and means the same pooling.
    Output: (N, C, 1, ..) for "channels_first", (N, 1, .., 1, C) for "channels_last" (timm's
    NHWC), or (N, C) with ``flatten``.

    Unlike timm, an unknown pool type raises ValueError (timm falls back to 'avg'), and
    'catavgmax' always concatenates: timm's fast and NHWC path tests ``endswith('avgmax')``
    first, so 'fastcatavgmax' and NHWC 'catavgmax' give 'avgmax' there while ``feat_mult()``
    says 2.
    """

    def __init__(
        self, pool_type: str = "avg", flatten: bool = False, data_format: str = "channels_first"
    ):
        super().__init__()
        self.pool_type = pool_type or ""
        kind = self.pool_type.lower()
        if kind.startswith("fast"):
            kind = kind[len("fast") :] or "avg"
        if kind not in POOL_TYPES:
            raise ValueError(
                f"unknown pool_type {pool_type!r}; expected one of 'avg', 'max', 'avgmax', "
                f"'catavgmax' or '' (no pooling)"
            )
        self._reduction = POOL_TYPES[kind]
        self.flatten = bool(flatten)
        self.data_format = _check_data_format(data_format)

    def is_identity(self) -> bool:
        return not self.pool_type

    def feat_mult(self) -> int:
        """How many times the input's channels the output has (timm's)."""
        return 2 if self._reduction == "catavgmax" else 1

    def forward(self, input: Tensor, mask: Tensor | None = None) -> Tensor:
        if self._reduction is None:
            return input.flatten(1) if self.flatten else input
        return GF.global_pool(
            input,
            self._reduction,
            data_format=self.data_format,
            keepdim=not self.flatten,
            mask=mask,
        )

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type}, flatten={self.flatten}, data_format={self.data_format}"
