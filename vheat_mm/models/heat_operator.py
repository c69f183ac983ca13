"""The Heat Conduction Operator (HCO) as a module, and the cache of the tensors it derives.

The HCO spreads a stage's features u (B, H, W, C) as heat on an H x W plate for time t = 1:
``IDCT2D(DCT2D(u) * decay ** k)`` with decay[n, m] = exp(-((n pi / H)^2 + (m pi / W)^2)) and
the conductivity k = ReLU(Linear(FVE)) learned from the stage's frequency value embedding
(``freq_embed``). The math is in :mod:`.heat`; this module adds the layers around it.

What the HCO derives (bases, decay maps, resized embeddings, decay ** k) is kept in one
:class:`TensorCache`, owned by the model (the trunk's ``heat_cache``) and handed to every
operator in the :class:`HeatContext` of its stage, with the model's deploy flag. The operators
hold no state of their own: each names its entries by its ``cache_key``. Bases and decay maps
depend on the feature size alone and are cached in every form; what derives from weights follows
the cache rule (:func:`vheat_mm.policy.caches_weight_derived`): it is cached in the deploy form
alone (``switch_to_deploy`` folds it for weights it freezes; call it again after changing them)
and computed on every forward otherwise, so no forward compares weights with a cached copy.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from ..compat import is_compiling
from ..policy import caches_weight_derived
from .heat import (broadcast_bases, dct_basis, float32_under_autocast, has_size,
                   heat_conduction, heat_log_decay_map, inverse_bases, resize_freq_embed)
from .layers import (DepthwiseConv3x3, GatedLayerNorm, PointwiseLinear, SplitPointwiseLinear,
                     traced_as_one_node)

__all__ = ['HeatConductionOperator', 'HeatContext', 'TensorCache', 'build_heat_context']


class TensorCache(nn.Module):
    """Derived tensors kept as non-persistent buffers, keyed by name, within a byte limit.

    One cache serves a whole model (the trunk's ``heat_cache``): the bases, decay maps and
    resized freq_embeds of every stage and the decay ** k of every HCO. Buffers follow
    ``module.to()`` and stay out of the state dict. An entry is rebuilt when its device or
    dtype no longer matches the request; an entry is never compared with anything on the device
    (what derives from weights is cached in the deploy form alone:
    :func:`~vheat_mm.policy.caches_weight_derived`). Before an entry is stored, the least recently
    used entries are dropped until it fits within ``limit_bytes``; an entry larger than the
    whole limit is not stored. Evaluating a detector at hundreds of distinct padded sizes then
    keeps the last few sizes only. Entries never require grad and are built outside inference
    mode and with autocast off, so they can be used in any later mode and do not depend on the
    autocast state of the call that built them.

    While ``torch.compile`` or ``torch.export`` traces (:func:`vheat_mm.compat.is_compiling`),
    the cache is read-only: an entry of the right device and dtype is used as it is, and a missing one is computed in the graph without being stored (registering a
    buffer while tracing would change the module and force a recompilation on the next call).

    Threads may share the cache (one model serving inference in several threads): its
    bookkeeping (look-up, eviction, storing) is done under one lock, and an entry a thread has
    been given stays valid for it after another thread evicts it.
    """

    DEFAULT_LIMIT_BYTES = 512 * 2**20

    def __init__(self, limit_bytes: int = DEFAULT_LIMIT_BYTES):
        super().__init__()
        self.limit_bytes = int(limit_bytes)
        self._recent: OrderedDict[str, None] = OrderedDict()  # least recently used first
        self._lock = threading.RLock()

    def __getstate__(self) -> dict:  # copy.deepcopy and pickle: a lock is not copied
        return {name: value for name, value in self.__dict__.items() if name != '_lock'}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._lock = threading.RLock()

    @property
    def nbytes(self) -> int:
        """Bytes held now by the entries."""
        with self._lock:
            return _nbytes(*self._buffers.values())

    def get(self, key: str, build: Callable[[], Tensor], *, device: torch.device,
            dtype: torch.dtype) -> Tensor:
        """The entry ``key`` on ``device`` in ``dtype``, built by ``build`` where absent."""
        name = f'cache_{key}'
        if is_compiling():
            # neither dict.get nor a change of grad mode: torch 2.1's compiler has no dict.get,
            # and torch 2.3's export refuses a grad mode set while it traces
            cached = self._buffers[name] if name in self._buffers else None
            if cached is not None and cached.device == device and cached.dtype == dtype:
                return cached
            with torch.autocast(device.type, enabled=False):
                return build().detach().to(device=device, dtype=dtype)
        with self._lock:
            cached = self._buffers.get(name)
            if cached is not None and cached.device == device and cached.dtype == dtype:
                self._recent.move_to_end(name)
                return cached
            self.drop(name)
            with torch.inference_mode(False), torch.no_grad(), \
                    torch.autocast(device.type, enabled=False):
                cached = build().to(device=device, dtype=dtype)
            if self._make_room(_nbytes(cached)):
                self.register_buffer(name, cached, persistent=False)
                self._recent[name] = None
            return cached

    def _make_room(self, nbytes: int) -> bool:
        """Drop least recently used entries until ``nbytes`` more fit; False if they never do."""
        if nbytes > self.limit_bytes:
            return False
        held = self.nbytes
        while self._recent and held + nbytes > self.limit_bytes:
            oldest = next(iter(self._recent))
            held -= _nbytes(self._buffers[oldest])
            self.drop(oldest)
        return True

    def drop(self, name: str) -> None:
        with self._lock:
            self._buffers.pop(name, None)
            self._recent.pop(name, None)

    def clear(self) -> None:
        """Drop every entry (they are rebuilt when next needed)."""
        with self._lock:
            for name in list(self._buffers):
                self.drop(name)

    def extra_repr(self) -> str:
        return f'entries={list(self._buffers)}, limit_bytes={self.limit_bytes}'


def _nbytes(*tensors: Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class HeatContext(NamedTuple):
    """What every block of a stage shares at one feature size (H, W), for one batch.

    The bases are (H, H) and (W, W), or, for a batch of B maps, broadcast over the batches of
    the products that apply them (:func:`~vheat_mm.models.heat.broadcast_bases`): (B, H, H) and
    (B*H, W, W). The embedding and the log decay come as one row per frequency (n, m), row
    n * W + m, the layout of the linear layer that reads them.
    """
    basis_h: Tensor      # DCT-II basis D_H, (H, H) or (B, H, H)
    basis_w: Tensor      # DCT-II basis D_W, (W, W) or (B*H, W, W)
    inverse_h: Tensor    # D_H transposed, the inverse transform's (a view)
    inverse_w: Tensor    # D_W transposed
    log_decay: Tensor    # (H*W, 1) log of the decay exp(-((n pi/H)^2 + (m pi/W)^2))
    freq_embed: Tensor   # (H*W, C) the stage's frequency embedding at this size
    deploy: bool         # the deploy form: derived tensors are folded (module docstring)
    cache: TensorCache   # the model's cache, where each HCO keeps its decay ** k


def build_heat_context(cache: TensorCache, freq_embed: Tensor, key: str, height: int,
                       width: int, *, device: torch.device, deploy: bool,
                       batch: int | None = None) -> HeatContext:
    """Bases, decay map and ``freq_embed`` (as rows, H' * W' by C) at feature size (height,
    width); with ``batch``, the bases broadcast for a batch of that many maps
    (:class:`HeatContext`).

    The bases and the decay map are cached in ``cache`` per size; ``freq_embed`` resized to
    another size is cached under ``key`` (a name of the parameter, e.g. its stage) where the
    cache rule allows (:func:`~vheat_mm.policy.caches_weight_derived`: in the deploy form). At
    its own size it is used as it is (not cached: a buffer aliasing a parameter would break
    ``torch.export``).
    """
    kw = dict(device=device, dtype=freq_embed.dtype)
    if not caches_weight_derived(deploy) or has_size(freq_embed, (height, width)):
        resized = resize_freq_embed(freq_embed, (height, width))
    else:
        resized = cache.get(f'{key}_{height}x{width}',
                            lambda: resize_freq_embed(freq_embed, (height, width)), **kw)
    basis_h = cache.get(f'dct{height}', lambda: dct_basis(height), **kw)
    basis_w = cache.get(f'dct{width}', lambda: dct_basis(width), **kw)
    if batch is None:
        bases = basis_h, basis_w, *inverse_bases(basis_h, basis_w)
    else:
        bases = broadcast_bases(basis_h, basis_w, batch)
    log_decay = cache.get(f'log_decay{height}x{width}',
                          lambda: heat_log_decay_map(height, width).view(-1, 1), **kw)
    return HeatContext(*bases, log_decay, resized.flatten(0, 1), deploy, cache)


class HeatConductionOperator(nn.Module):
    """HCO: dwconv -> linear to [u, z]; u <- IDCT(DCT(u) * decay^k); out_linear(LN(u) * SiLU(z)).

    k = ReLU(Linear(freq_embed)) is the learned per-frequency, per-channel conductivity.
    The attenuation decay^k is computed on every forward from the weights (training and
    evaluation alike); in the deploy form (``ctx.deploy``) it is folded per feature size into
    the model's cache, under ``cache_key`` (module docstring), until ``switch_to_deploy()``
    folds it again.

    Under ``torch.autocast`` the attenuation (k and decay^k) is computed in float32 (k from a
    bfloat16 linear puts decay^k off at high frequencies: tests/test_precision.py), the DCT and
    IDCT matmuls in the autocast dtype, and the attenuation is applied to the spectrum in its
    dtype (:func:`~vheat_mm.models.heat.attenuate`); set ``float32_transforms = True`` (on the
    class or an instance) to run the whole heat conduction in float32 (see
    :func:`~vheat_mm.models.heat.heat_conduction`).

    A symbolic trace (``torch.fx``) records the operator as one node
    (:func:`~vheat_mm.models.layers.traced_as_one_node`). TorchScript is refused
    (:meth:`__prepare_scriptable__`).
    """

    float32_transforms: bool = False

    def __init__(self, dim: int, *, cache_key: str):
        super().__init__()
        self.cache_key = cache_key
        self.dwconv = DepthwiseConv3x3(dim)
        self.linear = SplitPointwiseLinear(dim, 2 * dim, chunks=2)  # -> u, z
        self.out_norm = GatedLayerNorm(dim)
        self.out_linear = PointwiseLinear(dim, dim)
        self.to_k = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())

    def attenuation(self, ctx: HeatContext) -> Tensor:
        """decay ** k, shape (H, W, C): folded per feature size into ``ctx.cache`` in the
        deploy form, computed anew otherwise (:func:`~vheat_mm.policy.caches_weight_derived`)."""
        return self._attenuation(ctx).view(ctx.basis_h.shape[-1], ctx.basis_w.shape[-1], -1)

    def _attenuation(self, ctx: HeatContext) -> Tensor:
        """:meth:`attenuation` as rows (H*W, C), one per frequency (n, m), as the forward
        applies it."""
        if not caches_weight_derived(ctx.deploy):
            return self._decay_pow_k(ctx)
        # unpacked, not ctx.cache: torch 2.1's compiler cannot read a module as an attribute
        # of a tuple made while it traces
        basis_h, basis_w, _, _, log_decay, _, _, cache = ctx
        h, w = basis_h.shape[-1], basis_w.shape[-1]
        return cache.get(f'{self.cache_key}_{h}x{w}', lambda: self._decay_pow_k(ctx),
                         device=log_decay.device, dtype=log_decay.dtype)

    def _decay_pow_k(self, ctx: HeatContext) -> Tensor:
        """decay ** k = exp(k * log decay) as rows (H*W, C), in float32 under autocast."""
        return float32_under_autocast(
            lambda log_decay, embed: torch.exp(self.to_k(embed) * log_decay),
            ctx.log_decay, ctx.freq_embed)

    def __prepare_scriptable__(self):
        """Refuse ``torch.jit.script`` (of any model holding the operator) with a RuntimeError
        that names the alternatives."""
        raise RuntimeError(
            'vHeat cannot be compiled with TorchScript (torch.jit.script): the heat conduction '
            'operator keeps caches per feature size and chooses its kernels in Python. Use '
            'torch.export.export (or torch.onnx.export(..., dynamo=True)) for a graph, or '
            'torch.compile')

    @traced_as_one_node
    def forward(self, x: Tensor, ctx: HeatContext) -> Tensor:
        u, z = self.linear(self.dwconv(x))
        u = heat_conduction(u, ctx.basis_h, ctx.basis_w, self._attenuation(ctx),
                            inverse=(ctx.inverse_h, ctx.inverse_w),
                            float32=self.float32_transforms)
        return self.out_linear(self.out_norm(u, z))
