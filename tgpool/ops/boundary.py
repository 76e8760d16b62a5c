"""The op boundary: ``tgpool::`` custom ops that cost little on the host in plain eager mode.

``custom_op`` registers each op with torch.library (schema, fake implementation, autograd), which is
what torch.compile, torch.export, FakeTensor, opcheck and dispatch modes need. But its Python
wrapper costs 25-70 us per eager call, more than ATen's whole pooling call. So ``TgpoolOp`` is a
``CustomOpDef`` (everything registered stays as it was) whose ``__call__`` takes a short path when
nothing but plain eager execution can see the call:

- not while Dynamo traces, and not under a dispatch or torch-function mode (FakeTensor, export,
  functionalisation, a user's mode), nor under functorch transforms;
- every tensor argument a plain ``torch.Tensor`` (or ``nn.Parameter``) on a device Triton runs on;

then the implementation runs directly (through its launch plan, ``tgpool.plans``) when no input
needs a gradient, or through an ``autograd.Function`` built from the op's own ``setup_context`` and
``backward`` when one does, so gradients, double backward and saved tensors are the custom op's.
Anything else takes the registered custom op, unchanged.

Under torch.compile, AOTAutograd's ``FunctionalTensorMode`` decomposes each op into its Triton
launches where tgpool/traced.py says so (CUDA, static shapes), as ``torch.library.triton_op``
does: Inductor then launches tgpool's kernels itself. Elsewhere the op stays one opaque node.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch._library.custom_ops import CustomOpDef
from torch._subclasses.fake_tensor import FakeTensor
from torch._subclasses.functional_tensor import FunctionalTensor, FunctionalTensorMode

from .. import plans, runtime, traced

Parameter = torch.nn.Parameter
#: one plan cache for every op (keys start with the op's name)
PLANS = plans.PlanCache()

_dispatch_modes = torch._C._len_torch_dispatch_stack
_function_modes = torch._C._is_torch_function_mode_enabled
_functorch = torch._C._functorch.peek_interpreter_stack
_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled


class TgpoolOp(CustomOpDef):
    """A custom op with a short eager path; built by ``tgpool_op``."""

    def _finish(self, impl, host_check=None):
        name = self._qualname
        self._impl = impl

        if host_check is None:

            def run(*args):
                return PLANS.call(name, impl, args)

        else:

            def run(*args):
                host_check(*args)  # reads values: never part of a plan, run every call
                return PLANS.call(name, impl, args)

        run.__name__ = impl.__name__
        self._run = run
        self._function = None
        self.register_kernel(None)(run)
        self.register_torch_dispatch(FunctionalTensorMode, _decomposition(impl))

    def register_autograd(self, backward, /, *, setup_context=None):
        super().register_autograd(backward, setup_context=setup_context)
        self._function = _autograd_function(self, backward, setup_context)
        # Function.apply's Python wrapper only binds default arguments (none here) and unwraps
        # functorch's dead wrappers (no transform is active on this path): call the C apply
        c_apply = getattr(torch._C._FunctionBase, "__dict__", {}).get("apply")
        self._apply = (
            c_apply.__get__(None, self._function) if c_apply is not None else self._function.apply
        )

    def __call__(self, *args, **kwargs):
        needs_grad = _plain_eager(args) if not kwargs else None
        if needs_grad is None:
            return super().__call__(*args, **kwargs)
        if needs_grad and self._function is not None and _grad_enabled():
            return self._apply(*args)
        return self._run(*args)


def tgpool_op(name: str, *, host_check=None):
    """``@tgpool_op("tgpool::name")`` over an implementation with type annotations, like
    ``@torch.library.custom_op(name, mutates_args=())``: no tgpool op mutates its inputs.
    ``host_check``: a check that reads tensor values on the host (CPU tensors only), run before
    every call with the op's arguments, so the implementation itself can be planned."""

    def register(impl) -> TgpoolOp:
        schema = torch.library.infer_schema(impl, mutates_args=())
        namespace, opname = name.split("::")
        op = TgpoolOp(namespace, opname, schema, impl, [])
        op._finish(impl, host_check)
        return op

    return register


def _plain_eager(args):
    """None unless only plain eager execution sees this call (see the module docstring); else
    whether a tensor argument requires grad. One pass: this runs on every eager call."""
    if _is_compiling() or _dispatch_modes() or _function_modes() or _functorch() is not None:
        return None
    interpreted = None
    needs_grad = False
    for a in args:
        if isinstance(a, Tensor):
            kind = type(a)
            if kind is not Tensor and kind is not Parameter:
                return None
            if not a.is_cuda:
                if interpreted is None:
                    interpreted = runtime.interpreter_enabled()
                if not (interpreted and a.is_cpu):
                    return None
            if a.requires_grad:
                needs_grad = True
    return needs_grad


def _decomposition(impl):
    """The op under FunctionalTensorMode: its implementation, launches traced into the graph
    (tgpool/traced.py), or the op itself where it is not decomposed."""

    def decompose(mode, op, types, args, kwargs):
        from torch.export._trace import custom_triton_ops_decomposition_disabled

        if custom_triton_ops_decomposition_disabled() or not traced.decomposes(args):
            return mode.__torch_dispatch__(op, types, args, kwargs)
        if any(t not in _TRACED_TYPES and not issubclass(t, FakeTensor) for t in types):
            return NotImplemented  # a tensor subclass: its own rules apply
        with mode, traced.tracing():
            return impl(*args, **kwargs)

    return decompose


_TRACED_TYPES = (Tensor, FunctionalTensor, Parameter)


def _autograd_function(op: TgpoolOp, backward, setup_context):
    """An autograd.Function with the op's implementation as forward and its registered autograd
    formula: the same saved tensors, non-differentiable outputs and backward."""
    run = op._run

    def forward(ctx, *args):
        output = run(*args)
        if setup_context is not None:
            setup_context(ctx, args, output)
        return output

    def function_backward(ctx, *grads):
        result = backward(ctx, *grads)
        return result if isinstance(result, tuple) else (result,)

    return type(
        op._name,
        (torch.autograd.Function,),
        {"forward": staticmethod(forward), "backward": staticmethod(function_backward)},
    )
