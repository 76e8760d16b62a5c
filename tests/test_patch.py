"""tgpool.patch / tgpool.unpatch on whole models.

- every torch.nn pooling class is replaced (patching only that class, by name) and the patched
  model's output and input gradient match the original's, computed by torch in float64 (max
  values and indices exactly), while torch's own pooling raises and tgpool kernels launch;
- what a replacement carries: containers, hooks (firing, removable, carried back), the training
  flag, user attributes, buffers; what is left and why (subclasses, ``ops``), idempotence,
  ``unpatch`` restoring the very objects, the report;
- timm's global pooling heads, with the real timm classes when timm is installed;
- the ResNet-style demo network: patched against original forward and backward, torch.compile
  (fullgraph, aot_eager and inductor), torch.export (strict and non-strict), deterministic mode.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import kernels_only, launches

import tgpool
from tgpool.cli import demo
from tgpool.cli.resnet_demo import TinyResNet
from tgpool.integrations.patch import FAMILIES, TORCH_CLASSES, PatchReport, patch, unpatch

ROOT = Path(__file__).resolve().parents[1]

# --- every torch.nn class -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """``make()`` builds the torch.nn module under test; ``refuse``: the torch.nn.functional
    functions its forward calls (they raise while the patched model runs)."""

    name: str
    make: object
    shape: tuple
    refuse: tuple
    positive: bool = False  # lp pooling with a fractional power needs positive inputs
    unpool: bool = False  # the module unpools the output of a torch max pool with indices

    def __str__(self):
        return self.name


def _samples(n, c, dims):
    return torch.rand(n, c, dims)


nn = torch.nn
CASES = [
    # max pooling: dilation, ceil_mode (a last window starting in the padding), indices
    Case("MaxPool1d-dilated-ceil", lambda: nn.MaxPool1d(3, 2, 1, dilation=2, ceil_mode=True),
         (2, 3, 12), ("max_pool1d", "max_pool1d_with_indices")),
    Case("MaxPool2d-indices", lambda: nn.MaxPool2d(3, 2, 1, return_indices=True), (2, 3, 9, 8),
         ("max_pool2d", "max_pool2d_with_indices")),
    Case("MaxPool3d-anisotropic-ceil",
         lambda: nn.MaxPool3d((2, 3, 2), (1, 2, 2), dilation=(1, 1, 2), ceil_mode=True),
         (1, 2, 4, 7, 7), ("max_pool3d", "max_pool3d_with_indices")),
    # average pooling: count_include_pad, divisor_override, ceil_mode
    Case("AvgPool1d-ceil-exclude-pad",
         lambda: nn.AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False), (2, 3, 10),
         ("avg_pool1d",)),
    Case("AvgPool2d-divisor-override", lambda: nn.AvgPool2d(3, 2, 1, divisor_override=5),
         (2, 3, 9, 8), ("avg_pool2d",)),
    Case("AvgPool3d-ceil-include-pad", lambda: nn.AvgPool3d(2, 2, 1, ceil_mode=True),
         (1, 2, 5, 6, 5), ("avg_pool3d",)),
    # lp pooling: integer and fractional powers, ceil_mode
    Case("LPPool1d-p2", lambda: nn.LPPool1d(2, 3, stride=2), (2, 3, 11), ("lp_pool1d",)),
    Case("LPPool2d-p3-ceil", lambda: nn.LPPool2d(3, (2, 3), ceil_mode=True), (2, 2, 7, 8),
         ("lp_pool2d",)),
    Case("LPPool3d-p1.5", lambda: nn.LPPool3d(1.5, 2), (1, 2, 4, 5, 4), ("lp_pool3d",),
         positive=True),
    # adaptive: overlapping windows (7 -> 4), None keeping a size, global
    Case("AdaptiveAvgPool1d", lambda: nn.AdaptiveAvgPool1d(4), (2, 3, 7),
         ("adaptive_avg_pool1d",)),
    Case("AdaptiveAvgPool2d-None", lambda: nn.AdaptiveAvgPool2d((3, None)), (2, 3, 7, 5),
         ("adaptive_avg_pool2d",)),
    Case("AdaptiveAvgPool3d-global", lambda: nn.AdaptiveAvgPool3d(1), (1, 3, 3, 4, 5),
         ("adaptive_avg_pool3d",)),
    Case("AdaptiveMaxPool1d-indices", lambda: nn.AdaptiveMaxPool1d(3, return_indices=True),
         (2, 3, 8), ("adaptive_max_pool1d", "adaptive_max_pool1d_with_indices")),
    Case("AdaptiveMaxPool2d", lambda: nn.AdaptiveMaxPool2d((4, 3)), (2, 3, 7, 7),
         ("adaptive_max_pool2d", "adaptive_max_pool2d_with_indices")),
    Case("AdaptiveMaxPool3d", lambda: nn.AdaptiveMaxPool3d(2), (1, 2, 5, 3, 4),
         ("adaptive_max_pool3d", "adaptive_max_pool3d_with_indices")),
    # fractional: fixed samples (a buffer the replacement must carry), output_size / output_ratio
    Case("FractionalMaxPool2d-size",
         lambda: nn.FractionalMaxPool2d(2, output_size=(4, 3), _random_samples=_samples(2, 3, 2)),
         (2, 3, 9, 7), ("fractional_max_pool2d", "fractional_max_pool2d_with_indices")),
    Case("FractionalMaxPool3d-ratio-indices",
         lambda: nn.FractionalMaxPool3d(
             2, output_ratio=0.5, return_indices=True, _random_samples=_samples(1, 2, 3)),
         (1, 2, 6, 6, 8), ("fractional_max_pool3d", "fractional_max_pool3d_with_indices")),
    # unpooling torch's max pool indices (output_size given for 2D: an odd size)
    Case("MaxUnpool1d", lambda: nn.MaxUnpool1d(2), (2, 3, 8), ("max_unpool1d",), unpool=True),
    Case("MaxUnpool2d-output-size", lambda: nn.MaxUnpool2d(2), (2, 3, 7, 6), ("max_unpool2d",),
         unpool=True),
    Case("MaxUnpool3d", lambda: nn.MaxUnpool3d(2, 2), (1, 2, 4, 4, 6), ("max_unpool3d",),
         unpool=True),
]  # fmt: skip


class Holder(torch.nn.Module):
    """Runs ``pool``; for unpooling, on a torch max pool's output and indices."""

    def __init__(self, pool, ndim: int | None = None):
        super().__init__()
        self.pool = pool
        self.pre = None
        if ndim is not None:
            self.pre = getattr(torch.nn, f"MaxPool{ndim}d")(2, return_indices=True)

    def forward(self, x):
        if self.pre is None:
            return self.pool(x)
        y, idx = self.pre(x)
        return self.pool(y, idx, output_size=x.shape[2:])


