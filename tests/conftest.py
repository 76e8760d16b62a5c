"""Test setup: every kernel runs through the Triton interpreter on CPU tensors.

TRITON_INTERPRET must be set before tgpool generates (and Triton creates) its first kernel, and the
generated-source cache goes to a fresh temporary folder so no test reads a stale user cache.
"""

import os
import tempfile

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TGPOOL_CACHE_DIR", tempfile.mkdtemp(prefix="tgpool-test-cache-"))
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silences triton 3.9's notice

import contextlib  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tgpool import runtime  # noqa: E402

_TORCH_POOLS = [
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@contextlib.contextmanager
def triton_only():
    """Inside the block torch's pooling raises, and at least one tgpool kernel must launch: a
    result produced inside it came from the generated Triton kernels."""
    saved = {n: getattr(F, n) for n in _TORCH_POOLS}

    def refuse(*args, **kwargs):
        raise AssertionError("torch's own pooling was called inside triton_only()")

    for n in _TORCH_POOLS:
        setattr(F, n, refuse)
    before = sum(runtime.launch_counts.values())
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(F, n, fn)
    assert sum(runtime.launch_counts.values()) > before, "no tgpool kernel was launched"


@pytest.fixture
def only_triton():
    return triton_only
