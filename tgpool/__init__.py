"""tgpool: template-generated Triton kernels for neural-network pooling, as PyTorch ops.

    import tgpool
    y = tgpool.max_pool2d(x, 3, stride=2, padding=1)      # same call as torch.nn.functional
    pool = tgpool.nn.MaxPool2d(3, stride=2, padding=1)    # same module as torch.nn

See README.md for the architecture: spec -> template -> generated source -> launch config ->
custom op -> API.
"""

from . import functional, nn, ops, tuning  # noqa: F401  (ops registers the custom ops; tuning

#                                                  registers the tuner with launch.py)
from .functional import (  # noqa: F401
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    fractional_max_pool2d,
    fractional_max_pool3d,
    gem,
    global_avg_pool,
    global_max_pool,
    global_pool,
    lp_pool1d,
    lp_pool2d,
    lp_pool3d,
    max_pool1d,
    max_pool2d,
    max_pool3d,
    max_unpool1d,
    max_unpool2d,
    max_unpool3d,
    ragged_pool,
    sppf,
)
from .integrations.enable import EnableReport, disable, enable, enabled  # noqa: F401
from .integrations.patch import PatchReport, patch, unpatch  # noqa: F401

__version__ = "0.1.0"