def _outputs(model, x):
    """(values, indices or None, input gradient) of ``model`` on ``x``; the upstream gradient
    holds small integers, exact in every dtype, so float32 and float64 runs see the same one."""
    x = x.clone().requires_grad_()
    out = model(x)
    values, indices = out if isinstance(out, tuple) else (out, None)
    g = (torch.arange(values.numel()) % 7 - 3).to(values.dtype).reshape(values.shape)
    (values * g).sum().backward()
    return values.detach(), indices, x.grad


def test_cases_cover_every_class():
    covered = {c.name.split("-")[0] for c in CASES}
    assert covered == {cls.__name__ for cls in TORCH_CLASSES}, "a torch.nn class has no case"
    assert len(TORCH_CLASSES) == 20


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_class_is_replaced_and_matches_torch(case):
    cls_name = case.name.split("-")[0]
    ndim = len(case.shape) - 2
    original = Holder(case.make(), ndim if case.unpool else None)
    model = copy.deepcopy(original)
    report = patch(model, ops=[cls_name])
    assert [(r.name, r.old, r.new) for r in report.replaced] == [
        ("pool", getattr(torch.nn, cls_name), getattr(tgpool.nn, cls_name))
    ]
    assert type(model.pool) is getattr(tgpool.nn, cls_name)
    assert model.pool.__dict__.keys() - {"_tgpool_original"} == original.pool.__dict__.keys()
    for key, value in original.pool.__dict__.items():  # every hyper-parameter and buffer
        if not isinstance(value, dict):
            assert getattr(model.pool, key) == value or getattr(model.pool, key) is value, key
    assert type(model.pre) is type(original.pre)  # not asked for: the unpool's input stays torch

    x = torch.randn(case.shape)
    if case.positive:
        x = x.abs() + 0.1
    with kernels_only(case.refuse):
        values, indices, grad = _outputs(model, x)
    ref_values, ref_indices, ref_grad = _outputs(copy.deepcopy(original).double(), x.double())
    if cls_name.startswith(("Max", "AdaptiveMax", "Fractional")):
        torch.testing.assert_close(values.double(), ref_values, rtol=0, atol=0)
    else:
        torch.testing.assert_close(
            values.double(), ref_values, rtol=2e-6, atol=1e-6, equal_nan=True
        )
    assert values.dtype == torch.float32
    if ref_indices is not None:
        assert torch.equal(indices, ref_indices)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=2e-6, atol=1e-6, equal_nan=True)


