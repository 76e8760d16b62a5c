"""Switch an existing model's pooling to tgpool's kernels in place, and back.

    report = patch(model)            # every torch.nn pooling module -> its tgpool.nn twin
    print(report)                    # what was replaced, what was left and why
    unpatch(model)                   # the original module objects, back where they were

``patch`` walks ``model``'s submodules (nested modules, ``Sequential``, ``ModuleList``,
``ModuleDict``) and replaces each module whose type is exactly one of torch.nn's pooling classes
(``TORCH_CLASSES``) by the tgpool.nn class of the same name. The tgpool.nn classes subclass
torch's and only change ``forward``, so the replacement is a new object of the tgpool class whose
attribute dictionary is a copy of the original's: every hyper-parameter, the training flag,
FractionalMaxPool's ``_random_samples`` buffer and output_ratio, attributes the user set, and the
very same hook dictionaries (a hook registered before or after patching fires, and its handle
removes it, whichever object it was registered on). The original object rides along on the
replacement (``_tgpool_original``, outside ``_modules``, so ``state_dict()``, ``modules()`` and
``.to()`` never see it); ``unpatch`` puts it back after copying the replacement's attribute
dictionary onto it, so ``model.eval()`` or an attribute set while patched survive unpatching.

Exact types only: a subclass of a torch.nn pooling class may have its own ``forward`` (or rely on
torch's), so it is left as it is and reported. timm's global pooling heads
(``timm.layers.adaptive_avgmax_pool``; timm is not a dependency, they are recognised by module path
and class name) become ``tgpool.nn.SelectGlobalPool`` with the same pooling, flatten and input
format when they pool to one value per channel; other output sizes and their pass-through mode
are left.

``ops`` picks what to replace: class names (``"MaxPool2d"``, ``"SelectAdaptivePool2d"``) and
families (``"max_pool"``, ``"timm_global_pool"``...), see ``FAMILIES``; None means everything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch

from .. import nn as tgnn

__all__ = ["FAMILIES", "TORCH_CLASSES", "TIMM_CLASSES", "PatchReport", "patch", "unpatch"]

#: the attribute of a replacement that holds the module it replaced
ORIGINAL = "_tgpool_original"
#: the attribute names a replacement had when created (timm heads: to carry user attributes back)
_OWN_KEYS = "_tgpool_own_keys"

_DIMS = ("1d", "2d", "3d")
#: family -> torch.nn / timm class names; each torch.nn name is also tgpool.nn's
FAMILIES: dict[str, tuple[str, ...]] = {
    "max_pool": tuple(f"MaxPool{d}" for d in _DIMS),
    "avg_pool": tuple(f"AvgPool{d}" for d in _DIMS),
    "lp_pool": tuple(f"LPPool{d}" for d in _DIMS),
    "adaptive_avg_pool": tuple(f"AdaptiveAvgPool{d}" for d in _DIMS),
    "adaptive_max_pool": tuple(f"AdaptiveMaxPool{d}" for d in _DIMS),
    "fractional_max_pool": ("FractionalMaxPool2d", "FractionalMaxPool3d"),
    "max_unpool": tuple(f"MaxUnpool{d}" for d in _DIMS),
    "timm_global_pool": (
        "SelectAdaptivePool2d",
        "AdaptiveAvgMaxPool2d",
        "AdaptiveCatAvgMaxPool2d",
        "FastAdaptiveAvgPool",
        "FastAdaptiveMaxPool",
        "FastAdaptiveAvgMaxPool",
        "FastAdaptiveCatAvgMaxPool",
    ),
}
TIMM_CLASSES = FAMILIES["timm_global_pool"]
#: torch.nn class -> its tgpool.nn replacement
TORCH_CLASSES: dict[type, type] = {
    getattr(torch.nn, name): getattr(tgnn, name)
    for family, names in FAMILIES.items()
    if family != "timm_global_pool"
    for name in names
}
#: where timm defines its pooling heads (timm >= 0.9, and the older ``timm.models.layers``)
TIMM_MODULES = ("timm.layers.adaptive_avgmax_pool", "timm.models.layers.adaptive_avgmax_pool")
_TGPOOL_CLASSES = frozenset(TORCH_CLASSES.values()) | {tgnn.SelectGlobalPool}

# timm's pooling module -> the reduction it computes, and the format its reduced dims mean
_TIMM_REDUCTION = {
    "FastAdaptiveAvgPool": "avg",
    "FastAdaptiveMaxPool": "max",
    "FastAdaptiveAvgMaxPool": "avgmax",
    "FastAdaptiveCatAvgMaxPool": "catavgmax",
    "AdaptiveAvgMaxPool2d": "avgmax",
    "AdaptiveCatAvgMaxPool2d": "catavgmax",
}
_TIMM_DIM_FORMAT = {
    (2, 3): "channels_first",
    (2,): "channels_first",
    (1, 2): "channels_last",
    (1,): "channels_last",
}


# --- the report -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Replaced:
    """``name`` (qualified, as ``named_modules()`` spells it) went from ``old`` to ``new``."""

    name: str
    old: type
    new: type


@dataclasses.dataclass(frozen=True)
class Left:
    """A pooling module ``patch`` recognised and did not replace, and why."""

    name: str
    type: type
    reason: str


@dataclasses.dataclass
class PatchReport:
    """What ``patch`` (or ``unpatch``) did. ``len(report)`` and ``bool(report)``: replacements."""

    action: str = "patch"
    replaced: list[Replaced] = dataclasses.field(default_factory=list)
    left: list[Left] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.replaced)

    def __str__(self) -> str:
        verb = "restored" if self.action == "unpatch" else "replaced"
        lines = [f"tgpool.{self.action}: {verb} {len(self.replaced)}, left {len(self.left)}"]
        if self.replaced:
            rows = [
                (r.name or "(model)", type_name(r.old), type_name(r.new)) for r in self.replaced
            ]
            lines += _table(("module", "was", "now"), rows)
        if self.left:
            rows = [(r.name or "(model)", type_name(r.type), r.reason) for r in self.left]
            lines += ["left as it is:", *_table(("module", "type", "reason"), rows)]
        return "\n".join(lines)


def type_name(cls: type) -> str:
    """``torch.nn.MaxPool2d`` / ``tgpool.nn.MaxPool2d`` for the public classes, else the full
    module path."""
    if getattr(torch.nn, cls.__name__, None) is cls:
        return f"torch.nn.{cls.__name__}"
    if getattr(tgnn, cls.__name__, None) is cls:
        return f"tgpool.nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _table(header, rows) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  " + "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)]


# --- choosing what to replace ---------------------------------------------------------------------


def _selected(ops) -> frozenset[str]:
    """``ops`` -> the class names to replace; unknown entries raise ValueError naming them."""
    every = frozenset(n for names in FAMILIES.values() for n in names)
    if ops is None:
        return every
    if isinstance(ops, str):
        ops = (ops,)
    if not isinstance(ops, Iterable):
        raise TypeError(f"ops must be None or a collection of names, not {type(ops).__name__}")
    ops = list(ops)
    bad = [o for o in ops if not isinstance(o, str) or (o not in FAMILIES and o not in every)]
    if bad:
        raise ValueError(
            f"ops: unknown name(s) {', '.join(map(repr, bad))}; valid families: "
            f"{', '.join(FAMILIES)}; valid classes: {', '.join(sorted(every))}"
        )
    return frozenset(n for o in ops for n in FAMILIES.get(o, (o,)))


def _timm_name(module) -> str | None:
    cls = type(module)
    if cls.__module__ in TIMM_MODULES and cls.__name__ in TIMM_CLASSES:
        return cls.__name__
    return None


def _is_global(output_size) -> bool:
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,)
    return all(s == 1 for s in sizes)


def _args(pool_type: str, flatten: bool, data_format: str) -> dict:
    return {"pool_type": pool_type, "flatten": flatten, "data_format": data_format}


def _timm_head(module, name: str):
    """timm module -> (SelectGlobalPool arguments, None) or (None, why it stays)."""
    if name == "SelectAdaptivePool2d":
        if not module.pool_type:
            return None, "timm head with pool_type '' (no pooling)"
        inner = module.pool
        inner_name = _timm_name(inner)
        if inner_name is None and type(inner) not in (
            torch.nn.AdaptiveAvgPool2d,
            torch.nn.AdaptiveMaxPool2d,
            tgnn.AdaptiveAvgPool2d,
            tgnn.AdaptiveMaxPool2d,
        ):
            return None, f"timm head whose pool is {type_name(type(inner))}"
        if inner_name is not None and inner_name.startswith("Fast"):
            args, why = _timm_head(inner, inner_name)
            if args is not None:
                # the fast pools flatten themselves; the head's own flatten is then Identity
                args["flatten"] = args["flatten"] or isinstance(module.flatten, torch.nn.Flatten)
            return args, why
        if not _is_global(inner.output_size):
            return None, f"timm head with output size {inner.output_size}"
        if inner_name is None:
            is_max = isinstance(inner, torch.nn.AdaptiveMaxPool2d)
            if is_max and inner.return_indices:
                return None, "timm head whose max pool returns indices"
            kind = "max" if is_max else "avg"
        else:
            kind = _TIMM_REDUCTION[inner_name]
        flatten = isinstance(module.flatten, torch.nn.Flatten)
        return _args(kind, flatten, "channels_first"), None
    if name.startswith("Fast"):
        dim = module.dim_reduce if hasattr(module, "dim_reduce") else module.dim
        data_format = _TIMM_DIM_FORMAT.get(tuple(dim))
        if data_format is None:
            return None, f"timm pool over dims {tuple(dim)}"
        flatten = bool(module.flatten)
        return _args(_TIMM_REDUCTION[name], flatten, data_format), None
    if not _is_global(module.output_size):
        return None, f"timm head with output size {module.output_size}"
    return _args(_TIMM_REDUCTION[name], False, "channels_first"), None


def _decide(module, selected: frozenset[str]):
    """-> (replacement, None), (None, reason it is left) or (None, None): not a pooling module."""
    cls = type(module)
    if cls in _TGPOOL_CLASSES:
        return None, "already patched" if ORIGINAL in module.__dict__ else "already a tgpool module"
    if cls in TORCH_CLASSES:
        if cls.__name__ not in selected:
            return None, "not in ops"
        return _twin(module, TORCH_CLASSES[cls]), None
    timm = _timm_name(module)
    if timm is not None:
        if timm not in selected:
            return None, "not in ops"
        args, why = _timm_head(module, timm)
        return (None, why) if args is None else (_timm_twin(module, args), None)
    base = next((b for b in cls.__mro__ if b in TORCH_CLASSES), None)
    if base is not None and issubclass(cls, tuple(_TGPOOL_CLASSES)):
        return None, "already a tgpool module (a subclass)"
    if base is not None:
        own = "with its own forward" if cls.forward is not base.forward else "(exact types only)"
        return None, f"subclass of {type_name(base)} {own}"
    return None, None


# --- building and undoing replacements ------------------------------------------------------------


def _twin(module: torch.nn.Module, cls: type) -> torch.nn.Module:
    """A ``cls`` object holding ``module``'s attributes (the same hook dicts and buffers)."""
    twin = cls.__new__(cls)
    twin.__dict__.update(module.__dict__)
    twin.__dict__[ORIGINAL] = module
    return twin


