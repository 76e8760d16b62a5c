"""max_unpool1d/2d/3d against torch: values exact (stores, no arithmetic), memory formats as
torch returns them, the backward gather, the custom ops as torch sees them (opcheck, gradcheck,
torch.compile), and every bad input refused before any launch with torch's exception type.

Results are produced inside ``unpool_kernels_ran()``: torch's unpooling raises there and a
tgpool max_unpool kernel must launch. Interpreter shapes stay tiny.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import kernels_only, launches

import tgpool.functional.unpool_fractional as T
from tgpool.kernels import unpool
from tgpool.nn import unpool_fractional as nn_unpool_fractional
from tgpool.ops import unpool as unpool_ops

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
DTYPE_IDS = [str(d).removeprefix("torch.") for d in DTYPES]
_TORCH_UNPOOLS = ["max_unpool1d", "max_unpool2d", "max_unpool3d"]


def unpool_kernels_ran():
    """Inside the block torch's unpooling raises, and a max_unpool kernel must launch."""
    return kernels_only(_TORCH_UNPOOLS, "max_unpool")


# --- cases ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    ndim: int
    shape: tuple  # the max_pool input: (N, C, *spatial) or unbatched (C, *spatial)
    kernel_size: int | tuple
    stride: int | tuple | None = None
    padding: int | tuple = 0
    #: "default" (from kernel/stride/padding), "input" (the pool's input size, spatial dims),
    #: "input_full" (the same with batch and channel dims), or an explicit spatial tuple
    output_size: object = "default"
    layout: str = "contiguous"  # "contiguous" | "channels_last" | "transposed" (1D: (N, L, C).mT)

    def __str__(self):
        return self.name


# fmt: off
CASES = [
    # max_pool's own indices with non-overlapping windows: the default output size inverts it
    Case("1d_k2", 1, (2, 3, 8), 2),
    Case("2d_k2", 2, (2, 3, 6, 6), 2),
    Case("3d_k2", 3, (2, 2, 4, 4, 4), 2),
    # overlapping windows: one input element can be the max of two windows, so indices repeat
    # (with equal values), and the default output size is smaller than the pool's input
    Case("1d_overlap_k3_s1_dup_indices", 1, (2, 3, 9), 3, 1, output_size="input"),
    Case("2d_overlap_k3_s2_dup_indices", 2, (2, 3, 7, 7), 3, 2, 1, output_size="input"),
    Case("3d_overlap_k2_s1_dup_indices", 3, (1, 2, 4, 4, 3), 2, 1, output_size="input"),
    # explicit output_size larger than the default (allowed up to default + stride - 1)
    Case("1d_output_size_larger", 1, (2, 3, 9), 2, output_size=(9,)),
    Case("2d_output_size_larger", 2, (2, 3, 7, 5), 2, output_size=(7, 5)),
    Case("2d_output_size_with_batch_dims", 2, (2, 3, 7, 7), 2, output_size="input_full"),
    Case("3d_output_size_larger", 3, (1, 2, 5, 4, 5), 2, output_size=(5, 4, 5)),
    # memory formats: 2D follows the input (channels-last out), 1D and 3D are contiguous
    Case("2d_channels_last", 2, (2, 5, 6, 6), 2, layout="channels_last"),
    Case("2d_channels_last_overlap", 2, (2, 4, 7, 7), 3, 2, 1, "input", "channels_last"),
    Case("3d_channels_last_3d", 3, (2, 3, 4, 4, 4), 2, layout="channels_last"),
    Case("1d_transposed_nlc", 1, (2, 4, 8), 2, layout="transposed"),
    # unbatched inputs, non-square windows
    Case("2d_unbatched", 2, (3, 6, 8), 2),
    Case("1d_unbatched", 1, (3, 8), 2),
    Case("2d_nonsquare_k2x3_s1x2", 2, (2, 3, 6, 9), (2, 3), (1, 2), output_size="input"),
    # a plane of one element, channels-last with one channel
    Case("2d_one_channel_channels_last", 2, (2, 1, 4, 4), 2, layout="channels_last"),
]
# fmt: on


def _pool_input(case: Case, dtype) -> torch.Tensor:
    x = torch.randn(case.shape, dtype=torch.float64).to(dtype)
    if case.layout == "channels_last" and x.dim() == case.ndim + 2:
        fmt = torch.channels_last if case.ndim == 2 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
    if case.layout == "transposed":
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    return x