# --- what a replacement carries -------------------------------------------------------------------


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1)
        self.pools = torch.nn.ModuleList([torch.nn.MaxPool2d(2), torch.nn.AvgPool2d(2)])
        self.heads = torch.nn.ModuleDict({"avg": torch.nn.AdaptiveAvgPool2d(1)})

    def forward(self, x):
        x = self.conv(x)
        return self.heads["avg"](self.pools[1](self.pools[0](x)))


def nested():
    return torch.nn.Sequential(torch.nn.Sequential(Block()), torch.nn.Flatten())


NESTED_NAMES = ["0.0.pools.0", "0.0.pools.1", "0.0.heads.avg"]


def test_nested_containers_report_and_state_dict():
    model = nested()
    state = copy.deepcopy(model.state_dict())
    originals = [model.get_submodule(n) for n in NESTED_NAMES]
    report = patch(model)
    assert isinstance(report, PatchReport) and len(report) == 3 and report
    assert [r.name for r in report.replaced] == NESTED_NAMES  # in module order
    assert [r.new for r in report.replaced] == [
        tgpool.nn.MaxPool2d,
        tgpool.nn.AvgPool2d,
        tgpool.nn.AdaptiveAvgPool2d,
    ]
    assert report.left == []
    for name in NESTED_NAMES:
        assert type(model.get_submodule(name)).__module__.startswith("tgpool")
    text = str(report)
    assert "replaced 3, left 0" in text and "0.0.heads.avg" in text
    assert "torch.nn.AdaptiveAvgPool2d" in text and "tgpool.nn.AdaptiveAvgPool2d" in text
    # the original objects ride along outside _modules: not in modules() or state_dict()
    assert not any(m is o for m in model.modules() for o in originals)
    assert model.state_dict().keys() == state.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])
    back = unpatch(model)
    assert [(r.name, r.old, r.new) for r in back.replaced] == [
        (r.name, r.new, r.old) for r in report.replaced
    ]
    assert all(model.get_submodule(n) is o for n, o in zip(NESTED_NAMES, originals, strict=True))
    assert model.state_dict().keys() == state.keys()


def test_patch_twice_and_unpatch_unpatched_do_nothing():
    model = nested()
    assert len(unpatch(model)) == 0 and not unpatch(model).left  # never patched: no-op
    patch(model)
    patched = [model.get_submodule(n) for n in NESTED_NAMES]
    again = patch(model)
    assert len(again) == 0 and not again
    assert [(r.name, r.reason) for r in again.left] == [
        (n, "already patched") for n in NESTED_NAMES
    ]
    assert [model.get_submodule(n) for n in NESTED_NAMES] == patched
    assert len(unpatch(model)) == 3
    assert len(unpatch(model)) == 0
    built = torch.nn.Sequential(tgpool.nn.MaxPool2d(2))  # built with tgpool.nn: nothing to undo
    assert patch(built).left[0].reason == "already a tgpool module"
    assert len(unpatch(built)) == 0