_MODULE_KEYS = frozenset(torch.nn.Module().__dict__)
_HOOK_KEYS = frozenset(k for k in _MODULE_KEYS if "hook" in k)
# what timm's pooling modules set in __init__ (the rest of a timm head's __dict__ is the user's)
_TIMM_KEYS = frozenset(
    {"pool_type", "pool", "flatten", "dim", "dim_reduce", "dim_cat", "output_size"}
)


def _timm_twin(module: torch.nn.Module, args: dict) -> torch.nn.Module:
    twin = tgnn.SelectGlobalPool(**args)
    spelling = getattr(module, "pool_type", "")  # SelectAdaptivePool2d's: 'fast', 'fastmax'...
    if spelling and tgnn.SelectGlobalPool(spelling)._reduction == args["pool_type"]:
        twin.pool_type = spelling
    twin.train(module.training)
    state = twin.__dict__
    state[_OWN_KEYS] = frozenset(state)
    for key, value in module.__dict__.items():
        if key in _HOOK_KEYS or (key not in _MODULE_KEYS and key not in _TIMM_KEYS):
            state[key] = value
    state[ORIGINAL] = module
    return twin


def _restore(twin: torch.nn.Module) -> torch.nn.Module:
    """The module ``twin`` replaced, carrying what changed on ``twin`` while it stood in."""
    original = twin.__dict__[ORIGINAL]
    if _OWN_KEYS not in twin.__dict__:
        state = {k: v for k, v in twin.__dict__.items() if k != ORIGINAL}
        original.__dict__.clear()
        original.__dict__.update(state)
        return original
    original.train(twin.training)
    own = twin.__dict__[_OWN_KEYS]
    for key, value in twin.__dict__.items():
        if key in _HOOK_KEYS or (key not in own and key not in (ORIGINAL, _OWN_KEYS)):
            original.__dict__[key] = value
    return original


