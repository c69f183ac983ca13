"""When a Triton kernel runs instead of its eager PyTorch reference.

Every fast path in :mod:`vheat_mm.kernels` has an eager reference beside it, and the model calls
the dispatching function, never a kernel directly. A kernel runs when

- Triton imports and the kernel's switch in :data:`SWITCHES` is on (all are, by default);
- the activation is a CUDA tensor in a half type (bfloat16 or float16: autocast, or a model cast
  to that type); float32 keeps the eager path, and so its numerics;
- for training (autograd recording), ``torch.compile`` is not tracing: the compiler then fuses
  the eager code itself. Inference kernels are registered as custom operators
  (:func:`compiled_as_custom_op`), which ``torch.compile`` keeps in its graph as they are.

``VHEAT_MM_DISABLE_KERNELS=norm,dwconv`` (names of :class:`KernelSwitches`, or ``all``) in the
environment turns kernels off for a whole process; :func:`kernel_switches` does it for a block.

Tests run the kernels on CPU tensors through Triton's interpreter: with ``TRITON_INTERPRET=1`` in
the environment before Triton is imported, ``kernel_switches(cpu_interpreter=True)`` lets the
dispatch choose them for CPU tensors too.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor

try:
    import triton  # noqa: F401
    HAVE_TRITON = True
except ImportError:  # CPU-only installs of torch may come without Triton
    HAVE_TRITON = False

INTERPRET = os.environ.get('TRITON_INTERPRET') == '1'
HALF_TYPES = (torch.float16, torch.bfloat16)

__all__ = ['HAVE_TRITON', 'INTERPRET', 'KERNEL_NAMES', 'KernelSwitches', 'SWITCHES',
           'compiled_as_custom_op', 'kernel_switches', 'needs_grad', 'triton_runs']


@dataclasses.dataclass
class KernelSwitches:
    """Which Triton kernels may run (see the module docstring for the other conditions)."""
    norm: bool = True             # LayerNorm, LayerNorm * SiLU gate, post-norm residual
    linear_gelu: bool = True      # the MLP's fc1 with bias and exact GELU in one kernel
    dwconv: bool = True           # the HCO's 3x3 depthwise convolution
    attenuate: bool = True        # spectrum * decay ** k with its gradients (training)
    cpu_interpreter: bool = False  # tests: kernels on CPU tensors under TRITON_INTERPRET=1


KERNEL_NAMES = tuple(f.name for f in dataclasses.fields(KernelSwitches)
                     if f.name != 'cpu_interpreter')


def _switches_from_environment() -> KernelSwitches:
    names = {n.strip() for n in os.environ.get('VHEAT_MM_DISABLE_KERNELS', '').split(',')
             if n.strip()}
    if 'all' in names:
        names = set(KERNEL_NAMES)
    unknown = names - set(KERNEL_NAMES)
    if unknown:
        raise ValueError(f'VHEAT_MM_DISABLE_KERNELS: unknown kernel {sorted(unknown)}; choose '
                         f'from {list(KERNEL_NAMES)} or all')
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


def needs_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd records an operation on ``tensors`` (None entries are skipped)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _is_exporting() -> bool:
    is_exporting = getattr(torch.compiler, 'is_exporting', None)  # torch >= 2.5
    return bool(is_exporting and is_exporting())


def triton_runs(switch: str, x: Tensor) -> bool:
    """Whether the kernel behind ``switch`` runs for activation ``x`` (module docstring; a
    kernel with an autograd backward also checks that ``torch.compile`` is not tracing)."""
    if not HAVE_TRITON or not getattr(SWITCHES, switch) or x.dtype not in HALF_TYPES:
        return False
    if _is_exporting():  # torch.export / ONNX: the eager code, in operators exporters know
        return False
    if x.is_cuda:
        return True
    return INTERPRET and SWITCHES.cpu_interpreter and x.device.type == 'cpu'


def compiled_as_custom_op(qualname: str, fake: Callable[..., Tensor]
                          ) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Decorator for an inference kernel's launcher: called as it is in eager mode, and through
    the custom operator ``qualname`` (with ``fake`` giving its output's shape and dtype) while
    ``torch.compile`` traces, so that compiled graphs run the same kernel. The launcher takes
    tensors, optional tensors and floats, and returns one tensor."""

    def wrap(launch: Callable[..., Tensor]) -> Callable[..., Tensor]:
        op = torch.library.custom_op(qualname, mutates_args=())(launch)
        op.register_fake(fake)

        @functools.wraps(launch)
        def call(*args):
            return op(*args) if torch.compiler.is_compiling() else launch(*args)
        return call

    return wrap