def test_hooks_fire_and_move_with_the_module():
    model = nested()
    pool = model.get_submodule("0.0.pools.0")
    calls = []
    pool.register_forward_pre_hook(lambda m, args: calls.append(("pre", type(m))))
    pool.register_forward_hook(lambda m, args, out: calls.append(("fwd", type(m))))
    pool.register_full_backward_hook(lambda m, gi, go: calls.append(("bwd", type(m))))
    removed = pool.register_forward_hook(lambda m, args, out: calls.append(("removed", None)))
    patch(model)
    removed.remove()  # a handle from before patching still removes its hook
    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    with kernels_only(["max_pool2d", "max_pool2d_with_indices"], "max_pool2d"):
        model(x).sum().backward()
    assert calls == [("pre", tgpool.nn.MaxPool2d), ("fwd", tgpool.nn.MaxPool2d)] + [
        ("bwd", tgpool.nn.MaxPool2d)
    ]
    # a hook registered while patched stays on the original after unpatch
    model.get_submodule("0.0.pools.0").register_forward_hook(
        lambda m, args, out: calls.append(("late", type(m)))
    )
    unpatch(model)
    calls.clear()
    model(x)
    assert calls == [("pre", torch.nn.MaxPool2d), ("fwd", torch.nn.MaxPool2d)] + [
        ("late", torch.nn.MaxPool2d)
    ]


def test_training_flag_attributes_and_buffers_carried_both_ways():
    pool = torch.nn.FractionalMaxPool2d(
        2, output_ratio=(0.5, 0.5), _random_samples=torch.rand(1, 2, 2)
    )
    pool.note = "user attribute"
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), pool).eval()
    patch(model)
    twin = model[1]
    assert not twin.training and twin.note == "user attribute"
    assert twin.output_ratio == (0.5, 0.5) and twin._random_samples is pool._random_samples
    assert dict(model.named_buffers()).keys() == {"1._random_samples"}
    model.double()  # moves the shared buffer dict: the original sees it too
    assert pool._random_samples.dtype == torch.float64
    model.train()
    twin.note = "changed while patched"
    twin.kernel_size = (3, 3)  # hyper-parameters changed while patched are kept too
    unpatch(model)
    assert model[1] is pool and pool.training
    assert pool.note == "changed while patched" and pool.kernel_size == (3, 3)
    assert "_tgpool_original" not in pool.__dict__


def test_shared_module_and_root_module():
    shared = torch.nn.MaxPool1d(2)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared)
    report = patch(model)
    assert [r.name for r in report.replaced] == ["0"]  # one module, reported once
    assert model[0] is model[2] and type(model[0]) is tgpool.nn.MaxPool1d
    unpatch(model)
    assert model[0] is shared and model[2] is shared
    root = torch.nn.MaxPool2d(2)
    report = patch(root)  # nothing holds the model itself: it cannot be replaced in place
    assert len(report) == 0 and type(root) is torch.nn.MaxPool2d
    assert "tgpool.nn.MaxPool2d" in report.left[0].reason and report.left[0].name == ""


class DoublingPool(torch.nn.MaxPool2d):
    def forward(self, x):
        return 2 * super().forward(x)


class PlainSubclass(torch.nn.AvgPool2d):
    pass


def test_subclasses_are_left_with_the_reason():
    model = torch.nn.Sequential(DoublingPool(2), PlainSubclass(2), torch.nn.MaxPool2d(2))
    report = patch(model)
    assert [r.name for r in report.replaced] == ["2"]
    assert type(model[0]) is DoublingPool and type(model[1]) is PlainSubclass
    assert [(r.name, r.type, r.reason) for r in report.left] == [
        ("0", DoublingPool, "subclass of torch.nn.MaxPool2d with its own forward"),
        ("1", PlainSubclass, "subclass of torch.nn.AvgPool2d (exact types only)"),
    ]
    assert "DoublingPool" in str(report) and "with its own forward" in str(report)


