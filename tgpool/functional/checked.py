"""Calls already checked: the public functions' memo of argument checks.

Every check of a call and every argument it derives for its op follow from the input's shape,
strides and dtype and the call's other arguments. So a call that passed them once, on a device
Triton runs on, is remembered by those values, and a later identical call goes straight to its op.
A call that raised is never remembered, so errors are raised exactly as before; arguments that
cannot be keyed (tensors other than the input, floats as sizes, ...) are checked every time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import plans, runtime
from . import autocast

_CALLS = plans.Memo()
_is_compiling = torch.compiler.is_compiling


def lookup(tag: tuple, input, *arguments):
    """(key, the remembered call or None); key None when this call cannot be remembered (then the
    caller checks it in full and ``remember`` does nothing). Under autocast nothing is remembered:
    the cast changes what the checks see."""
    if _is_compiling() or not isinstance(input, Tensor):  # Dynamo traces the checks themselves
        return None, None
    if autocast.any_enabled() or not runtime.uses_triton(input):
        return None, None
    key = plans.args_key(*arguments)
    if key is None:
        return None, None
    key = (tag, input.shape, input.stride(), input.dtype, key)
    return key, _CALLS.get(key)


def remember(key, call):
    """Keep ``call`` (what the function derived) for ``key``; returns ``call``."""
    if key is not None:
        _CALLS.put(key, call)
    return call
