"""``SPPFPool``: the pooling part of YOLOv5/v8's SPPF block as a module.

torch.nn has no SPPF, so this is a plain ``nn.Module``. The block's two convolutions stay the
user's::

    class SPPF(nn.Module):
        def __init__(self, c1, c2, k=5):
            super().__init__()
            self.cv1 = Conv(c1, c1 // 2, 1, 1)
            self.pool = tgpool.nn.SPPFPool(k)           # was: three MaxPool2d + torch.cat
            self.cv2 = Conv(c1 // 2 * 4, c2, 1, 1)

        def forward(self, x):
            return self.cv2(self.pool(self.cv1(x)))
"""

from __future__ import annotations

from torch import nn

from ..functional.sppf_pooling import sppf


class SPPFPool(nn.Module):
    """(N, C, H, W) -> (N, 4C, H, W): x and its max pools of k, 2k - 1 and 3k - 2 ('same')."""

    def __init__(self, kernel_size: int = 5):
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, input):
        return sppf(input, self.kernel_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"