def test_ops_selects_families_and_classes():
    model = nested()
    report = patch(model, ops=["max_pool", "AdaptiveAvgPool2d"])
    assert [r.name for r in report.replaced] == ["0.0.pools.0", "0.0.heads.avg"]
    assert [(r.name, r.reason) for r in report.left] == [("0.0.pools.1", "not in ops")]
    assert type(model.get_submodule("0.0.pools.1")) is torch.nn.AvgPool2d
    assert [r.name for r in patch(model, ops="avg_pool").replaced] == ["0.0.pools.1"]  # one name
    assert len(patch(nested(), ops=[])) == 0
    assert set(FAMILIES["max_pool"]) == {"MaxPool1d", "MaxPool2d", "MaxPool3d"}


@pytest.mark.parametrize(
    "ops, error, words",
    [
        (
            ["max_pool", "maxpool", "MaxPool4d"],
            ValueError,
            ["'maxpool'", "'MaxPool4d'", "avg_pool"],
        ),
        (["max_pool", 2], ValueError, ["2", "valid families"]),
        (3, TypeError, ["ops"]),
    ],
)
def test_bad_ops_raise_naming_the_entries(ops, error, words):
    model = nested()
    with pytest.raises(error) as info:
        patch(model, ops=ops)
    for word in words:
        assert word in str(info.value)
    assert type(model.get_submodule("0.0.pools.0")) is torch.nn.MaxPool2d  # nothing replaced
    with pytest.raises(TypeError, match="model"):
        patch(lambda x: x)


# --- timm heads -----------------------------------------------------------------------------------


def _timm_layers_dir() -> Path | None:
    spec = importlib.util.find_spec("timm")  # finds, does not import
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "layers"
    local = ROOT / "build" / "timm" / "timm" / "layers"  # make's --target install
    return local if local.is_dir() else None


@pytest.fixture(scope="module")
def timm_pool():
    """timm.layers.adaptive_avgmax_pool, the real module, loaded without running timm's and
    timm.layers' __init__ (they import torchvision, which does not import beside torch 2.13):
    stub parent packages point at timm's folders for this import only."""
    layers = _timm_layers_dir()
    if layers is None or not (layers / "adaptive_avgmax_pool.py").is_file():
        pytest.skip("timm is not installed (pip install --no-deps --target build/timm timm)")
    stubs = {}
    for name, path in (("timm", layers.parent), ("timm.layers", layers)):
        stubs[name] = types.ModuleType(name)
        stubs[name].__path__ = [str(path)]
    with mock.patch.dict(sys.modules, stubs):
        return importlib.import_module("timm.layers.adaptive_avgmax_pool")


TIMM_HEADS = [
    # (constructor, keyword arguments, input format): pool_type and flatten in each mode
    ("SelectAdaptivePool2d", {"pool_type": "avg", "flatten": True}, "NCHW"),
    ("SelectAdaptivePool2d", {"pool_type": "max"}, "NCHW"),
    ("SelectAdaptivePool2d", {"pool_type": "avgmax", "flatten": True}, "NCHW"),
    ("SelectAdaptivePool2d", {"pool_type": "catavgmax"}, "NCHW"),
    ("SelectAdaptivePool2d", {"pool_type": "fast", "flatten": True}, "NCHW"),
    ("SelectAdaptivePool2d", {"pool_type": "fastcatavgmax"}, "NCHW"),
    ("SelectAdaptivePool2d", {"pool_type": "max", "input_fmt": "NHWC"}, "NHWC"),
    ("SelectAdaptivePool2d", {"pool_type": "catavgmax", "input_fmt": "NHWC"}, "NHWC"),
    ("SelectAdaptivePool2d", {"pool_type": "avgmax", "flatten": True, "input_fmt": "NHWC"}, "NHWC"),
    ("AdaptiveAvgMaxPool2d", {}, "NCHW"),
    ("AdaptiveCatAvgMaxPool2d", {}, "NCHW"),
    ("FastAdaptiveMaxPool", {"flatten": True, "input_fmt": "NHWC"}, "NHWC"),
    ("FastAdaptiveAvgPool", {"input_fmt": "NCL"}, "NCL"),
]  # fmt: skip
_TIMM_SHAPES = {"NCHW": (2, 4, 5, 3), "NHWC": (2, 5, 3, 4), "NCL": (2, 4, 7)}


