"""What a step asks of the host: its ATen calls, those that are views, and those that wait for
the device.

Counted with a ``TorchDispatchMode`` below autograd, so a training step's backward is counted
too. Each call is a trip from Python through the dispatcher; on a GPU each call that is not a
view launches work, and a call of :data:`SYNC_OPS` makes the host wait for the device's answer
(a device-to-host synchronisation), which also rules out capturing the step in a CUDA graph.
"""
from __future__ import annotations

import collections
from typing import Callable, NamedTuple

from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ['SYNC_OPS', 'DispatchCounts', 'count_dispatch']

# ATen ops whose result the host reads: on a GPU each waits for the device
SYNC_OPS = frozenset({'aten::equal', 'aten::_local_scalar_dense', 'aten::is_nonzero',
                      'aten::item', 'aten::nonzero'})


class DispatchCounts(NamedTuple):
    calls: int                       # every ATen call
    views: int                       # of them, views (no data touched)
    syncs: collections.Counter       # calls of SYNC_OPS, by op

    @property
    def not_views(self) -> int:
        return self.calls - self.views


class _Counting(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func] += 1
        return func(*args, **(kwargs or {}))


def count_dispatch(step: Callable[[], object]) -> DispatchCounts:
    """The ATen calls of one call of ``step``."""
    with _Counting() as counting:
        step()
    views = sum(n for op, n in counting.ops.items() if getattr(op, 'is_view', False))
    syncs = collections.Counter({op.name(): n for op, n in counting.ops.items()
                                 if op.name() in SYNC_OPS})
    return DispatchCounts(sum(counting.ops.values()), views, syncs)
