"""tgpool: template-generated Triton kernels for neural-network pooling, as PyTorch ops.

    import tgpool
    y = tgpool.max_pool2d(x, 3, stride=2, padding=1)      # same call as torch.nn.functional
    pool = tgpool.nn.MaxPool2d(3, stride=2, padding=1)    # same module as torch.nn

See README.md for the architecture: spec -> template -> generated source -> launch config ->
custom op -> API.
"""

from . import functional, nn, ops  # noqa: F401  (ops registers the tgpool:: custom ops)
from .functional import (  # noqa: F401
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    gem,
    global_avg_pool,
    global_max_pool,
    global_pool,
    max_pool1d,
    max_pool2d,
    max_pool3d,
    ragged_pool,
)

__version__ = "0.1.0"
