"""``torch.nn``-style max unpooling and fractional max pooling modules on tgpool's kernels.

Each class subclasses its torch.nn counterpart, so constructor arguments, defaults, attributes,
``repr`` and state are torch's own; only ``forward`` changes. The fractional modules draw their
samples in ``forward`` (unless given ``_random_samples``), as torch's do.
"""

from __future__ import annotations

import torch

from ..functional import unpool_fractional as F

__all__ = [
    "MaxUnpool1d",
    "MaxUnpool2d",
    "MaxUnpool3d",
    "FractionalMaxPool2d",
    "FractionalMaxPool3d",
]


class _MaxUnpoolNd:
    _unpool = None

    def forward(self, input, indices, output_size=None):
        return type(self)._unpool(
            input, indices, self.kernel_size, self.stride, self.padding, output_size
        )


class MaxUnpool1d(_MaxUnpoolNd, torch.nn.MaxUnpool1d):
    _unpool = staticmethod(F.max_unpool1d)


class MaxUnpool2d(_MaxUnpoolNd, torch.nn.MaxUnpool2d):
    _unpool = staticmethod(F.max_unpool2d)


class MaxUnpool3d(_MaxUnpoolNd, torch.nn.MaxUnpool3d):
    _unpool = staticmethod(F.max_unpool3d)


class _FractionalMaxPoolNd:
    _pool = None

    def forward(self, input):
        return type(self)._pool(
            input,
            self.kernel_size,
            self.output_size,
            self.output_ratio,
            self.return_indices,
            _random_samples=self._random_samples,
        )


class FractionalMaxPool2d(_FractionalMaxPoolNd, torch.nn.FractionalMaxPool2d):
    _pool = staticmethod(F.fractional_max_pool2d)


class FractionalMaxPool3d(_FractionalMaxPoolNd, torch.nn.FractionalMaxPool3d):
    _pool = staticmethod(F.fractional_max_pool3d)
