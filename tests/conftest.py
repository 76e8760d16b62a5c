"""Test setup: every kernel runs through the Triton interpreter on CPU tensors.

TRITON_INTERPRET must be set before tgpool generates (and Triton creates) its first kernel, and the
generated-source cache goes to a fresh temporary folder so no test reads a stale user cache.
"""

import os
import tempfile

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TGPOOL_CACHE_DIR", tempfile.mkdtemp(prefix="tgpool-test-cache-"))
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silences triton 3.9's notice

import collections  # noqa: E402
import contextlib  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tgpool import runtime  # noqa: E402

# Dynamo records torch's functions when it first traces. If that first trace happens inside
# triton_only() (torch's pooling replaced by `refuse`), a later compile of the real
# F.max_pool2d fails as an untraceable function; so trace them once, unpatched, up front.
torch.compile(lambda t: F.max_pool2d(t, 2, return_indices=True), backend="eager", fullgraph=True)(
    torch.zeros(1, 1, 2, 2)
)

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


@pytest.fixture(autouse=True)
def _fresh_launch_plans():
    """Each test plans its calls anew (tgpool/plans.py). Tests monkeypatch launchers' constants
    (split thresholds, unrolling limits) that a plan recorded by an earlier test would not see;
    a process never changes them, so outside the tests plans need no such reset."""
    from tgpool.ops import boundary

    boundary.PLANS.clear()


def launches(prefix: str = "") -> int:
    """Kernel launches so far whose name starts with ``prefix`` (every launch with "")."""
    return sum(n for k, n in runtime.launch_counts.items() if k.startswith(prefix))


@contextlib.contextmanager
def launched_kernels():
    """The kernels launched inside the block, by name (``with launched_kernels() as counts``)."""
    before = collections.Counter(runtime.launch_counts)
    counts = collections.Counter()
    yield counts
    counts.update(runtime.launch_counts)
    counts.subtract(before)
    for name in [n for n, c in counts.items() if c <= 0]:
        del counts[name]


@contextlib.contextmanager
def kernels_only(torch_functions, prefix: str = ""):
    """Inside the block ``torch.nn.functional``'s ``torch_functions`` raise, and at least one
    tgpool kernel whose name starts with ``prefix`` must launch: a result produced inside it came
    from the generated Triton kernels."""
    saved = {n: getattr(F, n) for n in torch_functions}

    def refusing(name):
        def refuse(*args, **kwargs):
            raise AssertionError(f"torch's own {name} was called inside kernels_only()")

        return refuse

    for n in torch_functions:
        setattr(F, n, refusing(n))
    before = launches(prefix)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(F, n, fn)
    assert launches(prefix) > before, f"no tgpool kernel named {prefix or ''}* was launched"


def triton_only():
    """Inside the block torch's pooling raises, and at least one tgpool kernel must launch."""
    return kernels_only(_TORCH_POOLS)


@pytest.fixture
def only_triton():
    return triton_only
