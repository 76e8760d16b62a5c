"""The specialisation Triton's JIT gives a launch, rebuilt for ahead-of-time compilation.

``specialise`` turns a kernel's argument tuple and constexprs into ASTSource's (signature,
constexprs, attrs) as JITFunction's binder does: each argument goes through Triton's own
``native_specialize_impl`` where it exists (``rule_specialisation`` otherwise), so
tgpool/aot/compiler.py compiles the variant a real launch would.
"""

from __future__ import annotations

import torch

_TORCH_TO_TRITON = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float64: "fp64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.bool: "i1",
}


def rule_specialisation(arg, is_const=False, specialize=True, align=True):
    """Triton's specialisation rules, for a Triton without ``native_specialize_impl``; tests
    check they agree with the native one where that exists."""
    if isinstance(arg, bool):
        return "u1", None
    if isinstance(arg, int):
        if specialize and arg == 1:
            return "constexpr", 1
        ty = "i32" if -(2**31) <= arg < 2**31 else "i64" if -(2**63) <= arg < 2**63 else "u64"
        return ty, ("D" if specialize and align and arg % 16 == 0 else "")
    if isinstance(arg, float):
        return "fp32", None
    if arg is None:
        return "constexpr", None
    if isinstance(arg, torch.Tensor):
        ty = ("*k" if is_const else "*") + _TORCH_TO_TRITON[arg.dtype]
        return ty, ("D" if align and arg.data_ptr() % 16 == 0 else "")
    raise TypeError(f"no specialisation rule for {type(arg).__name__}")


def _specialiser(backend):
    """Triton's own per-argument specialisation (3.5+), else ``rule_specialisation``."""
    try:
        from triton._C.libtriton import native_specialize_impl
    except ImportError:
        return rule_specialisation

    def native(arg, is_const, specialize, align):
        try:
            return native_specialize_impl(backend, arg, is_const, specialize, align)
        except TypeError:  # another binding's calling convention: the rules say the same
            return rule_specialisation(arg, is_const, specialize, align)

    return native


def specialise(kernel, args: tuple, constexprs: dict, backend, specialiser=None):
    """(signature, constexprs, attrs) for ASTSource, as JITFunction's binder and ``_pack_args``
    build them for a call ``kernel[grid](*args, **constexprs)``."""
    specialiser = specialiser or _specialiser(backend)
    params = kernel.params
    if len(args) + len(constexprs) != len(params):
        raise TypeError(
            f"{kernel.__name__} takes {len(params)} arguments, got "
            f"{len(args)} + constexprs {sorted(constexprs)}"
        )
    signature, consts, attrs = {}, {}, {}
    bound = iter(args)
    for i, p in enumerate(params):
        if getattr(p, "is_constexpr", False):
            signature[p.name], consts[p.name] = "constexpr", constexprs[p.name]
            attrs[(i,)] = backend.parse_attr("")  # as _pack_args: the same ASTSource hash
            continue
        arg = next(bound)
        ty, spec = specialiser(
            arg,
            bool(getattr(p, "is_const", False)),
            not getattr(p, "do_not_specialize", False),
            not getattr(p, "do_not_specialize_on_alignment", False),
        )
        annotation = getattr(p, "annotation_type", None)
        if annotation:  # annotated parameters keep their declared type (none in tgpool today)
            ty = annotation
            if annotation == "u1" or annotation[:2] in ("fp", "bf"):
                spec = None
        signature[p.name] = ty
        if ty == "constexpr":
            consts[p.name] = spec
            spec = ""
        if isinstance(spec, str):
            attrs[(i,)] = backend.parse_attr(spec)
    return signature, consts, attrs