def _call(case: Case, x: torch.Tensor):
    """(pooled, indices, unpool keyword arguments) of the case."""
    pooled, idx = getattr(F, f"max_pool{case.ndim}d")(
        x, case.kernel_size, case.stride, case.padding, return_indices=True
    )
    out = case.output_size
    if out == "input":
        out = tuple(x.shape[-case.ndim :])
    elif out == "input_full":
        out = tuple(x.shape)
    elif out == "default":
        out = None
    kw = dict(kernel_size=case.kernel_size, stride=case.stride, padding=case.padding)
    return pooled, idx, {**kw, "output_size": out}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_and_backward_equal_torch(case, dtype):
    x = _pool_input(case, dtype)
    pooled, idx, kw = _call(case, x)
    torch_unpool = getattr(F, f"max_unpool{case.ndim}d")
    want = torch_unpool(pooled, idx, **kw)
    pooled = pooled.detach().requires_grad_()
    grad = torch.randn(want.shape, dtype=torch.float64).to(dtype)
    want_grad = torch.autograd.grad(torch_unpool(pooled, idx, **kw), pooled, grad)[0]
    with unpool_kernels_ran():
        got = getattr(T, f"max_unpool{case.ndim}d")(pooled, idx, **kw)
        got_grad = torch.autograd.grad(got, pooled, grad)[0]
    assert torch.equal(got, want)  # stores only: bit-identical, zeros included
    assert got.stride() == want.stride(), "output memory format differs from torch's"
    assert torch.equal(got_grad, want_grad)
    assert got_grad.stride() == want_grad.stride()


def test_repeated_indices_keep_one_of_the_values():
    """Arbitrary repeated indices (not from max_pool): torch leaves the winner unspecified;
    tgpool stores one of the values (never a sum or a mix) and zeros elsewhere."""
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]])
    idx = torch.tensor([[[0, 0, 3, 3, 3, 7]]])
    with unpool_kernels_ran():
        out = T.max_unpool1d(x, idx, 2, output_size=(12,))
    assert out[0, 0, 0].item() in (1.0, 2.0)
    assert out[0, 0, 3].item() in (3.0, 4.0, 5.0)
    assert out[0, 0, 7].item() == 6.0
    assert int((out != 0).sum()) == 3


def test_out_of_range_indices_are_never_written():
    """What CUDA tensors get (no host check on the hot path): the kernel skips indices outside
    the output plane (negative or too large) instead of writing out of bounds."""
    x = torch.arange(1.0, 7.0).reshape(1, 2, 3)
    idx = torch.tensor([[[0, -1, 5], [6, 2, 100]]])
    out = torch.full((1, 2, 8), 7.0)  # a canary past each plane: the kernel must not touch it
    view = out[:, :, :6]
    with unpool_kernels_ran():
        got = unpool.forward(x, idx, [6], False)
        grad = unpool.backward(view.contiguous(), idx)
    want = torch.zeros(1, 2, 6)
    want[0, 0, 0], want[0, 0, 5], want[0, 1, 2] = 1.0, 3.0, 5.0
    assert torch.equal(got, want)
    assert torch.equal(grad, torch.tensor([[[7.0, 0.0, 7.0], [0.0, 7.0, 0.0]]]))


# --- the custom ops -------------------------------------------------------------------------------


def test_opcheck():
    torch.manual_seed(0)
    for shape, k, cl in (
        ((2, 3, 6, 6), 2, True),
        ((2, 3, 8), 2, False),
        ((1, 2, 4, 4, 4), 2, False),
    ):
        x = torch.randn(shape)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        y, idx = getattr(F, f"max_pool{len(shape) - 2}d")(x, k, return_indices=True)
        size = list(x.shape[2:])
        torch.library.opcheck(unpool_ops.max_unpool, (y.requires_grad_(), idx, size, cl))
        g = torch.randn(y.shape[:2] + tuple(size))
        torch.library.opcheck(unpool_ops.max_unpool_backward, (g.requires_grad_(), idx))


def test_gradcheck_and_double_backward_float64():
    # distinct indices: with repeated ones a store is not differentiable in the kept value's
    # competitors (torch's own gradcheck fails there too); repeats are covered against torch above
    x = torch.randn(2, 2, 7, 6, dtype=torch.float64)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    y = y.detach().requires_grad_()

    def fn(v):
        return T.max_unpool2d(v, idx, 2, output_size=(7, 6))

    with unpool_kernels_ran():
        assert torch.autograd.gradcheck(fn, (y,), fast_mode=True)
        assert torch.autograd.gradgradcheck(fn, (y,), fast_mode=True)


class UnpoolNet(torch.nn.Module):
    """Pool with indices, then unpool with tgpool's module (a SegNet-style decoder step)."""

    def __init__(self):
        super().__init__()
        self.unpool = nn_unpool_fractional.MaxUnpool2d(2)

    def forward(self, x):
        y, idx = F.max_pool2d(x * 2, 2, return_indices=True)
        return self.unpool(y.sin(), idx) + 1


def test_compile_fullgraph_forward_backward():
    net = UnpoolNet()
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    want = net(x)
    want_grad = torch.autograd.grad(want.square().sum(), x)[0]
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    before = launches("max_unpool")
    got = compiled(x)
    got_grad = torch.autograd.grad(got.square().sum(), x)[0]
    assert launches("max_unpool") >= before + 2  # forward and backward kernels
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)