def _walk(parent: torch.nn.Module, prefix: str, visit, seen: dict) -> None:
    """Calls ``visit(child, name)`` for each submodule, parents before children; a module it
    returns takes the child's place (in ``_modules``, so containers keep their order) and is
    descended into instead of the child (a restored timm head's own children)."""
    for key, child in list(parent._modules.items()):
        if child is None:
            continue
        name = f"{prefix}{key}"
        if id(child) in seen:  # the same module in two places: the same outcome in both
            if seen[id(child)] is not None:
                parent._modules[key] = seen[id(child)]
            continue
        new = visit(child, name)
        seen[id(child)] = new
        if new is not None:
            parent._modules[key] = new
        _walk(child if new is None else new, f"{name}.", visit, seen)


def patch(model: torch.nn.Module, ops=None) -> PatchReport:
    """Replace ``model``'s torch.nn (and timm) pooling submodules by tgpool's, in place.

    ``ops``: None (everything tgpool replaces) or names of families / classes (``FAMILIES``).
    Returns a ``PatchReport``: each replacement, and each pooling module left with its reason.
    Patching a patched model replaces nothing (its modules are reported "already patched").
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    selected = _selected(ops)
    report = PatchReport("patch")
    new, why = _decide(model, selected)
    if new is not None:
        why = f"the model itself: patch replaces submodules; use {type_name(type(new))}"
    if why is not None:
        report.left.append(Left("", type(model), why))

    def visit(child, name):
        new, why = _decide(child, selected)
        if new is not None:
            report.replaced.append(Replaced(name, type(child), type(new)))
        elif why is not None:
            report.left.append(Left(name, type(child), why))
        return new

    _walk(model, "", visit, {})
    return report


def unpatch(model: torch.nn.Module) -> PatchReport:
    """Put back the modules ``patch`` replaced (the same objects), in place. On a model that
    was never patched it does nothing and returns an empty report."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    report = PatchReport("unpatch")

    def visit(child, name):
        if ORIGINAL not in child.__dict__:
            return None
        original = _restore(child)
        report.replaced.append(Replaced(name, type(child), type(original)))
        return original

    _walk(model, "", visit, {})
    return report
