"""int64 safety: element offsets past 2**31 - 1 on a small grid give torch's result (issue 7).

Each input is a strided view whose strides are each below 2**31 (so Triton passes them as i32)
but whose largest element offset, n * stride_n + c * stride_c + ..., is above 2**31 - 1: a kernel
that computed offsets in int32 would wrap to a negative offset and read before the storage (on a
GPU as in the interpreter, which wraps numpy int32 arithmetic the same way).

Memory: the view lives in a torch.empty storage of about 4.5 GiB of float16. That is virtual
memory: only the pages holding the view's 64-odd elements are ever touched (torch.empty does not
write, the interpreter hands CPU storages to the kernel without copying, and torch's reference
reads only the view), so the resident size stays a few MiB. Tests that need such a storage are
marked ``big_virtual_memory`` for that reason; together they run in a few seconds and so stay in
CI. The storage is shared by every test of the module and freed at its end.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from conftest import launches

import tgpool
from tgpool.functional.sppf_pooling import sppf_reference

#: (N, C, H, W) with strides each < 2**31 and a largest offset > 2**31 - 1
SHAPE = (2, 2, 4, 4)
STRIDES = (2**30 + 16, 2**29 + 8, 2**28 + 4, 1)
SIZE = sum((s - 1) * st for s, st in zip(SHAPE, STRIDES, strict=True)) + 1

pytestmark = pytest.mark.big_virtual_memory  # why: the module docstring


def test_the_view_needs_64_bit_offsets():
    assert all(st < 2**31 for st in STRIDES) and SIZE - 1 > 2**31 - 1


@pytest.fixture(scope="module")
def storage():
    base = torch.empty(SIZE, dtype=torch.float16)  # virtual: nothing is written here
    yield base
    del base


def _view(storage, shape=SHAPE, strides=STRIDES, *, seed=0):
    x = storage.as_strided(shape, strides)
    g = torch.Generator().manual_seed(seed)
    x.copy_(torch.randint(-8, 8, shape, generator=g).to(x.dtype))  # touches 64 elements' pages
    return x


def _unpool_indices():
    g = torch.Generator().manual_seed(1)
    big = torch.rand(SHAPE[0], SHAPE[1], 8, 8, generator=g)
    return F.max_pool2d(big, 2, return_indices=True)[1]


# name -> (tgpool call, torch call); exact: max-type results must be bit-equal, others close
CASES = {
    "max_pool2d": (lambda x: tgpool.max_pool2d(x, 2, 1), lambda x: F.max_pool2d(x, 2, 1)),
    "avg_pool2d": (lambda x: tgpool.avg_pool2d(x, 3, 1, 1), lambda x: F.avg_pool2d(x, 3, 1, 1)),
    "lp_pool2d": (lambda x: tgpool.lp_pool2d(x, 2, 2), lambda x: F.lp_pool2d(x, 2, 2)),
    "adaptive_avg_pool2d": (
        lambda x: tgpool.adaptive_avg_pool2d(x, 3),
        lambda x: F.adaptive_avg_pool2d(x, 3),
    ),
    "adaptive_max_pool2d": (
        lambda x: tgpool.adaptive_max_pool2d(x, 3, return_indices=True),
        lambda x: F.adaptive_max_pool2d(x, 3, return_indices=True),
    ),
    "global_avg_pool": (lambda x: tgpool.global_avg_pool(x), lambda x: x.mean((2, 3))),
    "global_max_pool": (
        lambda x: tgpool.global_max_pool(x, return_indices=True),
        lambda x: F.adaptive_max_pool2d(x, 1, return_indices=True),
    ),
    "max_unpool2d": (
        lambda x: tgpool.max_unpool2d(x, _unpool_indices(), 2),
        lambda x: F.max_unpool2d(x, _unpool_indices(), 2),
    ),
    "fractional_max_pool2d": (
        lambda x: tgpool.fractional_max_pool2d(
            x, 2, output_size=2, _random_samples=torch.full((2, 2, 2), 0.5, dtype=x.dtype)
        ),
        lambda x: F.fractional_max_pool2d(
            x, 2, output_size=2, _random_samples=torch.full((2, 2, 2), 0.5, dtype=x.dtype)
        ),
    ),
    "sppf": (lambda x: tgpool.sppf(x, 3), lambda x: sppf_reference(x, 3)),
}


#: other views: channels-last global pooling (N, H, W, C) and ragged values (T, C)
VIEWS = {
    "global_avg_pool_channels_last": (
        (2, 4, 4, 2),
        (2**30 + 16, 2**28 + 4, 2**27 + 2, 1),
        lambda x: tgpool.global_avg_pool(x, data_format="channels_last"),
        lambda x: x.mean((1, 2)),
    ),
    "global_max_pool_channels_last": (
        (2, 4, 4, 2),
        (2**30 + 16, 2**28 + 4, 2**27 + 2, 1),
        lambda x: tgpool.global_max_pool(x, data_format="channels_last"),
        lambda x: x.amax((1, 2)),
    ),
    "ragged_pool": (
        (5, 3),
        (2**29 + 8, 1),
        lambda v: tgpool.ragged_pool(v, torch.tensor([0, 2, 5]), "max"),
        lambda v: torch.stack([v[:2].amax(0), v[2:].amax(0)]),
    ),
}


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_other_layouts_past_int32_give_torchs_result(storage, name):
    shape, strides, ours, theirs = VIEWS[name]
    assert sum((s - 1) * st for s, st in zip(shape, strides, strict=True)) > 2**31 - 1
    x = _view(storage, shape, strides)
    before = launches()
    got = ours(x)
    assert launches() > before, "no tgpool kernel ran"
    torch.testing.assert_close(got.double(), theirs(x.double()), atol=2e-3, rtol=2e-3)


@triton.jit
def _offsets(out_ptr, stride, WIDE: tl.constexpr):
    pid = tl.program_id(0)
    if WIDE:
        pid = pid.to(tl.int64)
    tl.store(out_ptr + tl.program_id(0), pid * stride)


def test_the_interpreter_wraps_int32_offsets_as_a_gpu_does():
    """Why the tests above can fail: an int32 offset wraps (here to a negative number) in the
    interpreter too; the same product in int64 does not."""
    narrow = torch.zeros(3, dtype=torch.int32)
    _offsets[(3,)](narrow, STRIDES[0], WIDE=False)
    assert narrow[2].item() == 2 * STRIDES[0] - 2**32  # wrapped
    wide = torch.zeros(3, dtype=torch.int64)
    _offsets[(3,)](wide, STRIDES[0], WIDE=True)
    assert wide[2].item() == 2 * STRIDES[0]


def _flat(result):
    return [t.reshape(-1) for t in (result if isinstance(result, tuple) else (result,))]


@pytest.mark.parametrize("name", sorted(CASES))
def test_offsets_past_int32_give_torchs_result(storage, name):
    ours, theirs = CASES[name]
    x = _view(storage)
    before = launches()
    got = ours(x)
    assert launches() > before, "no tgpool kernel ran"
    # torch's reference on the same values in float64 (indices exact)
    expected = theirs(x.double())
    for g, e in zip(_flat(got), _flat(expected), strict=True):
        if e.is_floating_point():
            torch.testing.assert_close(g.double(), e, atol=2e-3, rtol=2e-3)
        else:
            assert torch.equal(g, e)


def test_backward_reads_and_writes_past_int32(storage):
    """The window backward reads the saved indices and the input's strides; its gradient is
    allocated by tgpool (contiguous), so only the reads are far."""
    x = _view(storage).requires_grad_()
    out = tgpool.max_pool2d(x, 2, 1)
    (grad,) = torch.autograd.grad(out.sum(), x)
    xd = x.detach().double().requires_grad_()
    (expected,) = torch.autograd.grad(F.max_pool2d(xd, 2, 1).sum(), xd)
    assert torch.equal(grad.double(), expected)