@pytest.mark.parametrize(
    "head", TIMM_HEADS, ids=lambda h: f"{h[0]}-{'-'.join(map(str, h[1].values()))}"
)
def test_timm_heads_become_select_global_pool(timm_pool, head):
    cls_name, kwargs, fmt = head
    timm_head = getattr(timm_pool, cls_name)(**kwargs)
    original = torch.nn.Sequential(timm_head)
    model = copy.deepcopy(original)
    report = patch(model)
    assert [(r.name, r.old.__name__, r.new) for r in report.replaced] == [
        ("0", cls_name, tgpool.nn.SelectGlobalPool)
    ]
    x = torch.randn(_TIMM_SHAPES[fmt])
    with kernels_only([], "global_"):
        values, _, grad = _outputs(model, x)
    ref_values, _, ref_grad = _outputs(original.double(), x.double())
    assert values.shape == ref_values.shape
    torch.testing.assert_close(values.double(), ref_values, rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=2e-6, atol=1e-6)
    if cls_name == "SelectAdaptivePool2d":
        assert model[0].feat_mult() == timm_head.feat_mult()
        assert model[0].is_identity() == timm_head.is_identity()
    assert unpatch(model).replaced[0].new is type(timm_head) and type(model[0]) is type(timm_head)


def test_timm_heads_left_with_reasons(timm_pool):
    model = torch.nn.Sequential(
        timm_pool.SelectAdaptivePool2d(output_size=7, pool_type="avg"),
        timm_pool.SelectAdaptivePool2d(pool_type=""),
        timm_pool.AdaptiveCatAvgMaxPool2d(output_size=(2, 2)),
        timm_pool.SelectAdaptivePool2d(pool_type="max"),
    )
    report = patch(model, ops=["timm_global_pool", "adaptive_avg_pool"])
    assert [(r.name, r.reason) for r in report.left] == [
        ("0", "timm head with output size 7"),
        ("1", "timm head with pool_type '' (no pooling)"),
        ("2", "timm head with output size (2, 2)"),
    ]
    # the 7x7 head stays timm's; its inner torch.nn pool is replaced on its own
    assert [r.name for r in report.replaced] == ["0.pool", "3"]
    assert type(model[0].pool) is tgpool.nn.AdaptiveAvgPool2d
    head = model[3]
    unpatch(model)
    assert type(model[0].pool) is torch.nn.AdaptiveAvgPool2d
    assert type(model[3]) is timm_pool.SelectAdaptivePool2d and model[3] is not head
    report = patch(model, ops=["max_pool"])
    assert ("3", "not in ops") in [(r.name, r.reason) for r in report.left]


def test_timm_head_carries_training_hooks_and_attributes(timm_pool):
    head = timm_pool.SelectAdaptivePool2d(pool_type="avg", flatten=True)
    head.note = "mine"
    calls = []
    head.register_forward_hook(lambda m, args, out: calls.append(out.shape))
    model = torch.nn.Sequential(head).eval()
    patch(model)
    assert type(model[0]) is tgpool.nn.SelectGlobalPool and not model[0].training
    assert model[0].note == "mine" and model[0].pool_type == "avg" and model[0].flatten is True
    model(torch.randn(2, 3, 4, 4))
    assert calls == [torch.Size([2, 3])]
    model.train()
    model[0].note = "changed"
    unpatch(model)
    assert model[0] is head and head.training and head.pool.training and head.note == "changed"


