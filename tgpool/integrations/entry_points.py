"""The Python entry points ``enable`` swaps while on: the short way to tgpool for common calls.

Routing at the dispatcher (enable.py) reaches every path, but a Python kernel there costs about
3 us of boxing per call, and a reduction registered there makes every ``mean`` pay it. So while
enabled, the places most model code calls are swapped for wrappers:

- ``torch.nn.functional``'s pooling functions (modules, subclasses and model code look them up
  on ``F`` at call time) become tgpool.functional's same-signature functions;
- ``Tensor.mean / sum / amax / max`` and ``torch.mean / sum / amax / max``: a call over every
  spatial dim (routes.global_layout) goes to ``global_pool``; any other call goes straight to the
  original method, for the price of one Python call.

A wrapper sends the call on unchanged (to the original, and so to the dispatcher's routing, which
decides and reports) while Dynamo traces, inside a routed call, and where tgpool cannot serve the
input. ``disable`` puts every original back.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import functional as tgf
from .. import runtime
from ..spec import DTYPES
from .routes import global_layout, servable

_is_compiling = torch.compiler.is_compiling
Parameter = torch.nn.Parameter

#: torch.nn.functional's pooling functions that tgpool.functional mirrors, signature for signature
FUNCTIONAL = [
    *(f"{kind}_pool{n}d" for kind in ("max", "avg", "lp") for n in (1, 2, 3)),
    *(f"adaptive_{kind}_pool{n}d" for kind in ("avg", "max") for n in (1, 2, 3)),
    "fractional_max_pool2d",
    "fractional_max_pool3d",
    *(f"max_unpool{n}d" for n in (1, 2, 3)),
]
#: reduction -> tgpool's global_pool reduction
REDUCTIONS = {"mean": "avg", "sum": "sum", "amax": "max", "max": "max"}


def swap(state) -> list:
    """Swap every entry point; returns what ``restore`` needs. ``state``: enable.py's, whose
    ``thread.inside`` says a routed call is running on this thread, and whose ``routed(op)`` and
    ``fell_through(op, reason)`` fill the open reports."""
    saved = []
    for name in FUNCTIONAL:
        original = getattr(F, name)
        saved.append((F, name, original))
        setattr(F, name, _functional(name, original, getattr(tgf, name), state))
    for name, reduction in REDUCTIONS.items():
        for owner in (torch.Tensor, torch):
            original = getattr(owner, name)
            saved.append((owner, name, original))
            setattr(owner, name, _reduction(name, original, reduction, state))
    return saved


def restore(saved: list) -> None:
    for owner, name, original in reversed(saved):
        setattr(owner, name, original)


def _functional(name: str, original, replacement, state):
    thread, routed = state.thread, state.routed

    def pooling(input, *args, **kwargs):
        # the checks of routes.servable, inlined: this runs on every call
        kind = type(input)
        if (
            not _is_compiling()  # first: Dynamo then traces nothing more of this wrapper
            and (kind is Tensor or kind is Parameter)
            and input.dtype in DTYPES
            and (input.is_cuda or (input.is_cpu and runtime.interpreter_enabled()))
            and not getattr(thread, "inside", False)
        ):
            routed(name)
            thread.inside = True
            try:
                return replacement(input, *args, **kwargs)
            finally:
                thread.inside = False
        return original(input, *args, **kwargs)

    functools.update_wrapper(pooling, original)
    return pooling


def _reduction(name: str, original, reduction: str, state):
    thread = state.thread

    def reduce(input, *args, **kwargs):
        if (
            not _is_compiling()  # first: Dynamo then traces nothing more of this wrapper
            and type(input) is Tensor
            and (args or "dim" in kwargs)
            and not getattr(thread, "inside", False)
        ):
            if args:
                call = _global(name, reduction, input, args, kwargs)
            else:  # x.mean(dim=..., keepdim=...)
                rest = dict(kwargs)
                call = _global(name, reduction, input, (rest.pop("dim"),), rest)
            if isinstance(call, str):
                state.fell_through(name, call)
            elif call is not None:
                state.routed(name)
                thread.inside = True
                try:
                    return call()
                finally:
                    thread.inside = False
        return original(input, *args, **kwargs)

    functools.update_wrapper(reduce, original)
    return reduce


def _global(name: str, reduction: str, x, args, kwargs):
    """The tgpool call for a reduction that is global pooling; None when it is not pooling (or
    not a form tgpool takes); why ATen keeps a global pooling call, as a string."""
    if len(args) > 2:
        return None
    dim = args[0]
    keepdim = args[1] if len(args) > 1 else kwargs.get("keepdim", False)
    if type(keepdim) is not bool or (kwargs and set(kwargs) - {"keepdim"}):
        return None  # dtype=, out=, names: ATen's
    if name == "max" and type(dim) is not int:
        return None  # max() and max(other) are not pooling
    if not x.is_floating_point():
        return None  # counting (a mask's sum, an integer max) is not pooling
    layout = _layout(x, dim)
    if layout is None:
        return None
    if not (x.is_cuda or (x.is_cpu and runtime.interpreter_enabled())) or x.dtype not in DTYPES:
        return servable(x)  # the reason
    if name == "amax" and x.requires_grad and torch.is_grad_enabled():
        # ATen's amax backward splits the gradient among tied maxima; tgpool's goes to one
        return "amax of an input that requires grad (tied maxima share the gradient)"
    if name == "max":
        return lambda: _max_values_indices(x, layout, keepdim)
    return lambda: tgf.global_pool(x, reduction, data_format=layout, keepdim=keepdim)


_LAYOUTS: dict = {}


def _layout(x, dim):
    """routes.global_layout, remembered per (rank, dims): this runs on every reduction."""
    kind = type(dim)
    if kind is list:
        dim = tuple(dim)
    elif kind is not int and kind is not tuple:
        return None
    key = (x.dim(), dim)
    try:
        return _LAYOUTS[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable element: not a form of global pooling
        return None
    layout = _LAYOUTS[key] = global_layout(x, dim)
    return layout


def _max_values_indices(x, layout, keepdim):
    values, indices = tgf.global_pool(
        x, "max", data_format=layout, keepdim=keepdim, return_indices=True
    )
    return torch.return_types.max((values, indices))
