"""Which path each kernel call takes: the eager reference, the inference kernel or the autograd one.

Every fast path in :mod:`vheat_mm.kernels` has an eager PyTorch reference beside it, and the
model calls the public function, never a kernel directly. Each public function asks
:func:`route` once and takes one of three branches:

- ``Route.EAGER``: the reference. Taken unless this torch has the kernels
  (:data:`vheat_mm.compat.FEATURES`: torch 2.4 and its triton 3; on an older torch a CUDA
  activation in a half type warns once that the references run), Triton imports, the kernel's switch in
  :data:`SWITCHES` is on (all are, by default), the activation is a CUDA tensor in a half type
  (bfloat16 or float16: autocast, or a model cast to that type; float32 keeps the reference and
  so its numerics), ``torch.export`` is not tracing (exported programs hold operators that
  exporters know), and the kernel's own condition holds (``supported``);
- ``Route.INFERENCE``: the forward kernel, where autograd records nothing
  (:func:`vheat_mm.policy.needs_grad`). It is registered as a custom operator
  (:func:`compiled_as_custom_op`), which ``torch.compile`` keeps in its graph as it is;
- ``Route.AUTOGRAD``: the forward and backward kernels (an ``autograd.Function``), where
  autograd records the call, the kernel has a backward, and ``torch.compile`` is not tracing
  (the compiler then fuses the eager code itself). A kernel without a backward takes the
  reference instead.

:data:`KERNELS` lists every public kernel function with its switch and whether it has a
backward; a test runs each one down all three routes.

``VHEAT_MM_DISABLE_KERNELS=norm,dwconv`` (names of :class:`KernelSwitches`, or ``all``) in the
environment turns kernels off for a whole process; :func:`kernel_switches` does it for a block.

Tests run the kernels on CPU tensors through Triton's interpreter: with ``TRITON_INTERPRET=1`` in
the environment before Triton is imported, ``kernel_switches(cpu_interpreter=True)`` lets
:func:`route` choose them for CPU tensors too.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import os
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator, NamedTuple

import torch
from torch import Tensor

from .. import compat
from ..policy import is_exporting, needs_grad

try:
    import triton  # noqa: F401
    HAVE_TRITON = True
except ImportError:  # CPU-only installs of torch may come without Triton
    HAVE_TRITON = False

INTERPRET = os.environ.get('TRITON_INTERPRET') == '1'
HALF_TYPES = (torch.float16, torch.bfloat16)

__all__ = ['HAVE_TRITON', 'INTERPRET', 'KERNELS', 'SWITCH_NAMES', 'Kernel', 'KernelSwitches',
           'Route', 'SWITCHES', 'compiled_as_custom_op', 'kernel_switches', 'route']


@dataclasses.dataclass
class KernelSwitches:
    """Which Triton kernels may run (see the module docstring for the other conditions)."""
    norm: bool = True             # LayerNorm, LayerNorm * SiLU gate, post-norm residual
    linear_gelu: bool = True      # the MLP's fc1 with bias and exact GELU in one kernel
    dwconv: bool = True           # the HCO's 3x3 depthwise convolution
    attenuate: bool = True        # spectrum * decay ** k with its gradients (training)
    cpu_interpreter: bool = False  # tests: kernels on CPU tensors under TRITON_INTERPRET=1


SWITCH_NAMES = tuple(f.name for f in dataclasses.fields(KernelSwitches)
                     if f.name != 'cpu_interpreter')


def _switches_from_environment() -> KernelSwitches:
    names = {n.strip() for n in os.environ.get('VHEAT_MM_DISABLE_KERNELS', '').split(',')
             if n.strip()}
    if 'all' in names:
        names = set(SWITCH_NAMES)
    unknown = names - set(SWITCH_NAMES)
    if unknown:
        raise ValueError(f'VHEAT_MM_DISABLE_KERNELS: unknown kernel {sorted(unknown)}; choose '
                         f'from {list(SWITCH_NAMES)} or all')
    return KernelSwitches(**{name: False for name in names})


SWITCHES = _switches_from_environment()


@contextmanager
def kernel_switches(**values: bool) -> Iterator[KernelSwitches]:
    """Set some of :data:`SWITCHES` for the duration of a ``with`` block (then restore them)."""
    names = {f.name for f in dataclasses.fields(KernelSwitches)}
    unknown = set(values) - names
    if unknown:
        raise TypeError(f'unknown kernel switch {sorted(unknown)}; choose from {sorted(names)}')
    before = dataclasses.replace(SWITCHES)
    for name, value in values.items():
        setattr(SWITCHES, name, bool(value))
    try:
        yield SWITCHES
    finally:
        for name in names:
            setattr(SWITCHES, name, getattr(before, name))


class Route(enum.Enum):
    """The path of one kernel call (module docstring)."""
    EAGER = 'eager'
    INFERENCE = 'inference'
    AUTOGRAD = 'autograd'


_warned_old_torch = False


def _kernels_on_this_torch(x: Tensor) -> bool:
    """Whether this torch has the kernels; if not, warns once where a CUDA activation would
    have taken one."""
    global _warned_old_torch
    if compat.has('kernels'):
        return True
    if x.is_cuda and not _warned_old_torch:
        _warned_old_torch = True
        warnings.warn(f"{compat.needs_message('kernels')}: their eager references run "
                      f"(VHEAT_MM_DISABLE_KERNELS=all silences this)", stacklevel=3)
    return False


def _kernel_may_run(switch: str, x: Tensor) -> bool:
    if not HAVE_TRITON or not getattr(SWITCHES, switch) or x.dtype not in HALF_TYPES:
        return False
    if not _kernels_on_this_torch(x):
        return False
    if is_exporting():
        return False
    if x.is_cuda:
        return True
    return INTERPRET and SWITCHES.cpu_interpreter and x.device.type == 'cpu'


class Kernel(NamedTuple):
    """A public kernel function's switch in :class:`KernelSwitches`, and whether it has an
    autograd backward."""
    switch: str
    backward: bool


#: Every public kernel function of :mod:`vheat_mm.kernels`, by name.
KERNELS: dict[str, Kernel] = {
    'layer_norm': Kernel('norm', backward=True),
    'layer_norm_silu': Kernel('norm', backward=True),
    'residual_layer_norm': Kernel('norm', backward=False),
    'linear_gelu': Kernel('linear_gelu', backward=False),
    'depthwise_conv3x3': Kernel('dwconv', backward=False),
    'attenuate_with_grad': Kernel('attenuate', backward=True),
}


def route(kernel: str, x: Tensor, *reads: Tensor | None, supported: bool = True) -> Route:
    """The path (module docstring) of a call of ``kernel`` (a name in :data:`KERNELS`) on
    activation ``x`` that also reads ``reads`` (None entries skipped); ``supported`` is the
    kernel's own condition on its arguments."""
    switch, backward = KERNELS[kernel]
    if not supported or not _kernel_may_run(switch, x):
        return Route.EAGER
    if not needs_grad(x, *reads):
        return Route.INFERENCE
    if backward and not compat.is_compiling():
        return Route.AUTOGRAD
    return Route.EAGER


def compiled_as_custom_op(qualname: str, fake: Callable[..., Tensor]
                          ) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Decorator for an inference kernel's launcher: called as it is in eager mode, and through
    the custom operator ``qualname`` (with ``fake`` giving its output's shape and dtype) while
    ``torch.compile`` traces, so that compiled graphs run the same kernel. The launcher takes
    tensors, optional tensors and floats, and returns one tensor. A launcher may end with an
    optional ``out``, a contiguous tensor of the result's shape to write into; the call passes
    it as ``out=`` in eager mode only (a compiled graph allocates its result: the compiler
    plans the buffers, and the operator mutates none of its arguments). Where this torch has
    no kernels (:data:`vheat_mm.compat.FEATURES`), no operator is registered: :func:`route`
    never chooses the launcher there."""

    def wrap(launch: Callable[..., Tensor]) -> Callable[..., Tensor]:
        if not compat.has('kernels'):
            return launch
        op = torch.library.custom_op(qualname, mutates_args=())(launch)
        op.register_fake(fake)

        @functools.wraps(launch)
        def call(*args, out: Tensor | None = None):
            if compat.is_compiling():
                return op(*args)
            return launch(*args) if out is None else launch(*args, out=out)
        return call

    return wrap
