"""tgpool.nn's torch-style global pooling modules against independent torch formulas.

GlobalMaxPool / GlobalAvgPool against ``amax`` / ``mean`` over the spatial dims, GeM against
``x.clamp(min=eps).pow(p).mean(dims).pow(1 / p)`` and its torch autograd (for x and for p), and
SelectGlobalPool against timm's SelectAdaptivePool2d formulas written out here (timm is not a
dependency). References run in float64; every tgpool result comes from the Triton kernels
(``only_triton()`` with tgpool's pure-torch path disabled).
"""

from __future__ import annotations

import copy

import pytest
import torch

import tgpool.nn
from tgpool.reference import global_pool as global_reference

# dtype: (atol, rtol) against the float64 reference (max is compared exactly)
TOLERANCES = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (2e-2, 2e-2),
}
DTYPES = list(TOLERANCES)

# channels_first shapes (N, C, *spatial), small for the interpreter
SHAPES = {1: (3, 4, 9), 2: (2, 3, 5, 6), 3: (2, 3, 3, 2, 4)}


@pytest.fixture(autouse=True)
def _kernels_only(monkeypatch):
    """tgpool's pure-torch path raises here: a tgpool result can only come from the kernels."""

    def refuse(*args, **kwargs):
        raise AssertionError("tgpool's reference path ran instead of the Triton kernels")

    monkeypatch.setattr(global_reference, "global_pool", refuse)


