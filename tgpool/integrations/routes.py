"""Which ATen calls tgpool serves while enabled, and with which tgpool function.

``ROUTES`` maps an ATen operator overload to a route: a function taking the ATen call's
arguments that returns either a zero-argument callable (the tgpool call that computes the same
result, with tgpool's autograd) or a string saying why ATen keeps this call. A route only checks
what tgpool cannot serve (dtypes, devices, a reduction that is not global pooling); argument
errors are tgpool's own, raised as torch raises them.

Pooling ops are routed at their public ATen names, the CompositeImplicitAutograd ones included
(max_pool1d, avg_pool1d, adaptive_avg_pool1d-3d, adaptive_max_pool1d), so every path reaches them:
``F.*``, ``torch.max_pool2d``, modules and their subclasses, ATen's composites. Global pooling
written as a reduction (``mean``, ``sum``, ``amax`` or ``max`` over every spatial dim: see
``global_layout``) is routed where Python calls it (entry_points.py), not here: a Python kernel
over ``aten::mean`` would make every mean pay for the check.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import functional as tgf
from .. import runtime
from ..functional import unpool_fractional
from ..spec import DTYPES  # the dtypes tgpool's kernels take

#: reasons that leave a call to ATen by design, not for lack of support: strict mode allows them
BY_DESIGN = ("traced", "not on a Triton device")
_PLAIN = (Tensor, torch.nn.Parameter)


def servable(*tensors) -> str | None:
    """Why tgpool cannot serve a call on these tensors (None: it can)."""
    for t in tensors:
        if type(t) not in _PLAIN:
            # FakeTensor, FunctionalTensor (torch.compile, torch.export) or a user's subclass
            return "traced or a tensor subclass: ATen's op"
        if not runtime.uses_triton(t):
            return f"not on a Triton device ({t.device.type}, without the Triton interpreter)"
    dtype = tensors[0].dtype
    if dtype not in DTYPES:
        return f"dtype {str(dtype).removeprefix('torch.')}"
    return None


def _ints(values) -> list[int] | int:
    return list(values) if isinstance(values, (list, tuple)) else values


def _stride(stride):
    """ATen's ``stride=[]``: the kernel size (tgpool and F take None)."""
    return None if isinstance(stride, (list, tuple)) and len(stride) == 0 else _ints(stride)


# --- windowed pooling -----------------------------------------------------------------------------


def _max_pool(ndim: int, with_indices: bool):
    function = getattr(tgf, f"max_pool{ndim}d")

    def route(x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
        reason = servable(x)
        if reason:
            return reason
        args = (_ints(kernel_size), _stride(stride), _ints(padding), _ints(dilation), ceil_mode)
        return lambda: function(x, *args, return_indices=with_indices)

    return route


def _avg_pool(ndim: int):
    function = getattr(tgf, f"avg_pool{ndim}d")

    def route(
        x,
        kernel_size,
        stride=(),
        padding=0,
        ceil_mode=False,
        count_include_pad=True,
        divisor_override=None,
    ):
        reason = servable(x)
        if reason:
            return reason
        args = [_ints(kernel_size), _stride(stride), _ints(padding), ceil_mode, count_include_pad]
        if ndim > 1:
            args.append(divisor_override)
        return lambda: function(x, *args)

    return route


# --- adaptive, fractional, unpooling --------------------------------------------------------------


def _adaptive(reduction: str, ndim: int):
    function = getattr(tgf, f"adaptive_{reduction}_pool{ndim}d")
    indices = {"return_indices": True} if reduction == "max" else {}

    def route(x, output_size):
        reason = servable(x)
        if reason:
            return reason
        return lambda: function(x, _ints(output_size), **indices)

    return route


def _fractional(ndim: int):
    function = getattr(tgf, f"fractional_max_pool{ndim}d")

    def route(x, kernel_size, output_size, random_samples):
        reason = servable(x, random_samples)
        if reason:
            return reason
        return lambda: function(
            x,
            _ints(kernel_size),
            output_size=_ints(output_size),
            return_indices=True,
            _random_samples=random_samples,
        )

    return route


def _unpool(ndim: int):
    def route(x, indices, output_size, stride=None, padding=None):
        reason = servable(x) or (None if type(indices) in _PLAIN else "indices: a subclass")
        if reason:
            return reason
        args = (ndim, x, indices, _ints(output_size), _ints(stride), _ints(padding))
        return lambda: unpool_fractional.max_unpool_to_size(*args)

    return route


# --- global pooling written as a reduction --------------------------------------------------------


def global_layout(x: Tensor, dim) -> str | None:
    """The data format for which reducing ``x`` over ``dim`` is global pooling, or None:
    every spatial dim of (N, C, *spatial) or of (N, *spatial, C), 1 to 3 of them. An (N, L, C)
    tensor reduced over L (token pooling) is the channels-last case."""
    rank = x.dim()
    if dim is None or not 3 <= rank <= 5:
        return None
    dims = [dim] if isinstance(dim, int) else list(dim)
    if not dims or not all(isinstance(d, int) and -rank <= d < rank for d in dims):
        return None
    normal = sorted(d % rank for d in dims)
    if normal == list(range(2, rank)):
        return "channels_first"
    if normal == list(range(1, rank - 1)):
        return "channels_last"
    return None


def _routes() -> dict:
    routes = {}
    for n in (1, 2, 3):
        routes[f"max_pool{n}d"] = _max_pool(n, with_indices=False)
        routes[f"max_pool{n}d_with_indices"] = _max_pool(n, with_indices=True)
        routes[f"avg_pool{n}d"] = _avg_pool(n)
        routes[f"adaptive_avg_pool{n}d"] = _adaptive("avg", n)
        routes[f"adaptive_max_pool{n}d"] = _adaptive("max", n)
    for n in (2, 3):
        routes[f"fractional_max_pool{n}d"] = _fractional(n)
        routes[f"max_unpool{n}d"] = _unpool(n)
    return routes


#: ATen overload name -> route
ROUTES = _routes()