def test_modules_subclass_torch():
    for n in (1, 2, 3):
        mod = getattr(nn_unpool_fractional, f"MaxUnpool{n}d")(2, stride=2, padding=0)
        ref = getattr(torch.nn, f"MaxUnpool{n}d")(2, stride=2, padding=0)
        assert isinstance(mod, type(ref))
        assert repr(mod) == repr(ref)


# --- bad input ------------------------------------------------------------------------------------

_GEN = torch.Generator().manual_seed(0)
Y, IDX = F.max_pool2d(torch.randn(2, 3, 4, 4, generator=_GEN), 2, return_indices=True)
Y3, I3 = F.max_pool3d(torch.randn(2, 3, 4, 4, 4, generator=_GEN), 2, return_indices=True)
Y1, I1 = F.max_pool1d(torch.randn(2, 3, 8, generator=_GEN), 2, return_indices=True)
I_BAD = IDX.clone()
I_BAD[1, 2, 1, 0] = 16

BAD_CALLS = [
    # (name, call, exception type, words the message must contain)
    ("input_not_tensor", lambda: T.max_unpool2d([1.0], IDX, 2), TypeError, "input"),
    ("indices_not_tensor", lambda: T.max_unpool2d(Y, [1], 2), TypeError, "indices"),
    ("indices_int32", lambda: T.max_unpool2d(Y, IDX.int(), 2), RuntimeError, "int64 but got: Int"),
    ("indices_float", lambda: T.max_unpool2d(Y, IDX.float(), 2), RuntimeError, "got: Float"),
    ("indices_shape", lambda: T.max_unpool2d(Y, IDX[:, :, :1], 2), RuntimeError, "shape of"),
    ("input_rank_2", lambda: T.max_unpool2d(Y[0, 0], IDX[0, 0], 2), RuntimeError, "3d or 4d"),
    (
        "input_rank_3_for_3d",
        lambda: T.max_unpool3d(Y3[0, 0], I3[0, 0], 2),
        RuntimeError,
        "4d or 5d",
    ),
    ("1d_input_rank_4", lambda: T.max_unpool1d(Y1[None], I1[None], 2), RuntimeError, "3d or 4d"),
    ("zero_channels", lambda: T.max_unpool2d(Y[:, :0], IDX[:, :0], 2), RuntimeError, "non-zero"),
    ("integer_input", lambda: T.max_unpool2d(Y.long(), IDX, 2), NotImplementedError, "Long"),
    (
        "output_size_length_3",
        lambda: T.max_unpool2d(Y, IDX, 2, output_size=(3, 4, 4)),
        ValueError,
        "2 or 4 elements",
    ),
    (
        "output_size_too_large",
        lambda: T.max_unpool2d(Y, IDX, 2, output_size=(6, 4)),
        ValueError,
        "between 2 and 6",
    ),
    ("output_size_negative", lambda: T.max_unpool1d(Y1, I1, 1, 1, 3), ValueError, "non-negative"),
    ("kernel_size_float", lambda: T.max_unpool2d(Y, IDX, 2.0), TypeError, "output_size"),
    ("3d_stride_zero", lambda: T.max_unpool3d(Y3, I3, 2, 0), RuntimeError, "stride"),
    # torch's CPU check of every index (CUDA tensors are not synchronised for it)
    (
        "index_past_the_plane",
        lambda: T.max_unpool2d(Y, I_BAD, 2),
        RuntimeError,
        "invalid max index: 16 (output volumes are of size 4x4)",
    ),
    (
        "index_negative_1d",
        lambda: T.max_unpool1d(Y1, I1 - 1, 2),
        RuntimeError,
        "invalid max index: -1 (output volumes are of size 8x1)",
    ),
    (
        "index_past_a_smaller_output",
        lambda: T.max_unpool2d(Y, IDX, 2, output_size=(3, 4)),
        RuntimeError,
        "of size 3x4",
    ),
]


@pytest.mark.parametrize(
    "call, error, words", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
def test_bad_input_raises_like_torch_before_any_launch(call, error, words):
    before = launches()
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)
    assert launches() == before, "a kernel launched before the error"


#: non-tensor arguments: torch fails with an AttributeError (``list`` has no ``size``); tgpool
#: raises TypeError naming the argument, as its other functions do
NOT_TORCH_TYPES = {"input_not_tensor", "indices_not_tensor"}


@pytest.mark.parametrize("index", range(len(BAD_CALLS)), ids=[c[0] for c in BAD_CALLS])
def test_torch_raises_the_same_type(index):
    """The table above is torch's behaviour: the same calls on torch raise the same types."""
    name, call, error, _ = BAD_CALLS[index]
    if name in NOT_TORCH_TYPES:
        pytest.skip("tgpool refuses non-tensors with TypeError (torch: AttributeError)")
    saved = {n: getattr(T, n) for n in _TORCH_UNPOOLS}
    for n in _TORCH_UNPOOLS:  # the same call, with torch.nn.functional in place of tgpool
        setattr(T, n, getattr(F, n))
    try:
        with pytest.raises(error):
            call()
    finally:
        for n, fn in saved.items():
            setattr(T, n, fn)