def _input(rank, data_format, dtype, *, distinct=False, positive=False):
    """Seeded input; ``distinct``: no ties (a max gradient has one owner), exact in every dtype."""
    shape = SHAPES[rank]
    n = torch.Size(shape).numel()
    if distinct:
        x = ((torch.randperm(n).to(torch.float64) - n // 2) / 4).reshape(shape)
    else:
        x = torch.randn(shape, dtype=torch.float64)
    if positive:
        x = x.abs() + 0.1
    if data_format == "channels_last":
        x = x.movedim(1, -1).contiguous()
    return x.to(dtype)


def _spatial(rank, data_format):
    return (
        tuple(range(2, rank + 2)) if data_format == "channels_first" else tuple(range(1, rank + 1))
    )


def _mask(x, rank, data_format):
    """Random (N, *spatial) bool mask that keeps at least one position per row."""
    spatial = x.shape[2:] if data_format == "channels_first" else x.shape[1:-1]
    mask = torch.rand((x.shape[0], *spatial)) < 0.5
    mask.reshape(x.shape[0], -1)[:, -1] = True
    return mask


def _expand(mask, data_format):
    """(N, *spatial) -> broadcastable against the input."""
    return mask.unsqueeze(1) if data_format == "channels_first" else mask.unsqueeze(-1)


def _run(module, x, mask=None, grad=None, params=()):
    """(output, input gradient, parameter gradients, upstream gradient)."""
    x = x.detach().clone().requires_grad_()
    y = module(x) if mask is None else module(x, mask=mask)
    if grad is None:
        grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    y.backward(grad)
    return y.detach(), x.grad, [p.grad for p in params], grad


def _close(ours, expected, dtype, exact=False):
    assert ours.dtype == dtype, (ours.dtype, dtype)
    atol, rtol = (0, 0) if exact else TOLERANCES[dtype]
    torch.testing.assert_close(ours.double(), expected.double(), atol=atol, rtol=rtol)


# --- GlobalMaxPool / GlobalAvgPool ---------------------------------------------------------------

# (rank, data_format, keepdim, dtype, masked): every dtype, rank and format at least once
POOL_CASES = [
    (1, "channels_first", False, torch.float32, False),
    (1, "channels_last", True, torch.float64, True),
    (2, "channels_first", True, torch.float16, False),
    (2, "channels_last", False, torch.bfloat16, True),
    (2, "channels_first", False, torch.float32, True),
    (3, "channels_last", True, torch.float32, False),
    (3, "channels_first", False, torch.float64, True),
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize(
    "rank, data_format, keepdim, dtype, masked",
    POOL_CASES,
    ids=[f"{r}d-{f}-keep{k}-{str(d)[6:]}-mask{m}" for r, f, k, d, m in POOL_CASES],
)
def test_global_pool_modules(kind, rank, data_format, keepdim, dtype, masked, only_triton):
    cls = tgpool.nn.GlobalMaxPool if kind == "max" else tgpool.nn.GlobalAvgPool
    module = cls(data_format=data_format, keepdim=keepdim)
    x = _input(rank, data_format, dtype, distinct=kind == "max")
    mask = _mask(x, rank, data_format) if masked else None
    with only_triton():
        y, gx, _, g = _run(module, x, mask)

    xr = x.double().requires_grad_()
    dims = _spatial(rank, data_format)
    keep = torch.ones_like(xr, dtype=torch.bool) if mask is None else _expand(mask, data_format)
    if kind == "max":
        expected = xr.masked_fill(~keep, float("-inf")).amax(dims, keepdim=keepdim)
    else:
        expected = xr.masked_fill(~keep, 0).sum(dims, keepdim=keepdim) / keep.sum(
            dims, keepdim=keepdim
        )
    expected.backward(g.double())
    _close(y, expected.detach(), dtype, exact=kind == "max")
    _close(gx, xr.grad, dtype, exact=kind == "max")


def test_pool_modules_are_stateless():
    for cls in (tgpool.nn.GlobalMaxPool, tgpool.nn.GlobalAvgPool):
        module = cls()
        assert module.data_format == "channels_first" and module.keepdim is False
        assert module.state_dict() == {} and list(module.parameters()) == []
        assert repr(module) == f"{cls.__name__}(data_format=channels_first, keepdim=False)"
        with pytest.raises(ValueError, match="data_format"):
            cls(data_format="NCHW")


# --- GeM ------------------------------------------------------------------------------------------


def _gem_reference(x, p, eps, dims, mask=None, data_format="channels_first", keepdim=False):
    """GeM in float64 by its formula: (mean over valid positions of max(x, eps)**p) ** (1/p)."""
    powered = x.clamp(min=eps).pow(p)
    if mask is None:
        return powered.mean(dims, keepdim=keepdim).pow(1 / p)
    keep = _expand(mask, data_format)
    mean = powered.masked_fill(~keep, 0).sum(dims, keepdim=keepdim) / keep.sum(
        dims, keepdim=keepdim
    )
    return mean.pow(1 / p)


# (rank, data_format, keepdim, dtype, p, masked)
GEM_CASES = [
    (2, "channels_first", False, torch.float64, 3.0, False),
    (2, "channels_last", True, torch.float64, 2.5, True),
    (1, "channels_first", True, torch.float32, 3.0, True),
    (3, "channels_last", False, torch.float32, 4.0, False),
    (2, "channels_first", False, torch.float16, 3.0, False),
    (1, "channels_last", False, torch.bfloat16, 2.0, True),
]


@pytest.mark.parametrize(
    "rank, data_format, keepdim, dtype, p, masked",
    GEM_CASES,
    ids=[f"{r}d-{f}-keep{k}-{str(d)[6:]}-p{p}-mask{m}" for r, f, k, d, p, m in GEM_CASES],
)
def test_gem_forward_and_gradients(rank, data_format, keepdim, dtype, p, masked, only_triton):
    """Input and p gradients against torch autograd of the formula; p stays float32 (the
    module's own dtype) whatever the input's, as after a plain ``GeM()``."""
    module = tgpool.nn.GeM(p=p, data_format=data_format, keepdim=keepdim)
    x = _input(rank, data_format, dtype)  # negatives too: they are clamped at eps
    mask = _mask(x, rank, data_format) if masked else None
    with only_triton():
        y, gx, (gp,), g = _run(module, x, mask, params=[module.p])

    xr = x.double().requires_grad_()
    pr = torch.tensor([p], dtype=torch.float64, requires_grad=True)
    dims = _spatial(rank, data_format)
    expected = _gem_reference(xr, pr, 1e-6, dims, mask, data_format, keepdim)
    expected.backward(g.double())
    _close(y, expected.detach(), dtype)
    _close(gx, xr.grad, dtype)
    assert gp.shape == (1,) and gp.dtype == torch.float32
    # p is float32 here, so a float64 input's p gradient is as exact as float32 allows
    p_dtype = torch.float32 if dtype == torch.float64 else dtype
    atol, rtol = TOLERANCES[p_dtype]
    torch.testing.assert_close(gp.double(), pr.grad, atol=atol, rtol=rtol)


def test_gem_float64_module_p_gradient_exact(only_triton):
    """``GeM().double()`` makes p float64; its gradient then matches autograd to 1e-12."""
    module = tgpool.nn.GeM(p=3.0).double()
    x = _input(2, "channels_first", torch.float64, positive=True)
    with only_triton():
        y, gx, (gp,), g = _run(module, x, params=[module.p])
    xr = x.clone().requires_grad_()
    pr = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    _gem_reference(xr, pr, 1e-6, (2, 3)).backward(g)
    assert gp.dtype == torch.float64
    torch.testing.assert_close(gp, pr.grad, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(gx, xr.grad, atol=1e-12, rtol=1e-12)


def test_gem_learnable_p_trains(only_triton):
    """One optimizer step moves p by -lr * its gradient: the parameter is wired to the loss."""
    module = tgpool.nn.GeM(p=3.0)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    x = _input(2, "channels_first", torch.float32, positive=True)
    with only_triton():
        module(x).sum().backward()
    grad = module.p.grad.clone()
    assert grad.abs().item() > 0
    optimizer.step()
    torch.testing.assert_close(module.p.detach(), torch.tensor([3.0]) - 0.1 * grad)


def test_gem_state_and_repr():
    learned, fixed = tgpool.nn.GeM(), tgpool.nn.GeM(p=2.0, eps=1e-5, learnable=False)
    assert isinstance(learned.p, torch.nn.Parameter) and learned.p.shape == (1,)
    assert [n for n, _ in learned.named_parameters()] == ["p"]
    assert list(fixed.parameters()) == [] and [n for n, _ in fixed.named_buffers()] == ["p"]
    assert not fixed.p.requires_grad
    assert list(learned.state_dict()) == list(fixed.state_dict()) == ["p"]
    fixed.load_state_dict(learned.state_dict())  # checkpoints move between the two
    assert fixed.p.item() == 3.0
    clone = copy.deepcopy(learned)
    assert clone.p.item() == 3.0 and clone.p is not learned.p
    assert repr(learned) == (
        "GeM(p=3.0, eps=1e-06, learnable=True, data_format=channels_first, keepdim=False)"
    )
    assert "p=2.0, eps=1e-05, learnable=False" in repr(
        tgpool.nn.GeM(p=2, eps=1e-5, learnable=False)
    )


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"p": 0.0}, ValueError),
        ({"p": -1.0}, ValueError),
        ({"p": float("inf")}, ValueError),
        ({"p": "3"}, TypeError),
        ({"eps": 0.0}, ValueError),
        ({"data_format": "NHWC"}, ValueError),
    ],
)
def test_gem_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        tgpool.nn.GeM(**kwargs)