# --- the ResNet-style network ---------------------------------------------------------------------


def _resnet():
    torch.manual_seed(0)
    original = TinyResNet()
    patched = copy.deepcopy(original)
    report = patch(patched)
    return original, patched, report


def _train_step(model, x):
    model.zero_grad()
    y = model(x)
    y.square().mean().backward()
    return y.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


RESNET_POOL_KERNELS = ("max_pool2d_fwd", "avg_pool2d_fwd", "global_avg_fwd", "max_pool2d_bwd")


def test_resnet_patched_matches_original():
    original, patched, report = _resnet()
    assert [(r.name, r.new) for r in report.replaced] == [
        ("stem.3", tgpool.nn.MaxPool2d),
        ("layers.1.shortcut.0", tgpool.nn.AvgPool2d),
        ("layers.2.shortcut.0", tgpool.nn.AvgPool2d),
        ("pool", tgpool.nn.AdaptiveAvgPool2d),
    ]
    assert patched.state_dict().keys() == original.state_dict().keys()
    x = torch.randn(2, 3, 18, 18)
    before = launches()
    y_ref, g_ref = _train_step(original, x)
    assert launches() == before  # the original runs torch's pooling only
    start = {k: launches(k) for k in RESNET_POOL_KERNELS}
    with kernels_only(
        ["max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d"]
    ):
        y, g = _train_step(patched, x)
    assert all(launches(k) > start[k] for k in RESNET_POOL_KERNELS)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    assert g.keys() == g_ref.keys() and len(g) == 29
    for name in g:
        torch.testing.assert_close(g[name], g_ref[name], rtol=1e-4, atol=1e-6, msg=name)
    for (name, a), b in zip(original.state_dict().items(), patched.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)  # BatchNorm's running statistics too


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_resnet_compile_fullgraph(backend):
    torch._dynamo.reset()
    _, patched, _ = _resnet()
    eager = copy.deepcopy(patched)
    compiled = torch.compile(patched, backend=backend, fullgraph=True)  # a graph break raises
    x = torch.randn(2, 3, 18, 18)
    y_ref, g_ref = _train_step(eager, x)
    start = {k: launches(k) for k in RESNET_POOL_KERNELS}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*lru_cache.*")
        y, g = _train_step(compiled, x)
    assert all(launches(k) > start[k] for k in RESNET_POOL_KERNELS)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    g = {n.removeprefix("_orig_mod."): t for n, t in g.items()}
    assert g.keys() == g_ref.keys()
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("strict", [False, True])
def test_resnet_export(strict):
    _, patched, _ = _resnet()
    patched.eval()
    x = torch.randn(2, 3, 18, 18)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*lru_cache.*")
        exported = torch.export.export(patched, (x,), strict=strict)
    targets = {str(n.target) for n in exported.graph_module.graph.nodes if n.op == "call_function"}
    tgpool_ops = {t for t in targets if t.startswith("tgpool.")}
    assert tgpool_ops == {
        "tgpool.max_pool.default",
        "tgpool.avg_pool.default",
        "tgpool.adaptive_avg_pool.default",
    }, targets
    assert not any("max_pool2d" in t or "avg_pool2d" in t for t in targets - tgpool_ops)
    before = launches()
    y = exported.module()(x)
    assert launches() > before
    torch.testing.assert_close(y, patched(x), rtol=1e-6, atol=1e-6)


def test_resnet_deterministic_algorithms():
    _, patched, _ = _resnet()
    x = torch.randn(2, 3, 18, 18)
    saved = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [_train_step(copy.deepcopy(patched), x) for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(saved)
    (y1, g1), (y2, g2) = runs
    assert torch.equal(y1, y2)
    assert all(torch.equal(g1[n], g2[n]) for n in g1)


def test_demo_resnet_part(capsys):
    assert demo.resnet_demo("cpu", batch=1)
    out = capsys.readouterr().out
    assert "tgpool.patch: replaced 4, left 0" in out and "-> OK" in out
    assert "the original launched 0 tgpool kernels" in out
