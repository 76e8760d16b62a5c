"""Keras 3 as the reference for tgpool.nn's Keras-style layers: imported on its torch backend
(so both sides take the same torch tensors and autograd reaches through Keras's call), and the
comparison helpers the Keras test modules share. Importing this skips the importing test module
when Keras is missing or already runs on another backend.
"""

from __future__ import annotations

import os
import tempfile

# Keras reads both once, at its first import: its torch backend, and a fresh config folder so a
# user's keras.json (e.g. image_data_format) cannot change the defaults compared here
os.environ["KERAS_BACKEND"] = "torch"
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="tgpool-test-keras-")

import pytest  # noqa: E402
import torch  # noqa: E402

import tgpool.nn  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # keras imported earlier in this process with another one
    pytest.skip("Keras is not running on its torch backend", allow_module_level=True)

# dtype: (atol, rtol) against Keras computing in the same dtype (max is compared exactly).
# float64 at float32's: Keras 3.15's torch ops.mean computes in result_type(x, "float32"), which
# its promotion rules make float32 for a float64 x; tgpool's float64 is held to torch at 1e-12.
TOLERANCES = {
    torch.float64: (1e-6, 1e-5),
    torch.float32: (1e-6, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1e-2, 1e-2),
}
#: the Keras dtype policy name of each torch dtype
DTYPE_NAMES = {
    torch.float64: "float64",
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}


def pair(name: str, **kwargs):
    """(tgpool.nn.<name>(**kwargs), keras.layers.<name>(**kwargs))."""
    return getattr(tgpool.nn, name)(**kwargs), getattr(keras.layers, name)(**kwargs)


def forward_backward(layer, x, mask=None, grad=None):
    """(output, input gradient, upstream gradient) for ``grad`` (default: a seeded random upstream
    gradient)."""
    x = x.detach().clone().requires_grad_()
    y = layer(x) if mask is None else layer(x, mask=mask)
    if grad is None:
        grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.dtype)
    y.backward(grad)
    return y.detach(), x.grad, grad


def assert_close(ours, theirs, dtype, exact, equal_nan=False):
    """Same dtype and shape; equal (``exact``) or within ``TOLERANCES[dtype]``."""
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    atol, rtol = (0, 0) if exact else TOLERANCES[dtype]
    torch.testing.assert_close(ours, theirs, atol=atol, rtol=rtol, equal_nan=equal_nan)
