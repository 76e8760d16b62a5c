"""Pooling functions with torch.nn.functional's names, signatures, defaults and return types.

One module per kernel family; this package re-exports them, so ``tgpool.functional.X`` works:

    window.py             max_pool1d-3d, avg_pool1d-3d, lp_pool1d-3d (and the input checks)
    adaptive.py           adaptive_avg_pool1d-3d, adaptive_max_pool1d-3d
    global_pooling.py     global_pool, global_max_pool, global_avg_pool, gem, ragged_pool
    unpool_fractional.py  max_unpool1d-3d, fractional_max_pool2d/3d
    sppf_pooling.py       sppf
    autocast.py           what each function returns under torch.autocast
"""

from ..spec import DTYPES, PADDING_STRINGS, WindowPoolSpec, same_padding, window_spec
from .adaptive import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
)
from .global_pooling import gem, global_avg_pool, global_max_pool, global_pool, ragged_pool
from .sppf_pooling import sppf
from .unpool_fractional import (
    fractional_max_pool2d,
    fractional_max_pool3d,
    max_unpool1d,
    max_unpool2d,
    max_unpool3d,
)
from .window import (
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    check_input,
    lp_pool1d,
    lp_pool2d,
    lp_pool3d,
    max_pool1d,
    max_pool2d,
    max_pool3d,
)

__all__ = [
    "global_pool",
    "global_max_pool",
    "global_avg_pool",
    "gem",
    "ragged_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "lp_pool1d",
    "lp_pool2d",
    "lp_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "max_unpool1d",
    "max_unpool2d",
    "max_unpool3d",
    "fractional_max_pool2d",
    "fractional_max_pool3d",
    "sppf",
]
# also importable from here, as before the package was split: the spec helpers and check_input
_HELPERS = (DTYPES, PADDING_STRINGS, WindowPoolSpec, same_padding, window_spec, check_input)
