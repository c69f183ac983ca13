"""Checkpoint files as their writers lay them out, for the tests of reading them.

- :func:`write_official_training_checkpoint`: the entries and types the official training code's
  ``save_checkpoint_ema`` writes, its yacs ``CfgNode`` config included (needs yacs).
- :func:`write_runner_checkpoint`: the file a (tiny) mmengine ``Runner`` writes after two
  iterations: meta, state dict, optimizer, parameter scheduler and the message hub's
  ``HistoryBuffer`` logs (needs mmengine).
- :func:`write_pickle_archive`: torch.save's zip layout around a pickle written by hand.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

__all__ = ['rewrite_pickle', 'write_official_training_checkpoint', 'write_pickle_archive',
           'write_runner_checkpoint']


def write_official_training_checkpoint(path: Path, state_dict: dict) -> None:
    """``save_checkpoint_ema``'s entries: ``state_dict`` as ``model_ema``, moved weights as
    ``model``, an AdamW state, a learning-rate schedule, a GradScaler, and a frozen yacs config
    of nested nodes."""
    from yacs.config import CfgNode

    model = {k: v + 0.5 if v.is_floating_point() else v for k, v in state_dict.items()}
    weights = [nn.Parameter(v.clone()) for v in model.values() if v.is_floating_point()]
    optimizer = torch.optim.AdamW(weights, lr=5e-4)
    sum(w.sum() for w in weights).backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=300)
    config = CfgNode(dict(MODEL=CfgNode(dict(TYPE='vHeat', NAME='vheat_mini')),
                          TRAIN=CfgNode(dict(EPOCHS=300, BASE_LR=5e-4, BETAS=(0.9, 0.999))),
                          AMP_ENABLE=True, TAG=None))
    config.freeze()
    torch.save(dict(model=model, optimizer=optimizer.state_dict(),
                    lr_scheduler=scheduler.state_dict(), max_accuracy=82.0,
                    scaler={'scale': 65536.0, 'growth_factor': 2.0, '_growth_tracker': 0},
                    epoch=299, config=config, model_ema=dict(state_dict),
                    max_accuray_ema=82.2), path)


def _regressor() -> nn.Module:
    """The smallest model an mmengine Runner trains: ``y = w x + b``, mean squared error."""
    from mmengine.model import BaseModel

    class Regressor(BaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(2, 1)

        def forward(self, inputs, targets=None, mode='tensor'):
            out = self.linear(inputs)
            return {'loss': ((out - targets) ** 2).mean()} if mode == 'loss' else out

    return Regressor()


def write_runner_checkpoint(work_dir: Path) -> Path:
    """Train :func:`_regressor` two iterations with an mmengine ``Runner`` whose CheckpointHook
    saves after the second; returns the file it wrote."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    generator = torch.Generator().manual_seed(0)
    data = [(torch.randn(2, generator=generator), torch.randn(1, generator=generator))
            for _ in range(8)]
    scopes = dict(DefaultScope._instance_dict)  # the runner sets mmengine's default scope
    try:
        runner = Runner(
            model=_regressor(), work_dir=str(work_dir), experiment_name=f'runner_{id(work_dir)}',
            train_dataloader=torch.utils.data.DataLoader(data, batch_size=4),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
            param_scheduler=dict(type='LinearLR', start_factor=0.5, by_epoch=False, end=2),
            train_cfg=dict(by_epoch=False, max_iters=2), log_level='WARNING',
            default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2,
                                               by_epoch=False)))
        runner.train()
    finally:
        DefaultScope._instance_dict.clear()
        DefaultScope._instance_dict.update(scopes)
    return work_dir / 'iter_2.pth'


def write_pickle_archive(path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None
                         ) -> None:
    """A zip archive as torch.save lays it out, whose pickle is ``data_pkl`` (and whose tensor
    records, ``data/<key>``, are ``records``)."""
    prefix = path.stem
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as archive:
        archive.writestr(f'{prefix}/data.pkl', data_pkl)
        archive.writestr(f'{prefix}/byteorder', 'little')
        for name, data in (records or {}).items():
            archive.writestr(f'{prefix}/data/{name}', data)
        archive.writestr(f'{prefix}/version', '3\n')


def rewrite_pickle(path: Path, change: Callable[[bytes], bytes]) -> None:
    """Replace the pickle of the torch.save archive ``path`` by ``change(pickle)``, keeping its
    tensor records."""
    with zipfile.ZipFile(path) as archive:
        records = {info.filename: archive.read(info) for info in archive.infolist()}
    data_pkl = next(data for name, data in records.items() if name.endswith('/data.pkl'))
    tensors = {name.rpartition('/data/')[2]: data for name, data in records.items()
               if '/data/' in name}
    write_pickle_archive(path, change(data_pkl), tensors)

