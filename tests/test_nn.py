"""tgpool.nn modules: torch.nn's constructor, attributes and repr, and torch's forward results."""

from __future__ import annotations

import pickle

import pytest
import torch

import tgpool
import tgpool.nn

# (class name, constructor args, constructor kwargs, input shape)
MODULE_CASES = [
    ("MaxPool1d", (3,), {}, (2, 3, 10)),
    ("MaxPool1d", (3, 2, 1), {"dilation": 2, "ceil_mode": True}, (2, 3, 11)),
    ("MaxPool1d", (2,), {"return_indices": True}, (3, 9)),
    ("MaxPool2d", (3,), {"stride": 2, "padding": 1}, (2, 4, 9, 9)),
    (
        "MaxPool2d",
        ((2, 3),),
        {"stride": (1, 2), "dilation": (2, 1), "return_indices": True},
        (2, 3, 8, 9),
    ),
    ("MaxPool2d", (2,), {"ceil_mode": True}, (3, 7, 7)),
    ("MaxPool3d", (2,), {}, (1, 2, 4, 4, 6)),
    ("MaxPool3d", (3, 2, 1), {"return_indices": True, "ceil_mode": True}, (1, 2, 5, 5, 5)),
    ("AvgPool1d", (3,), {}, (2, 3, 10)),
    ("AvgPool1d", (3, 2, 1), {"ceil_mode": True, "count_include_pad": False}, (3, 9)),
    ("AvgPool2d", (3,), {"stride": 2, "padding": 1}, (2, 4, 9, 9)),
    ("AvgPool2d", ((2, 3), (1, 2)), {"divisor_override": 4}, (2, 3, 8, 9)),
    ("AvgPool2d", (2,), {"ceil_mode": True, "count_include_pad": False, "padding": 1}, (3, 7, 7)),
    ("AvgPool3d", (2,), {}, (1, 2, 4, 4, 6)),
    ("AvgPool3d", (3, 2, 1), {"ceil_mode": True, "divisor_override": 5}, (1, 2, 5, 5, 5)),
]


def _params():
    return [
        pytest.param(name, args, kwargs, shape, id=f"{name}-{i}")
        for i, (name, args, kwargs, shape) in enumerate(MODULE_CASES)
    ]


def _pair(name, args, kwargs):
    return getattr(tgpool.nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)


@pytest.mark.parametrize("name, args, kwargs, shape", _params())
def test_same_module_as_torch(name, args, kwargs, shape):
    ours, theirs = _pair(name, args, kwargs)
    assert isinstance(ours, getattr(torch.nn, name))
    assert repr(ours) == repr(theirs)
    assert ours.extra_repr() == theirs.extra_repr()
    assert {k: v for k, v in vars(ours).items() if not k.startswith("_")} == {
        k: v for k, v in vars(theirs).items() if not k.startswith("_")
    }
    assert ours.state_dict() == theirs.state_dict() == {}
    assert list(ours.parameters()) == []
    copy = pickle.loads(pickle.dumps(ours))
    assert type(copy) is type(ours) and repr(copy) == repr(ours)


@pytest.mark.parametrize("name, args, kwargs, shape", _params())
def test_forward_matches_torch(name, args, kwargs, shape, only_triton):
    ours, theirs = _pair(name, args, kwargs)
    x = torch.randn(shape)
    expected = theirs(x)
    with only_triton():
        got = ours(x)
    if kwargs.get("return_indices"):
        assert isinstance(got, tuple) and len(got) == 2
        assert torch.equal(got[0], expected[0])
        assert torch.equal(got[1], expected[1])
    elif name.startswith("Max"):
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["MaxPool2d", "AvgPool2d"])
def test_module_default_stride_is_kernel_size(name, only_triton):
    ours, theirs = _pair(name, (3,), {})
    assert ours.stride == theirs.stride
    x = torch.randn(1, 2, 9, 9)
    expected = theirs(x)
    with only_triton():
        got = ours(x)
    assert got.shape == expected.shape == (1, 2, 3, 3)


def test_modules_in_sequential_backward(only_triton):
    """Modules compose like torch's: forward and backward through a small stack."""
    torch_net = torch.nn.Sequential(torch.nn.MaxPool2d(3, 1, 1), torch.nn.AvgPool2d(2))
    ours = torch.nn.Sequential(tgpool.nn.MaxPool2d(3, 1, 1), tgpool.nn.AvgPool2d(2))
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    expected = torch_net(x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    with only_triton():
        got = ours(x)
        (grad,) = torch.autograd.grad(got.sum(), x)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad, expected_grad, atol=1e-6, rtol=1e-6)