# --- SelectGlobalPool (timm's SelectAdaptivePool2d, output size 1) --------------------------------


def _timm_select_pool(x, pool_type, flatten, data_format):
    """timm's formulas: FastAdaptive*Pool for NHWC (and flatten), AdaptiveAvg/MaxPool2d +
    Flatten for NCHW; cat(avg, max) on the channel axis (dim 1 once flattened)."""
    if not pool_type:
        return x.flatten(1) if flatten else x
    dims = (
        tuple(range(2, x.dim()))
        if data_format == "channels_first"
        else tuple(range(1, x.dim() - 1))
    )
    avg = x.mean(dims, keepdim=not flatten)
    mx = x.amax(dims, keepdim=not flatten)
    if pool_type == "avg":
        return avg
    if pool_type == "max":
        return mx
    if pool_type == "avgmax":
        return 0.5 * (avg + mx)
    channel_dim = 1 if flatten or data_format == "channels_first" else -1
    return torch.cat((avg, mx), channel_dim)


# (pool_type, flatten, data_format, rank, dtype)
SELECT_CASES = [
    ("avg", False, "channels_first", 2, torch.float32),
    ("max", True, "channels_first", 2, torch.float16),
    ("avgmax", False, "channels_last", 2, torch.float64),
    ("avgmax", True, "channels_first", 1, torch.bfloat16),
    ("catavgmax", False, "channels_first", 2, torch.float32),
    ("catavgmax", False, "channels_last", 2, torch.float32),
    ("catavgmax", True, "channels_last", 3, torch.float64),
]


