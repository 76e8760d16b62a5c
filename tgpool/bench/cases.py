"""The benchmark suite as data: real layer shapes, each with tgpool's call and torch's.

A ``Case`` names a layer, its full shape (batch sizes users train with), a minuscule shape for
``tgpool bench --tiny`` (the Triton interpreter), and ``build(shape, device, dtype, layout)``
returning a ``Built``: the inputs (the first one is differentiated in forward+backward runs), the
tgpool call and the plain-torch call computing the same thing (the eager and torch.compile peers
run that one). ``layout`` is "contiguous" or "channels_last": channels-last memory format for
images and volumes, data_format="channels_last" ((N, L, C) tensors) for sequences.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

LAYOUTS = ("contiguous", "channels_last")


@dataclasses.dataclass
class Built:
    inputs: list  # tensors; inputs[0] is the one differentiated
    tgpool: Callable
    torch: Callable


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    description: str
    shape: tuple[int, ...]
    tiny_shape: tuple[int, ...]
    build: Callable[[tuple, str, torch.dtype, str], Built]
    #: torch's gradient may route ties differently (amax splits them; SPPF:
    # tgpool.kernels.sppf.TIE_RULE),
    #: so gradients are compared with the peer only in float32, where random inputs do not tie
    ties_differ: bool = False
    #: whether tgpool's forward is exactly torch's (max), else compared with a tolerance
    exact: bool = False


def _image(shape, device, dtype, layout) -> torch.Tensor:
    x = torch.randn(shape, device=device, dtype=dtype)
    if layout == "channels_last":
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
    return x


def _window(tg, ref):
    def build(shape, device, dtype, layout):
        return Built([_image(shape, device, dtype, layout)], tg, ref)

    return build


def _sppf_torch(x):
    y1 = F.max_pool2d(x, 5, 1, 2)
    y2 = F.max_pool2d(y1, 5, 1, 2)
    y3 = F.max_pool2d(y2, 5, 1, 2)
    return torch.cat([x, y1, y2, y3], 1)


def _gap(shape, device, dtype, layout):
    import tgpool

    x = _image(shape, device, dtype, layout)
    return Built([x], lambda t: tgpool.global_pool(t, "avg"), lambda t: t.mean((2, 3)))


def _gem(shape, device, dtype, layout):
    import tgpool

    x = _image(shape, device, dtype, layout)
    p, eps = 3.0, 1e-6

    def ref(t):
        return t.clamp(min=eps).pow(p).mean((2, 3)).pow(1.0 / p)

    return Built([x], lambda t: tgpool.gem(t, p, eps), ref)


def _sequence(shape, device, dtype, layout):
    """(N, C, L) features, or (N, L, C) for channels_last."""
    n, c, length = shape
    if layout == "channels_last":
        return torch.randn(n, length, c, device=device, dtype=dtype), "channels_last", 1
    return torch.randn(n, c, length, device=device, dtype=dtype), "channels_first", 2


def _masked_max(shape, device, dtype, layout):
    import tgpool

    x, fmt, axis = _sequence(shape, device, dtype, layout)
    n, length = shape[0], shape[2]
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, length + 1, (n,), generator=g).to(device)  # no empty sentence
    mask = torch.arange(length, device=device) < lengths[:, None]
    pad = ~(mask[:, None, :] if axis == 2 else mask[:, :, None])

    def ref(t, m):
        return t.masked_fill(pad, float("-inf")).amax(axis)

    return Built([x, mask], lambda t, m: tgpool.global_pool(t, "max", data_format=fmt, mask=m), ref)


def _long_max(shape, device, dtype, layout):
    import tgpool

    x, fmt, axis = _sequence(shape, device, dtype, layout)
    return Built(
        [x], lambda t: tgpool.global_pool(t, "max", data_format=fmt), lambda t: t.amax(axis)
    )


def _tgpool(name, *args, **kwargs):
    def call(t):
        import tgpool

        return getattr(tgpool, name)(t, *args, **kwargs)

    return call


def _same_call(name, *args):
    """A case whose tgpool call and torch peer are the same function with the same arguments
    (tgpool.<name> and torch.nn.functional.<name>)."""
    return _window(_tgpool(name, *args), lambda t: getattr(F, name)(t, *args))


CASES: list[Case] = [
    Case(
        "resnet50_stem_maxpool",
        "ResNet-50 stem max_pool2d 3x3 s2 p1",
        (32, 64, 112, 112),
        (2, 4, 9, 9),
        _same_call("max_pool2d", 3, 2, 1),
        exact=True,
    ),
    Case(
        "cnn_head_gap",
        "CNN head global average pool 2048x7x7",
        (256, 2048, 7, 7),
        (2, 8, 3, 3),
        _gap,
    ),
    Case(
        "vgg_maxpool_2x2",
        "VGG max_pool2d 2x2 s2",
        (32, 128, 112, 112),
        (2, 4, 8, 8),
        _same_call("max_pool2d", 2, 2),
        exact=True,
    ),
    Case(
        "yolo_sppf",
        "YOLO SPPF: three chained 5x5 s1 max pools + cat",
        (16, 256, 20, 20),
        (1, 1, 5, 5),  # the interpreter runs SPPF's unrolled 13x13 window slowly
        _window(_tgpool("sppf", 5), _sppf_torch),
        ties_differ=True,
        exact=True,
    ),
    Case(
        "video_maxpool3d",
        "3D video max_pool3d 3x3x3 s2 p1",
        (8, 64, 16, 56, 56),
        (1, 2, 4, 6, 6),
        _same_call("max_pool3d", 3, 2, 1),
        exact=True,
    ),
    Case(
        "densenet_avgpool",
        "DenseNet transition avg_pool2d 2x2 s2",
        (32, 256, 56, 56),
        (2, 4, 8, 8),
        _same_call("avg_pool2d", 2, 2),
    ),
    Case(
        "adaptive_avg_7x7",
        "adaptive_avg_pool2d 14x14 -> 7x7 (VGG/AlexNet head)",
        (32, 512, 14, 14),
        (1, 4, 10, 10),
        _same_call("adaptive_avg_pool2d", 7),
    ),
    Case(
        "textcnn_masked_max",
        "text-CNN masked global max over padded sentences",
        (64, 256, 128),
        (2, 4, 6),
        _masked_max,
        ties_differ=True,
        exact=True,
    ),
    Case(
        "long_sequence_max",
        "long-sequence global max, N=1 C=64 L=1,000,000",
        (1, 64, 1_000_000),
        (1, 4, 200),
        _long_max,
        ties_differ=True,
        exact=True,
    ),
    Case(
        "gem_head",
        "GeM retrieval head p=3 on 2048x16x16",
        (64, 2048, 16, 16),
        (2, 4, 3, 3),
        _gem,
    ),
]

BY_NAME = {c.name: c for c in CASES}


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def min_bytes(built: Built, out: torch.Tensor, backward: bool) -> int:
    """The bytes any implementation must move: every input read once and the output written once;
    with backward also the output's gradient read once and the input's gradient written once.
    (No case asks for max pooling's indices, so none are counted.)"""
    total = nbytes(built.inputs) + nbytes([out])
    if backward:
        total += nbytes([out]) + nbytes(built.inputs[:1])
    return total


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) for results that sum in another order than torch (averages, GeM)."""
    return {torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 5e-2)}.get(dtype, (1e-5, 1e-4))


def geomean(values) -> float:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")
