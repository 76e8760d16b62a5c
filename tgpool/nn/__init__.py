"""``torch.nn``-style pooling modules that run tgpool's kernels, one module per family:

window.py             MaxPool1d-3d, AvgPool1d-3d, LPPool1d-3d (torch.nn subclasses)
adaptive.py           AdaptiveAvgPool1d-3d, AdaptiveMaxPool1d-3d
unpool_fractional.py  MaxUnpool1d-3d, FractionalMaxPool2d/3d
global_pool.py        Keras's GlobalMax/AveragePooling1D-3D, GlobalMaxPool, GlobalAvgPool,
                      GeM, SelectGlobalPool
keras_window.py       Keras's MaxPooling1D-3D, AveragePooling1D-3D
keras_args.py         what the Keras-style layers share (argument standardisation)
sppf.py               SPPFPool
"""

from .adaptive import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
)
from .global_pool import (
    GeM,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalAveragePooling3D,
    GlobalAvgPool,
    GlobalMaxPool,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    GlobalMaxPooling3D,
    SelectGlobalPool,
)
from .keras_window import (
    AveragePooling1D,
    AveragePooling2D,
    AveragePooling3D,
    MaxPooling1D,
    MaxPooling2D,
    MaxPooling3D,
)
from .sppf import SPPFPool
from .unpool_fractional import (
    FractionalMaxPool2d,
    FractionalMaxPool3d,
    MaxUnpool1d,
    MaxUnpool2d,
    MaxUnpool3d,
)
from .window import (
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    LPPool1d,
    LPPool2d,
    LPPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
)

__all__ = [
    "SPPFPool",
    "FractionalMaxPool2d",
    "FractionalMaxPool3d",
    "MaxUnpool1d",
    "MaxUnpool2d",
    "MaxUnpool3d",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "LPPool1d",
    "LPPool2d",
    "LPPool3d",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
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
