"""tgpool.enable() on unmodified torchvision and timm models: every pooling call is routed.

torchvision 0.28.0 and timm 1.0.31 are installed without dependencies into build/zoo by
``make test`` (their pinned torch would replace the CPU build). torchvision's CUDA extension does
not load here, so its meta registrations module is replaced by an empty one before import.
Small inputs: the pooling runs through the Triton interpreter.
"""

from __future__ import annotations

import pathlib
import sys
import types

import pytest
import torch
from conftest import launches
from torch.utils._python_dispatch import TorchDispatchMode

import tgpool
from tgpool.integrations.routes import global_layout

ZOO = pathlib.Path(__file__).resolve().parents[1] / "build" / "zoo"


@pytest.fixture(scope="module")
def zoo():
    if not (ZOO / "torchvision").is_dir() or not (ZOO / "timm").is_dir():
        pytest.skip("the model zoo is not installed (make build/zoo)")
    sys.path.insert(0, str(ZOO))
    sys.modules.setdefault(
        "torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations")
    )
    import timm
    import torchvision

    yield torchvision.models, timm
    sys.path.remove(str(ZOO))


class AtenPooling(TorchDispatchMode):
    """Counts the ATen pooling calls that reach ATen's kernels (global reductions included)."""

    POOLING = ("max_pool", "avg_pool", "adaptive_", "fractional_max_pool", "max_unpool")
    REDUCTIONS = ("mean", "sum", "amax", "max")

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0].lstrip("_")
        if func.namespace != "aten":  # tgpool's own ops
            pass
        elif name.startswith(self.POOLING) and "backward" not in name:
            self.calls.append(func.__name__)
        elif name in self.REDUCTIONS and len(args) > 1 and isinstance(args[0], torch.Tensor):
            if global_layout(args[0], args[1]) is not None:
                self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _models(tv, timm):
    return {
        "inception_v3": (
            lambda: tv.inception_v3(weights=None, aux_logits=False, init_weights=False),
            (1, 3, 75, 75),
        ),
        "densenet121": (lambda: tv.densenet121(weights=None), (1, 3, 32, 32)),
        "mobilenet_v2": (lambda: tv.mobilenet_v2(weights=None), (1, 3, 32, 32)),
        "shufflenet_v2": (lambda: tv.shufflenet_v2_x0_5(weights=None), (1, 3, 32, 32)),
        "r3d_18 (video)": (lambda: tv.video.r3d_18(weights=None), (1, 3, 4, 32, 32)),
        "efficientnet_b0": (lambda: timm.create_model("efficientnet_b0"), (1, 3, 32, 32)),
        "mobilenetv3": (lambda: timm.create_model("mobilenetv3_small_050"), (1, 3, 32, 32)),
        "seresnet18": (lambda: timm.create_model("seresnet18"), (1, 3, 32, 32)),
        "vit (avg pool)": (
            lambda: timm.create_model(
                "vit_tiny_patch16_224", img_size=32, patch_size=8, global_pool="avg"
            ),
            (1, 3, 32, 32),
        ),
    }


MODELS = [
    "inception_v3",
    "densenet121",
    "mobilenet_v2",
    "shufflenet_v2",
    "r3d_18 (video)",
    "efficientnet_b0",
    "mobilenetv3",
    "seresnet18",
    "vit (avg pool)",
]


def _forward_backward(model, x, mode):
    """Forward under ``mode`` (the model's own calls), then backward (autograd's reductions of
    broadcast gradients are not the model's pooling)."""
    x = x.detach().requires_grad_()
    with mode:
        out = model(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    return out.detach(), grad


@pytest.mark.parametrize("name", MODELS)
def test_unmodified_models_route_every_pooling_call(zoo, name):
    torch.manual_seed(0)
    build, shape = _models(*zoo)[name]
    model = build().eval()
    x = torch.randn(*shape)
    unrouted = AtenPooling()
    expected, expected_grad = _forward_backward(model, x, unrouted)
    assert unrouted.calls, "the model has no pooling to route"

    before = launches()
    reaching_aten = AtenPooling()
    with tgpool.enabled() as report:
        got, grad = _forward_backward(model, x, reaching_aten)
    assert reaching_aten.calls == [], f"still on ATen: {reaching_aten.calls}"
    assert report.fell_through_count() == 0, report.table()
    assert sum(report.routed.values()) >= len(unrouted.calls), report.table()
    assert launches() > before
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)
