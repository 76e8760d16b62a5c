# ruff: noqa: E501  (the case tables keep one case per line)
"""Bad input for every public function (issue 7): devices, dtypes, zero sizes, ranks, grads.

One named case per line. Each bad case states the exception type, a word its message must hold
(the argument's name) and, where torch has an equivalent op, the torch call whose exception type
must be the same; the test also proves that no tgpool kernel launched before the error. Where
tgpool has no torch equivalent the type is torch's for the analogous mistake, as the comment on
the case says:

- a mask, offsets, p tensor or _random_samples on another device: RuntimeError (torch's binary
  ops: "Tensor on device meta is not on the expected device cpu!");
- a float mask where only bool is allowed: RuntimeError (``masked_fill``: "only supports boolean
  masks"); Keras-style layers take any mask dtype (Keras casts ``mask != 0``), and a float mask
  that requires grad is accepted there and gets no gradient: a mask selects, it is not a value;
- float offsets: RuntimeError (``embedding_bag``'s offsets); offsets of the wrong rank:
  RuntimeError (a shape mistake; ``embedding_bag`` raises ValueError from its Python wrapper);
- samples that require grad: RuntimeError, as torch ("not differentiable with respect to
  argument 'random_samples'");
- non-floating inputs: NotImplementedError everywhere, also where torch's CPU kernels or
  composites accept them (integer max/avg pools, lp_pool's pow);
- global pools and ragged_pool need a batch: (C, L) is a rank error. Their input checks follow
  adaptive_max_pool{n}d(x, 1), except for empty dims: a zero spatial dim or zero channels give
  0 / an (N, 0) result (tgpool's empty-row rule, reference/global_pool.py), not an error.

Calls that must work (zero batch, C = 0 for adaptive avg 1-D/2-D, a meta input, CPU p / offsets
with an input elsewhere, integer extras with an input that requires grad) are below the table.

Window-op hyper-parameter mistakes are in test_errors.py; each family's file has its own
argument checks (not repeated here).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from conftest import launches
from test_autocast import same_call

import tgpool
from tgpool.functional import sppf_pooling as SF

META = torch.device("meta")


def x_(*shape, dtype=torch.float32, device="cpu"):
    return torch.rand(*shape, dtype=dtype).to(device)


def cplx(*shape):
    return torch.complex(torch.rand(*shape), torch.rand(*shape))


def idx_(*shape, dtype=torch.int64, device="cpu"):
    return torch.zeros(*shape, dtype=dtype, device=device)


def mask_(*shape, dtype=torch.bool, device="cpu"):
    return torch.ones(*shape, dtype=dtype, device=device)


OFFS = torch.tensor([0, 2, 5])


def samples_(n=2, c=3, k=2, dtype=torch.float32, device="cpu", grad=False):
    return torch.full((n, c, k), 0.5, dtype=dtype, device=device, requires_grad=grad)


def p_(value=3.0, dtype=torch.float32, device="cpu"):
    return torch.full((1,), value, dtype=dtype, device=device)


@dataclasses.dataclass(frozen=True)
class Bad:
    name: str
    call: Callable[[], object]
    error: type[Exception]
    #: the argument the message must name
    words: str
    #: torch's equivalent call (None: none exists; the type follows the module docstring's rule)
    torch_call: Callable[[], object] | None = None


B = tgpool
GAP = tgpool.nn.GlobalAveragePooling1D
#: (name, spatial dims, tgpool call, torch call) of the single-tensor ops (window, lp, adaptive)
WINDOW = [
    (f"{kind}_pool{n}d", n, *same_call(f"{kind}_pool{n}d", *((2, 2) if kind == "lp" else (2,))))
    for kind in ("max", "avg", "lp", "adaptive_max", "adaptive_avg")
    for n in (1, 2, 3)
]


def _window_cases():
    """The single-tensor ops (window, lp, adaptive): dtypes, ranks, zero channel / spatial."""
    cases = []
    for name, n, ours, theirs in WINDOW:
        sp = (4,) * n
        # integer inputs: torch's CPU max/avg kernels accept some (test_errors.py covers
        # those), and lp_pool's composite pools integers and bools as floats (its pow); tgpool
        # refuses every non-floating input with NotImplementedError
        tags = [("bool", lambda s: x_(*s) > 0.5), ("complex", cplx)]
        if not name.startswith(("max", "avg")):
            tags.append(("int64", lambda s: x_(*s).long()))

        def bad(tag, x, error, torch_accepts=False, ours=ours, theirs=theirs, name=name):
            torch_call = None if torch_accepts else (lambda: theirs(x))
            return Bad(f"{name}-{tag}", lambda: ours(x), error, "input", torch_call)

        for tag, make in tags:
            torch_accepts = name.startswith("lp") and tag in ("bool", "int64")
            cases.append(bad(f"{tag}_input", make((2, 3, *sp)), NotImplementedError, torch_accepts))
        for tag, shape in (("rank_too_low", sp), ("rank_too_high", (1, 2, 3, *sp))):
            # ATen's avg_pool2d (and lp_pool2d's composite) reads input.size(-3) first
            error = (
                IndexError
                if tag == "rank_too_low" and name in ("avg_pool2d", "lp_pool2d")
                else RuntimeError
            )
            cases.append(bad(tag, x_(*shape), error))
        cases.append(bad("zero_spatial", x_(2, 3, *sp[:-1], 0), RuntimeError))
        if name not in ("adaptive_avg_pool1d", "adaptive_avg_pool2d"):  # torch: C = 0 is fine
            cases.append(bad("zero_channels", x_(2, 0, *sp), RuntimeError))
    return cases


def _unpool_cases():
    cases = []
    for n in (1, 2, 3):
        ours = getattr(tgpool, f"max_unpool{n}d")
        theirs = getattr(F, f"max_unpool{n}d")
        sp = (2,) * n
        x, i = x_(2, 3, *sp), idx_(2, 3, *sp)
        N = f"max_unpool{n}d"
        # fmt: off
        cases += [
            Bad(f"{N}-indices_on_meta", lambda o=ours, x=x, i=i: o(x, i.to(META), 2), RuntimeError, "indices", lambda t=theirs, x=x, i=i: t(x, i.to(META), 2)),
            Bad(f"{N}-input_on_meta", lambda o=ours, x=x, i=i: o(x.to(META), i, 2), RuntimeError, "indices", lambda t=theirs, x=x, i=i: t(x.to(META), i, 2)),
            Bad(f"{N}-float_indices", lambda o=ours, x=x, i=i: o(x, i.float(), 2), RuntimeError, "indices", lambda t=theirs, x=x, i=i: t(x, i.float(), 2)),
            Bad(f"{N}-float_indices_requiring_grad", lambda o=ours, x=x, i=i: o(x, i.float().requires_grad_(), 2), RuntimeError, "indices", lambda t=theirs, x=x, i=i: t(x, i.float().requires_grad_(), 2)),
            Bad(f"{N}-int32_indices", lambda o=ours, x=x, i=i: o(x, i.int(), 2), RuntimeError, "indices", lambda t=theirs, x=x, i=i: t(x, i.int(), 2)),
            # torch's 1-D wrapper calls indices.unsqueeze (AttributeError); 2-D / 3-D: TypeError
            Bad(f"{N}-indices_not_a_tensor", lambda o=ours, x=x: o(x, [0], 2), TypeError, "indices", None if n == 1 else lambda t=theirs, x=x: t(x, [0], 2)),
            Bad(f"{N}-int64_input", lambda o=ours, x=x, i=i: o(x.long(), i, 2), NotImplementedError, "input", lambda t=theirs, x=x, i=i: t(x.long(), i, 2)),
            Bad(f"{N}-bool_input", lambda o=ours, x=x, i=i: o(x > 0, i, 2), NotImplementedError, "input", lambda t=theirs, x=x, i=i: t(x > 0, i, 2)),
            Bad(f"{N}-complex_input", lambda o=ours, i=i, s=sp: o(cplx(2, 3, *s), i, 2), NotImplementedError, "input", lambda t=theirs, i=i, s=sp: t(cplx(2, 3, *s), i, 2)),
            Bad(f"{N}-rank_too_high", lambda o=ours, s=sp: o(x_(1, 2, 3, *s), idx_(1, 2, 3, *s), 2), RuntimeError, "input", lambda t=theirs, s=sp: t(x_(1, 2, 3, *s), idx_(1, 2, 3, *s), 2)),
            Bad(f"{N}-zero_channels", lambda o=ours, s=sp: o(x_(2, 0, *s), idx_(2, 0, *s), 2), RuntimeError, "input", lambda t=theirs, s=sp: t(x_(2, 0, *s), idx_(2, 0, *s), 2)),
            Bad(f"{N}-zero_spatial", lambda o=ours, s=sp: o(x_(2, 3, *s[:-1], 0), idx_(2, 3, *s[:-1], 0), 2), RuntimeError, "input", lambda t=theirs, s=sp: t(x_(2, 3, *s[:-1], 0), idx_(2, 3, *s[:-1], 0), 2)),
        ]
        if n > 1:  # torch's 1-D unpool views (C, L) as (C, L, 1): a 1-D input passes its rank check
            cases.append(Bad(f"{N}-rank_too_low", lambda o=ours, s=sp: o(x_(*s), idx_(*s), 2), RuntimeError, "input", lambda t=theirs, s=sp: t(x_(*s), idx_(*s), 2)))
        # fmt: on
    return cases


def _fractional_cases():
    cases = []
    for n in (2, 3):
        ours = getattr(tgpool, f"fractional_max_pool{n}d")
        theirs = getattr(F, f"fractional_max_pool{n}d")
        sp = (5,) * n
        x = x_(2, 3, *sp)
        N = f"fractional_max_pool{n}d"

        def o(x, s=None, ours=ours):
            return ours(x, 2, output_size=2, _random_samples=s)

        def t(x, s=None, theirs=theirs):
            return theirs(x, 2, output_size=2, _random_samples=s)

        # fmt: off
        cases += [
            # torch's CPU kernel reads samples from any device (meta included): tgpool refuses
            Bad(f"{N}-samples_on_meta", lambda o=o, x=x, n=n: o(x, samples_(k=n, device=META)), RuntimeError, "_random_samples"),
            Bad(f"{N}-input_on_meta", lambda o=o, x=x, n=n: o(x.to(META), samples_(k=n)), RuntimeError, "_random_samples"),
            Bad(f"{N}-float64_samples", lambda o=o, t=t, x=x, n=n: o(x, samples_(k=n, dtype=torch.float64)), RuntimeError, "_random_samples", lambda t=t, x=x, n=n: t(x, samples_(k=n, dtype=torch.float64))),
            Bad(f"{N}-int64_samples", lambda o=o, x=x, n=n: o(x, samples_(k=n, dtype=torch.int64)), RuntimeError, "_random_samples", lambda t=t, x=x, n=n: t(x, samples_(k=n, dtype=torch.int64))),
            Bad(f"{N}-samples_requiring_grad", lambda o=o, x=x, n=n: o(x, samples_(k=n, grad=True)), RuntimeError, "random_samples", lambda t=t, x=x, n=n: t(x, samples_(k=n, grad=True))),
            Bad(f"{N}-int64_input", lambda o=o, x=x: o(x.long()), NotImplementedError, "input", lambda t=t, x=x: t(x.long())),
            Bad(f"{N}-bool_input", lambda o=o, x=x: o(x > 0), NotImplementedError, "input", lambda t=t, x=x: t(x > 0)),
            Bad(f"{N}-complex_input", lambda o=o, s=sp: o(cplx(2, 3, *s)), NotImplementedError, "input", lambda t=t, s=sp: t(cplx(2, 3, *s))),
            # torch reads input.size(-ndim - 1) to draw the samples
            Bad(f"{N}-rank_too_low", lambda o=o, s=sp: o(x_(*s)), IndexError, "input", lambda t=t, s=sp: t(x_(*s))),
            Bad(f"{N}-rank_too_high", lambda o=o, s=sp: o(x_(1, 2, 3, *s)), RuntimeError, "input", lambda t=t, s=sp: t(x_(1, 2, 3, *s))),
            Bad(f"{N}-zero_channels", lambda o=o, s=sp: o(x_(2, 0, *s)), RuntimeError, "input", lambda t=t, s=sp: t(x_(2, 0, *s))),
            Bad(f"{N}-zero_spatial", lambda o=o, s=sp: o(x_(2, 3, *s[:-1], 0)), RuntimeError, "input", lambda t=t, s=sp: t(x_(2, 3, *s[:-1], 0))),
        ]
        # fmt: on
    return cases


# global pooling: torch's equivalent of the input checks is adaptive_max_pool{n}d(x, 1)
# (adaptive_avg_pool{n}d(x, 1) is a mean() in torch: any rank, RuntimeError for integers)
def _amp(x):
    return getattr(F, f"adaptive_max_pool{max(1, min(x.dim() - 2, 3))}d")(x, 1)


GLOBAL = {
    "global_pool": lambda x, **kw: tgpool.global_pool(x, "avg", **kw),
    "global_max_pool": lambda x, **kw: tgpool.global_max_pool(x, **kw),
    "global_avg_pool": lambda x, **kw: tgpool.global_avg_pool(x, **kw),
    "gem": lambda x, **kw: tgpool.gem(x, **kw),
    "GlobalMaxPool": lambda x, **kw: tgpool.nn.GlobalMaxPool()(x, **kw),
    "GeM": lambda x, **kw: tgpool.nn.GeM()(x, **kw),
    "SelectGlobalPool": lambda x, **kw: tgpool.nn.SelectGlobalPool("avgmax")(x, **kw),
}


def _global_cases():
    cases = []
    x = x_(2, 3, 4, 4)
    for N, o in GLOBAL.items():
        # fmt: off
        cases += [
            Bad(f"{N}-mask_on_meta", lambda o=o: o(x, mask=mask_(2, 4, 4, device=META)), RuntimeError, "mask"),
            Bad(f"{N}-input_on_meta", lambda o=o: o(x.to(META), mask=mask_(2, 4, 4)), RuntimeError, "mask"),
            Bad(f"{N}-float_mask", lambda o=o: o(x, mask=mask_(2, 4, 4, dtype=torch.float32)), RuntimeError, "mask"),
            Bad(f"{N}-float_mask_requiring_grad", lambda o=o: o(x, mask=mask_(2, 4, 4, dtype=torch.float32).requires_grad_()), RuntimeError, "mask"),
            Bad(f"{N}-int64_mask", lambda o=o: o(x, mask=mask_(2, 4, 4, dtype=torch.int64)), RuntimeError, "mask"),
            Bad(f"{N}-mask_wrong_shape", lambda o=o: o(x, mask=mask_(2, 4)), RuntimeError, "mask"),
            Bad(f"{N}-mask_not_a_tensor", lambda o=o: o(x, mask=[[True]]), TypeError, "mask"),
            Bad(f"{N}-int64_input", lambda o=o: o(x.long()), NotImplementedError, "input", lambda: _amp(x.long())),
            Bad(f"{N}-bool_input", lambda o=o: o(x > 0), NotImplementedError, "input", lambda: _amp(x > 0)),
            Bad(f"{N}-complex_input", lambda o=o: o(cplx(2, 3, 4, 4)), NotImplementedError, "input", lambda: _amp(cplx(2, 3, 4, 4))),
            # global pooling needs a batch: (C, L) is refused (torch's 1-D adaptive pool takes it)
            Bad(f"{N}-rank_too_low", lambda o=o: o(x_(3, 4)), RuntimeError, "input"),
            Bad(f"{N}-rank_too_high", lambda o=o: o(x_(1, 2, 3, 4, 4, 4)), RuntimeError, "input", lambda: F.adaptive_max_pool3d(x_(1, 2, 3, 4, 4, 4), 1)),
        ]
        # fmt: on
    return cases


def _gem_p_cases():
    x = x_(2, 3, 4, 4)
    gem = tgpool.gem
    # fmt: off
    return [
        Bad("gem-p_on_meta", lambda: gem(x, p_(device=META)), RuntimeError, "p"),
        Bad("gem-int64_p", lambda: gem(x, p_(dtype=torch.int64)), RuntimeError, "p"),
        Bad("gem-complex_p", lambda: gem(x, torch.ones(1, dtype=torch.complex64)), RuntimeError, "p"),
        Bad("gem-two_element_p", lambda: gem(x, torch.ones(2)), RuntimeError, "p"),
        Bad("gem-p_not_a_number", lambda: gem(x, "3"), TypeError, "p"),
        Bad("GeM-p_on_meta", lambda: _gem_module(META)(x), RuntimeError, "p"),
    ]
    # fmt: on


def _gem_module(device):
    m = tgpool.nn.GeM()
    m.p.data = m.p.data.to(device)
    return m


def _ragged_cases():
    v = x_(5, 3)
    rp = tgpool.ragged_pool
    # fmt: off
    return [
        # values on a Triton device may take CPU offsets (read there); not the other way round
        Bad("ragged_pool-offsets_on_meta", lambda: rp(v, OFFS.to(META)), RuntimeError, "offsets"),
        Bad("ragged_pool-float_offsets_requiring_grad", lambda: rp(v, OFFS.float().requires_grad_()), RuntimeError, "offsets", lambda: F.embedding_bag(torch.tensor([0]), v, OFFS.float().requires_grad_())),
        Bad("ragged_pool-bool_offsets", lambda: rp(v, OFFS > 0), RuntimeError, "offsets"),
        Bad("ragged_pool-offsets_not_a_tensor", lambda: rp(v, [0, 2, 5]), TypeError, "offsets"),
        Bad("ragged_pool-bool_values", lambda: rp(v > 0, OFFS), NotImplementedError, "values"),
        Bad("ragged_pool-complex_values", lambda: rp(cplx(5, 3), OFFS), NotImplementedError, "values"),
        Bad("ragged_pool-values_rank_too_low", lambda: rp(x_(5), OFFS), RuntimeError, "values"),
        Bad("ragged_pool-values_rank_too_high", lambda: rp(x_(5, 3, 1), OFFS), RuntimeError, "values"),
        Bad("ragged_pool-offsets_rank_too_low", lambda: rp(v, torch.tensor(0)), RuntimeError, "offsets"),
    ]
    # fmt: on


def _sppf_cases():
    x = x_(2, 3, 6, 6)
    ref = SF.sppf_reference
    # fmt: off
    return [
        Bad("sppf-int64_input", lambda: tgpool.sppf(x.long()), NotImplementedError, "input"),
        Bad("sppf-bool_input", lambda: tgpool.sppf(x > 0), NotImplementedError, "input", lambda: ref(x > 0)),
        Bad("sppf-complex_input", lambda: tgpool.sppf(cplx(2, 3, 6, 6)), NotImplementedError, "input", lambda: ref(cplx(2, 3, 6, 6))),
        # sppf is batched only: torch's composition accepts (C, H, W)
        Bad("sppf-rank_too_low", lambda: tgpool.sppf(x_(3, 6, 6)), RuntimeError, "input"),
        Bad("sppf-rank_too_high", lambda: tgpool.sppf(x_(1, 2, 3, 6, 6)), RuntimeError, "input", lambda: ref(x_(1, 2, 3, 6, 6))),
        Bad("sppf-zero_channels", lambda: tgpool.sppf(x_(2, 0, 6, 6)), RuntimeError, "input", lambda: ref(x_(2, 0, 6, 6))),
        Bad("sppf-zero_spatial", lambda: tgpool.sppf(x_(2, 3, 0, 6)), RuntimeError, "input", lambda: ref(x_(2, 3, 0, 6))),
    ]
    # fmt: on


def _keras_cases():
    x = x_(2, 5, 3)  # (batch, steps, features)
    # fmt: off
    return [
        Bad("GlobalAveragePooling1D-mask_on_meta", lambda: GAP()(x, mask=mask_(2, 5, device=META)), RuntimeError, "mask"),
        Bad("GlobalAveragePooling1D-input_on_meta", lambda: GAP()(x.to(META), mask=mask_(2, 5)), RuntimeError, "mask"),
        Bad("GlobalAveragePooling1D-mask_wrong_shape", lambda: GAP()(x, mask=mask_(2, 3)), RuntimeError, "mask"),
        Bad("GlobalAveragePooling1D-complex_input", lambda: GAP()(cplx(2, 5, 3)), NotImplementedError, "input"),
    ]
    # fmt: on


BAD = (
    _window_cases()
    + _unpool_cases()
    + _fractional_cases()
    + _global_cases()
    + _gem_p_cases()
    + _ragged_cases()
    + _sppf_cases()
    + _keras_cases()
)


@pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
def test_bad_input_raises_like_torch_before_any_launch(case):
    before = launches()
    with pytest.raises(Exception) as info:
        case.call()
    assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
    assert launches() == before, "a kernel launched before the error"
    assert case.words.lower() in str(info.value).lower(), str(info.value)
    if case.torch_call is not None:
        with pytest.raises(Exception) as theirs:
            case.torch_call()
        assert type(theirs.value) is case.error, f"torch: {type(theirs.value).__name__}"


def test_every_public_function_has_bad_cases():
    """Every pooling function exported at tgpool.* (tgpool.functional.__all__) has a case."""
    covered = {c.name.split("-")[0] for c in BAD}
    missing = {n for n in tgpool.functional.__all__ if hasattr(tgpool, n)} - covered
    assert not missing, missing


# --- calls torch accepts (or tgpool defines): they must work, and give torch's result --------------

# one call per public function: tgpool's, torch's equivalent (None: tgpool-only; see below)
ACCEPTED = {
    **{name: (n, ours, theirs) for name, n, ours, theirs in WINDOW},
    **{
        f"fractional_max_pool{n}d": (
            n,
            *same_call(
                f"fractional_max_pool{n}d",
                2,
                output_size=2,
                _random_samples=lambda x, n=n: samples_(max(x.shape[0], 1), x.shape[1], n),
            ),
        )
        for n in (2, 3)
    },
    **{
        f"max_unpool{n}d": (
            n,
            *same_call(f"max_unpool{n}d", lambda x: torch.zeros_like(x, dtype=torch.int64), 2),
        )
        for n in (1, 2, 3)
    },
    "global_pool": (2, lambda x: tgpool.global_pool(x, "avg"), lambda x: x.mean((2, 3))),
    "global_max_pool": (2, lambda x: tgpool.global_max_pool(x), lambda x: x.amax((2, 3))),
    "global_avg_pool": (2, lambda x: tgpool.global_avg_pool(x), lambda x: x.mean((2, 3))),
    "gem": (
        2,
        lambda x: tgpool.gem(x, 2.0),
        lambda x: x.clamp(min=1e-6).pow(2).mean((2, 3)).sqrt(),
    ),
    "sppf": (2, lambda x: tgpool.sppf(x, 3), lambda x: SF.sppf_reference(x, 3)),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_zero_batch_gives_torchs_empty_result(name):
    n, ours, theirs = ACCEPTED[name]
    x = x_(0, 3, *(5,) * n)
    out, ref = ours(x), theirs(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype


@pytest.mark.parametrize(
    "name", [k for k in sorted(ACCEPTED) if "unpool" not in k and "fractional" not in k]
)
def test_input_on_meta_gives_torchs_meta_result(name):
    """meta tensors have no Triton: tgpool hands them to torch (shape inference only)."""
    n, ours, theirs = ACCEPTED[name]
    x = x_(2, 3, *(5,) * n, device=META)
    out, ref = ours(x), theirs(x)
    assert out.device == META and out.shape == ref.shape and out.dtype == ref.dtype


@pytest.mark.parametrize("n", [1, 2])  # adaptive_avg_pool3d refuses C = 0, as torch
def test_adaptive_avg_zero_channels_like_torch(n):
    x = x_(2, 0, *(5,) * n)
    out = getattr(tgpool, f"adaptive_avg_pool{n}d")(x, 2)
    assert out.shape == getattr(F, f"adaptive_avg_pool{n}d")(x, 2).shape


def test_ragged_pool_of_no_segment():
    out = tgpool.ragged_pool(x_(0, 3), torch.tensor([0]), "max")
    assert out.shape == (0, 3) and out.dtype == torch.float32


def test_cpu_extras_with_an_input_on_meta():
    """CPU offsets and a CPU p are accepted with an input on any device (read on the host or
    moved, without a synchronisation); on meta the result is shape inference."""
    v, x = x_(5, 3, device=META), x_(2, 3, 4, 4, device=META)
    assert tgpool.ragged_pool(v, OFFS, "gem", p=p_()).shape == (2, 3)
    assert tgpool.gem(x, p_()).shape == (2, 3)
    assert tgpool.nn.GeM()(x).device == META


def test_global_and_ragged_empty_rows_pool_to_zero():
    """tgpool's rule (reference/global_pool.py): a row with no position pools to 0; a zero spatial dim
    or zero channels give that, not an error (torch's adaptive_max_pool refuses both)."""
    assert torch.equal(tgpool.global_pool(x_(2, 3, 4, 0), "max"), torch.zeros(2, 3))
    assert torch.equal(tgpool.gem(x_(2, 3, 0, 4)), torch.zeros(2, 3))
    assert tgpool.global_avg_pool(x_(2, 0, 4, 4)).shape == (2, 0)
    assert tgpool.ragged_pool(x_(5, 0), OFFS).shape == (2, 0)


def _grad(fn, x):
    x = x.detach().double().requires_grad_()
    fn(x).sum().backward()
    return x.grad


def test_integer_extras_with_an_input_that_requires_grad():
    """indices, offsets and masks are integer / bool and carry no gradient; the input's flows."""
    x = x_(2, 3, 4, 4)
    _, idx = F.max_pool2d(x, 2, return_indices=True)
    y = x_(2, 3, 2, 2)
    got = _grad(lambda t: tgpool.max_unpool2d(t, idx, 2), y)
    assert torch.equal(got, _grad(lambda t: F.max_unpool2d(t, idx, 2), y))

    v, offs = x_(5, 3), OFFS.int()
    got = _grad(lambda t: tgpool.ragged_pool(t, offs, "avg"), v)
    expected = _grad(lambda t: torch.stack([t[:2].mean(0), t[2:].mean(0)]), v)
    torch.testing.assert_close(got, expected)

    keep = torch.rand(2, 4, 4) > 0.3
    got = _grad(lambda t: tgpool.global_pool(t, "sum", mask=keep), x)
    torch.testing.assert_close(got, keep[:, None].expand(2, 3, 4, 4).double())

    seq, steps = x_(2, 5, 3), torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    got = _grad(lambda t: GAP()(t, mask=steps), seq)
    torch.testing.assert_close(
        got, (steps / steps.sum(1, keepdim=True))[..., None].expand(2, 5, 3).double()
    )


def test_keras_float_mask_that_requires_grad_gets_no_gradient():
    """Keras layers take any mask dtype (non-zero = valid); a mask selects, so no gradient."""
    seq = x_(2, 5, 3, dtype=torch.float64).requires_grad_()
    steps = torch.tensor([[1.0, 1, 0, 0, 0], [1, 1, 1, 1, 1]], requires_grad=True)
    out = GAP()(seq, mask=steps)
    out.sum().backward()
    assert steps.grad is None
    torch.testing.assert_close(out, GAP()(seq.detach(), mask=steps.detach().bool()))