@pytest.mark.parametrize(
    "pool_type, flatten, data_format, rank, dtype",
    SELECT_CASES,
    ids=[f"{t}-flat{f}-{df}-{r}d-{str(d)[6:]}" for t, f, df, r, d in SELECT_CASES],
)
def test_select_global_pool_like_timm(pool_type, flatten, data_format, rank, dtype, only_triton):
    module = tgpool.nn.SelectGlobalPool(pool_type, flatten=flatten, data_format=data_format)
    x = _input(rank, data_format, dtype, distinct=True)
    with only_triton():
        y, gx, _, g = _run(module, x)
    xr = x.double().requires_grad_()
    expected = _timm_select_pool(xr, pool_type, flatten, data_format)
    expected.backward(g.double())
    channels = x.shape[1] if data_format == "channels_first" else x.shape[-1]
    assert y.shape[1 if flatten or data_format == "channels_first" else -1] == (
        channels * module.feat_mult()
    )
    _close(y, expected.detach(), dtype, exact=pool_type == "max")
    _close(gx, xr.grad, dtype, exact=pool_type == "max")


def test_select_global_pool_masked(only_triton):
    module = tgpool.nn.SelectGlobalPool("catavgmax", flatten=True)
    x = _input(2, "channels_first", torch.float32, distinct=True)
    mask = _mask(x, 2, "channels_first")
    with only_triton():
        y = module(x, mask=mask)
    keep = _expand(mask, "channels_first")
    xd = x.double()
    avg = xd.masked_fill(~keep, 0).sum((2, 3)) / keep.sum((2, 3))
    mx = xd.masked_fill(~keep, float("-inf")).amax((2, 3))
    _close(y, torch.cat((avg, mx), 1), torch.float32)


@pytest.mark.parametrize("flatten", [False, True])
def test_select_global_pool_identity(flatten):
    module = tgpool.nn.SelectGlobalPool("", flatten=flatten)
    x = torch.randn(2, 3, 4, 5)
    assert module.is_identity() and module.feat_mult() == 1
    torch.testing.assert_close(module(x), _timm_select_pool(x, "", flatten, "channels_first"))
    assert tgpool.nn.SelectGlobalPool(None).is_identity()  # timm: any falsy pool_type


def test_select_global_pool_api():
    assert tgpool.nn.SelectGlobalPool().pool_type == "avg"
    assert tgpool.nn.SelectGlobalPool("catavgmax").feat_mult() == 2
    assert tgpool.nn.SelectGlobalPool("avgmax").feat_mult() == 1
    assert not tgpool.nn.SelectGlobalPool("max").is_identity()
    assert tgpool.nn.SelectGlobalPool("fast")._reduction == "avg"  # timm's 'fast' prefix
    assert tgpool.nn.SelectGlobalPool("fastcatavgmax").feat_mult() == 2
    assert tgpool.nn.SelectGlobalPool("max").state_dict() == {}
    assert repr(tgpool.nn.SelectGlobalPool("max", flatten=True)) == (
        "SelectGlobalPool(pool_type=max, flatten=True, data_format=channels_first)"
    )
    for bad in ({"pool_type": "gem"}, {"pool_type": "median"}, {"data_format": "NCHW"}):
        with pytest.raises(ValueError):
            tgpool.nn.SelectGlobalPool(**bad)


def test_modules_compile_fullgraph(only_triton):
    """A learnable p and a Keras mask conversion capture in one graph (no host reads of p)."""
    gem = tgpool.nn.GeM()
    keras_style = tgpool.nn.GlobalAveragePooling1D(data_format="channels_first")
    x = _input(1, "channels_first", torch.float32, positive=True)
    mask = torch.arange(x.shape[-1])[None, :] < torch.tensor([9, 4, 1])[:, None]

    def head(x, mask):
        return gem(x, mask) + keras_style(x, mask=mask.to(torch.int64))

    compiled = torch.compile(head, backend="aot_eager", fullgraph=True)
    with only_triton():
        y = compiled(x, mask)
        y.sum().backward()
    grad = gem.p.grad.clone()
    gem.p.grad = None
    with only_triton():
        expected = head(x, mask)
        expected.sum().backward()
    torch.testing.assert_close(y, expected, atol=0, rtol=0)
    torch.testing.assert_close(grad, gem.p.grad, atol=0, rtol=0)
