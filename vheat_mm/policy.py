"""The rules that decide what a step may reuse: gradients, in-place writes and cached tensors.

Three questions are asked all over the network and answered only here:

- :func:`needs_grad`: does autograd record an operation on these tensors? The kernels take
  their inference path where it does not (:func:`vheat_mm.kernels.dispatch.route`).
- :func:`may_overwrite`: may a step write its result into the storage of a tensor it reads?
- :func:`caches_weight_derived`: may a tensor derived from weights be cached?

The in-place rule. A step may write its result into the storage of a tensor it reads
(``y.add_(x)`` for ``x + y``, GELU or SiLU in place) only when

1. autograd records nothing for the step (:func:`needs_grad` is False for every tensor it
   reads), so no tensor saved for a backward pass changes;
2. the tensor written to is fresh: the step before made it for this step alone (its own
   storage, not a view of an input, a parameter or a cached buffer), and it shares no storage
   with the other tensors the step reads;
3. no forward hook can have seen the tensor written to: none is registered globally
   (``register_module_forward_hook``), and, inside a vHeat model's forward, none on the model
   or any of its modules (:func:`observed_by_hooks`), so what a hook stores keeps its value;
4. no symbolic trace (``torch.fx``) records the step: a traced graph may return any node as a
   feature, so no traced step overwrites a node's value.

While ``torch.compile`` traces, storages cannot be compared and hooks are not checked: only
autograd is, and the compiler plans the buffers itself.

The cache rule. A tensor derived from weights (a resized freq_embed, decay ** k) is cached only
in the deploy form, where ``switch_to_deploy()`` folds it for weights it then freezes (and
checks, by identity and version counter alone, at each eager forward). Everywhere else (training,
evaluation, compiled code) it is computed on every forward, as the official code does outside
its ``infer_mode``. Whether a cached copy still matches the weights could only be told by
comparing values, which reads the device (a device-to-host synchronisation on a GPU): version
counters miss an edit through ``.data`` (pruning, mmengine's EMA swap), and a
``functional_call`` or a parametrization hands in other tensors. So no forward compares weights
with a cache, and none can meet a stale value. What depends on the feature size alone (DCT
bases, decay maps) is cached in every form.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import ContextManager, Iterator

import torch
import torch.fx
from torch import Tensor, nn

from .compat import is_compiling, is_exporting

__all__ = ['caches_weight_derived', 'has_forward_hooks', 'is_exporting', 'is_traced', 'may_overwrite',
           'needs_grad', 'observed_by_hooks']

# Whether the forward running now is watched by a module's forward hook (observed_by_hooks).
_HOOKED = contextvars.ContextVar('vheat_mm_hooked', default=False)


def needs_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd records an operation on ``tensors`` (None entries are skipped)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def is_traced(*values: object) -> bool:
    """Whether one of ``values`` is a value of a symbolic trace (a ``torch.fx.Proxy``)."""
    return any(isinstance(v, torch.fx.Proxy) for v in values)


def _global_hooks() -> bool:
    module = torch.nn.modules.module
    return bool(getattr(module, '_global_forward_hooks', None)
                or getattr(module, '_global_forward_pre_hooks', None))


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether a forward or forward-pre hook is registered on ``module``, any of its
    submodules, or globally."""
    return _global_hooks() or any(m._forward_hooks or m._forward_pre_hooks
                                  for m in module.modules())


def observed_by_hooks(module: nn.Module) -> ContextManager[None]:
    """Inside the block (a model's forward), :func:`may_overwrite` refuses every in-place step
    if a forward hook is registered on ``module`` or any of its submodules. A no-op while
    ``torch.compile`` traces (the compiled graph keeps the semantics of eager mutation; and
    torch 2.1's compiler cannot trace a generator's context manager)."""
    if is_compiling():
        return contextlib.nullcontext()
    return _observed_by_hooks(module)


@contextlib.contextmanager
def _observed_by_hooks(module: nn.Module) -> Iterator[None]:
    token = _HOOKED.set(_HOOKED.get() or has_forward_hooks(module))
    try:
        yield
    finally:
        _HOOKED.reset(token)


def may_overwrite(target: Tensor | None, *reads: Tensor | None) -> bool:
    """The in-place rule (module docstring): whether a step that reads ``reads`` may write its
    result into ``target``, a fresh tensor (None: one the step makes itself)."""
    if is_traced(target, *reads):
        return False
    if needs_grad(target, *reads):
        return False
    if is_compiling():
        return True
    if _HOOKED.get() or _global_hooks():
        return False
    if target is None:
        return True
    storage = target.untyped_storage().data_ptr()
    return all(t is None or t.untyped_storage().data_ptr() != storage for t in reads)


def caches_weight_derived(deploy: bool) -> bool:
    """The cache rule (module docstring): whether a tensor derived from weights may be cached,
    which only the deploy form allows; elsewhere it is computed anew on every forward."""
    return deploy
