"""``RawAndEMAHook``: mmengine's ``EMAHook`` that validates the raw weights and the EMA both.

mmengine's ``EMAHook`` swaps the EMA into the model for the whole validation, so only the EMA
is ever scored. The official vHeat training scores both every epoch and keeps the best
checkpoint of each (``ckpt_epoch_best.pth``, ``ckpt_epoch_ema_best.pth``). Here the
validation loop scores the raw weights under the metrics' own names and this hook then scores
the EMA over the same data, under ``ema/<name>``; a ``CheckpointHook`` with
``save_best=['accuracy/top1', 'ema/accuracy/top1']`` keeps the best of each.
"""
from __future__ import annotations

import torch
from mmengine.hooks import CheckpointHook, EMAHook
from mmengine.runner.amp import autocast

__all__ = ['RawAndEMAHook']


class RawAndEMAHook(EMAHook):
    """``EMAHook`` (same arguments) whose validation scores the raw weights, then the EMA.

    The EMA's metrics join the epoch's metrics as ``{prefix}<name>`` before any other hook
    reads them (the hook runs first), so they are logged and can name a best checkpoint.
    Checkpoints hold both weight sets, as ``EMAHook`` writes them: ``state_dict`` the EMA,
    ``ema_state_dict`` the raw weights, except the raw metric's best checkpoint, whose
    ``state_dict`` holds the raw weights that scored best (``tools/test.py`` evaluates
    ``state_dict``). The raw metrics must come before the EMA's in ``save_best``.
    """

    priority = 'HIGHEST'

    def __init__(self, *, prefix: str = 'ema/', **kwargs):
        super().__init__(**kwargs)
        if not prefix:
            raise ValueError(f'prefix must name the EMA metrics apart, got {prefix!r}')
        self.prefix = prefix
        self._raw_best_pending = False

    def before_train(self, runner) -> None:
        super().before_train(runner)
        keys = self._best_keys(runner)
        ema = [i for i, key in enumerate(keys) if key.startswith(self.prefix)]
        raw = [i for i, key in enumerate(keys) if not key.startswith(self.prefix)]
        if ema and raw and max(raw) > min(ema):
            raise ValueError(f'save_best must list the raw metrics before the EMA ones '
                             f'({self.prefix}...), got {keys}')

    def before_val_epoch(self, runner) -> None:
        """The loop scores the raw weights: nothing is swapped."""

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        """Score the EMA over the validation data; add its metrics under ``prefix``."""
        if metrics is None:
            return
        self._raw_best_pending = self._raw_best_improves(runner, metrics)
        self._swap_ema_parameters()
        try:
            ema_metrics = self._evaluate(runner)
        finally:
            self._swap_ema_parameters()
        metrics.update({f'{self.prefix}{key}': value for key, value in ema_metrics.items()})

    def after_val(self, runner) -> None:
        self._raw_best_pending = False

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """As ``EMAHook``; the raw best checkpoint (the first one saved in a validation that
        improved a raw best) keeps the raw weights in ``state_dict``."""
        super().before_save_checkpoint(runner, checkpoint)
        if self._raw_best_pending:
            self._swap_ema_state_dict(checkpoint)
            self._raw_best_pending = False

    @torch.no_grad()
    def _evaluate(self, runner) -> dict:
        """The validation loop's steps (without its hooks) over its data with the weights now
        in the model."""
        loop = runner.val_loop
        runner.model.eval()
        for data_batch in loop.dataloader:
            with autocast(enabled=getattr(loop, 'fp16', False)):
                outputs = runner.model.val_step(data_batch)
            loop.evaluator.process(data_samples=outputs, data_batch=data_batch)
        return loop.evaluator.evaluate(len(loop.dataloader.dataset))

    @staticmethod
    def _checkpoint_hook(runner) -> CheckpointHook | None:
        return next((hook for hook in runner.hooks
                     if isinstance(hook, CheckpointHook) and hook.save_best), None)

    def _best_keys(self, runner) -> list[str]:
        hook = self._checkpoint_hook(runner)
        return [] if hook is None else list(hook.key_indicators)

    def _raw_best_improves(self, runner, metrics: dict) -> bool:
        """Whether the ``CheckpointHook`` will save a new best of a raw metric now (it records
        its best scores in the message hub, as ``best_score_<key>`` for several keys)."""
        hook = self._checkpoint_hook(runner)
        if hook is None:
            return False
        keys = list(hook.key_indicators)
        for key in keys:
            if key.startswith(self.prefix) or metrics.get(key) is None:
                continue
            best = runner.message_hub.get_info('best_score' if len(keys) == 1
                                               else f'best_score_{key}')
            if best is None or hook.is_better_than[key](metrics[key], best):
                return True
        return False
