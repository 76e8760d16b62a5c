"""``torch.nn``-style pooling modules that run tgpool's kernels.

Each class subclasses its torch.nn counterpart, so constructor arguments, defaults, attributes,
``repr`` and state are torch's own; only ``forward`` changes.
"""

from __future__ import annotations

import torch

from ..functional import window as F


class _MaxPoolNd:
    _pool = None

    def forward(self, input):
        return type(self)._pool(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )


class MaxPool1d(_MaxPoolNd, torch.nn.MaxPool1d):
    _pool = staticmethod(F.max_pool1d)


class MaxPool2d(_MaxPoolNd, torch.nn.MaxPool2d):
    _pool = staticmethod(F.max_pool2d)


class MaxPool3d(_MaxPoolNd, torch.nn.MaxPool3d):
    _pool = staticmethod(F.max_pool3d)


class _AvgPoolNd:
    _pool = None
    _takes_divisor = True  # avg_pool1d (and torch.nn.AvgPool1d) have no divisor_override

    def forward(self, input):
        divisor = (self.divisor_override,) if self._takes_divisor else ()
        return type(self)._pool(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            *divisor,
        )


class AvgPool1d(_AvgPoolNd, torch.nn.AvgPool1d):
    _pool = staticmethod(F.avg_pool1d)
    _takes_divisor = False


class AvgPool2d(_AvgPoolNd, torch.nn.AvgPool2d):
    _pool = staticmethod(F.avg_pool2d)


class AvgPool3d(_AvgPoolNd, torch.nn.AvgPool3d):
    _pool = staticmethod(F.avg_pool3d)


class _LPPoolNd:
    _pool = None

    def forward(self, input):
        return type(self)._pool(
            input, self.norm_type, self.kernel_size, self.stride, self.ceil_mode
        )


class LPPool1d(_LPPoolNd, torch.nn.LPPool1d):
    _pool = staticmethod(F.lp_pool1d)


class LPPool2d(_LPPoolNd, torch.nn.LPPool2d):
    _pool = staticmethod(F.lp_pool2d)


class LPPool3d(_LPPoolNd, torch.nn.LPPool3d):
    _pool = staticmethod(F.lp_pool3d)
