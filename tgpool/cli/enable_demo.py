"""The ``tgpool.enable()`` part of ``tgpool demo``: one unmodified model, every pooling routed.

The model is torchvision's GoogLeNet when torchvision imports (its inception blocks call
``F.max_pool2d`` and its head ``adaptive_avg_pool2d``), else a small stand-in written the same
way (functional pooling in a block, a squeeze-excite ``x.mean((2, 3), keepdim=True)``, a
``x.mean([2, 3])`` head). It runs forward and backward once on ATen and once under
``tgpool.enabled()``, and prints what was routed per ATen op, and the largest differences.
"""

from __future__ import annotations

import sys
import types

import torch
import torch.nn.functional as F


class StandIn(torch.nn.Module):
    """Pooling as model code writes it when module swapping cannot reach it."""

    def __init__(self, width: int = 8, classes: int = 10):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, width, 3, padding=1)
        self.branch = torch.nn.Conv2d(width, width, 1)
        self.squeeze = torch.nn.Conv2d(2 * width, width, 1)
        self.excite = torch.nn.Conv2d(width, 2 * width, 1)
        self.fc = torch.nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.stem(x)), 3, 2, ceil_mode=True)
        pooled = self.branch(F.avg_pool2d(x, 3, 1, 1))  # an inception-style pooling branch
        x = torch.cat([x, pooled], 1)
        scale = torch.sigmoid(self.excite(torch.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        return self.fc((x * scale).mean([2, 3]))


def _model():
    """(name, model, input size): torchvision's GoogLeNet, or the stand-in."""
    try:
        sys.modules.setdefault(  # torchvision's CUDA-only meta registrations fail on CPU builds
            "torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations")
        )
        import torchvision

        model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
        return "torchvision googlenet (unmodified)", model, 40
    except Exception:  # noqa: BLE001 - not installed, or not importable beside this torch
        return "a stand-in model (torchvision is not installed)", StandIn(), 16


def _forward_backward(model, x):
    x = x.detach().requires_grad_()
    out = model(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    return out.detach(), grad


def enable_demo(device: str) -> bool:
    import tgpool
    from tgpool import runtime

    torch.manual_seed(0)
    name, model, size = _model()
    model = model.to(device).eval()
    x = torch.randn(1, 3, size, size, device=device)
    expected, expected_grad = _forward_backward(model, x)
    before = sum(runtime.launch_counts.values())
    with tgpool.enabled() as report:
        got, grad = _forward_backward(model, x)
    launched = sum(runtime.launch_counts.values()) - before
    out_diff = (got - expected).abs().max().item()
    grad_diff = (grad - expected_grad).abs().max().item()
    print(f"\n== enable: {name}, forward + backward on 1x3x{size}x{size}, no code changed")
    print(report.table())
    good = launched > 0 and report.fell_through_count() == 0 and max(out_diff, grad_diff) <= 1e-4
    print(
        f"{sum(report.routed.values())} calls routed, {report.fell_through_count()} left to ATen,"
        f" {launched} tgpool kernel launches (forward and backward); max |output difference| ="
        f" {out_diff:.2e}, max |input gradient difference| = {grad_diff:.2e}"
        f" -> {'OK' if good else 'MISMATCH'}"
    )
    return good
