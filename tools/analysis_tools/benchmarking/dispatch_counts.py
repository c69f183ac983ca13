"""What a step asks of the host: its ATen calls, those that are views, and those that wait for
the device.

Counted with a ``TorchDispatchMode`` below autograd, so a training step's backward is counted
too. Each call is a trip from Python through the dispatcher; on a GPU each call that is not a
view launches work, and a call of :data:`SYNC_OPS` makes the host wait for the device's answer
(a device-to-host synchronisation), which also rules out capturing the step in a CUDA graph.

The GPU path on the CPU: under ``TRITON_INTERPRET=1`` Triton's interpreter runs each kernel
launch with ATen calls of its own (copies between tensors and NumPy arrays), which a GPU launch
does not make. Calls made from inside the interpreter are left out of the counts, and the
launches are counted apart, so the GPU path counts as it would on a GPU.
"""
from __future__ import annotations

import collections
import os
import sys
from typing import Callable, NamedTuple

from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ['SYNC_OPS', 'DispatchCounts', 'count_dispatch']

# ATen ops whose result the host reads: on a GPU each waits for the device
SYNC_OPS = frozenset({'aten::equal', 'aten::_local_scalar_dense', 'aten::is_nonzero',
                      'aten::item', 'aten::nonzero'})


class DispatchCounts(NamedTuple):
    calls: int                       # every ATen call (not those of Triton's interpreter)
    views: int                       # of them, views (no data touched)
    syncs: collections.Counter       # calls of SYNC_OPS, by op
    launches: int = 0                # Triton kernel launches run by the interpreter

    @property
    def not_views(self) -> int:
        return self.calls - self.views


def _triton_folder() -> str | None:
    """The folder of the imported ``triton`` package; None where it is not imported."""
    triton = sys.modules.get('triton')
    file = getattr(triton, '__file__', None)
    return os.path.dirname(file) + os.sep if file else None


def _interpreted_launch(triton_folder: str | None):
    """The outermost frame of Triton's code on the stack, which stands for the kernel launch
    that the current call serves; None outside Triton."""
    outermost = None
    frame = sys._getframe(2) if triton_folder else None
    while frame is not None:
        if frame.f_code.co_filename.startswith(triton_folder):
            outermost = frame
        frame = frame.f_back
    return outermost


class _Counting(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()
        self.launches = 0
        self._launch = None  # the launch of the last call left out (held: ids are not reused)
        self._triton = _triton_folder()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        launch = _interpreted_launch(self._triton)
        if launch is None:
            self.ops[func] += 1
        elif launch is not self._launch:
            self._launch = launch
            self.launches += 1
        return func(*args, **(kwargs or {}))


def count_dispatch(step: Callable[[], object]) -> DispatchCounts:
    """The ATen calls of one call of ``step`` (module docstring)."""
    with _Counting() as counting:
        step()
    views = sum(n for op, n in counting.ops.items() if getattr(op, 'is_view', False))
    syncs = collections.Counter({op.name(): n for op, n in counting.ops.items()
                                 if op.name() in SYNC_OPS})
    return DispatchCounts(sum(counting.ops.values()), views, syncs, counting.launches)
