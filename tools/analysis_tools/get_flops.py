"""FLOPs and parameters of a vheat_mm model (mmpretrain, mmdet or mmseg config).

    python tools/analysis_tools/get_flops.py CONFIG [--shape H W | --shape S]
        [--cfg-options k=v ...]

The toolbox is the config's ``default_scope``; the model and its input follow that toolbox's
own ``get_flops.py`` (its :class:`~vheat_mm.mm.toolbox.ToolboxProfile`: ``flops_shape``,
``data_sample``, ``flops_without``), on one image of the given size (H, W):

* mmpretrain (default 224x224): backbone, neck and head (``forward`` in 'tensor' mode) on a
  (1, 3, H, W) tensor;
* mmdet (default 800x1280, the paper's 1280x800): a (3, H, W) image and its data sample through
  the data preprocessor (padding to its size divisor), then ``forward`` in 'tensor' mode: backbone,
  neck, RPN, and the RoI heads on the RPN's proposals;
* mmseg (default 512x2048): as mmdet, without the auxiliary head (as mmseg's tool), ``forward``
  in 'tensor' mode: backbone and decode head.

The vHeat backbone is switched to its deployed form first (decay**k folded, as the paper counts
its ImageNet figures). ``--no-deploy`` counts the model as trained instead, with
k = ReLU(Linear(freq_embed)) computed in every forward: that is how the official code counted its
detection and segmentation figures.
Counting is :mod:`vheat_mm.mm.flops`: mmengine's FlopAnalyzer, one multiply-add per FLOP, with a
correct handle for the broadcasted matmuls of the HCO's DCTs.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any, NamedTuple, Sequence

import torch
from mmengine.analysis import parameter_count
from mmengine.config import Config, DictAction
from mmengine.registry import DefaultScope
from torch import Tensor, nn

import vheat_mm.mm  # noqa: F401  registers vHeat
from vheat_mm.checkpoint import CheckpointError
from vheat_mm.mm import tool_config
from vheat_mm.mm.cpu_launch import replace_sync_bn
from vheat_mm.mm.flops import flop_analyzer
from vheat_mm.mm.toolbox import TOOLBOX_PROFILES, import_object, registry
from vheat_mm.models import switch_to_deploy


class Complexity(NamedTuple):
    """What :func:`get_flops` measured."""
    toolbox: str
    input_shape: tuple[int, int]   # (H, W) of the tensor the model saw (after padding)
    flops: int                     # multiply-adds
    params: int
    by_operator: Counter           # FLOPs per op type ('conv', 'linear', 'matmul', ...)
    skipped_ops: Counter           # ops met in the trace without a handle (counted as 0)
    deployed: bool                 # decay**k folded (True) or computed in the forward


def parse_shape(shape: Sequence[int] | None, toolbox: str) -> tuple[int, int]:
    """``[S]`` -> (S, S), ``[H, W]`` -> (H, W), None -> the toolbox's default."""
    if shape is None:
        return TOOLBOX_PROFILES[toolbox].flops_shape
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    raise tool_config.ToolConfigError(f'--shape takes one size S or two, H W; got {list(shape)}')


def build_model(cfg: Config, toolbox: str, *, deploy: bool = True) -> nn.Module:
    """The config's model, from the toolbox's registry, in eval mode (and deployed form)."""
    replace_sync_bn(cfg)
    model = registry(toolbox).MODELS.build(cfg.model)
    for head in TOOLBOX_PROFILES[toolbox].flops_without:  # not part of inference
        if getattr(model, head, None) is not None:
            setattr(model, head, None)
    model.eval()
    if deploy and switch_to_deploy(model) == 0:
        raise tool_config.ToolConfigError('the model has no vHeat network to switch to its '
                                          'deployed form')
    return model


def make_inputs(model: nn.Module, toolbox: str, shape: tuple[int, int]) -> tuple[Tensor, Any]:
    """The input batch (1, 3, H', W') and data samples (None for mmpretrain) for ``shape``.

    mmdet and mmseg pass one random image and its data sample through the model's data
    preprocessor, which normalises and pads it (H', W' are the padded size).
    """
    generator = torch.Generator().manual_seed(0)
    data_sample = TOOLBOX_PROFILES[toolbox].data_sample
    if data_sample is None:
        return torch.randn(1, 3, *shape, generator=generator), None
    sample = import_object(data_sample)(
        metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape, scale_factor=(1., 1.)))
    image = torch.randint(0, 256, (3, *shape), dtype=torch.uint8, generator=generator)
    data = model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), False)
    return data['inputs'], data['data_samples']


class TensorMode(nn.Module):
    """``model(inputs, data_samples, mode='tensor')`` as a module of one input, to be traced."""

    def __init__(self, model: nn.Module, data_samples: Any):
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs: Tensor) -> Any:
        return self.model(inputs, self.data_samples, mode='tensor')


def count(model: nn.Module, inputs: Tensor, data_samples: Any, *,
          deployed: bool = True) -> tuple[int, Counter, Counter]:
    """Total FLOPs, FLOPs per operator and skipped ops of ``model`` in 'tensor' mode.

    Deployed: one forward of the backbone first folds decay**k at this input's feature sizes
    (done once per size), so the trace holds only what inference repeats. Not deployed: traced
    with gradients enabled, so that k is computed in the forward, as in training.
    """
    with torch.set_grad_enabled(not deployed):
        if deployed:
            model.backbone(inputs)
        analyzer = flop_analyzer(TensorMode(model, data_samples), (inputs,))
        return analyzer.total(), analyzer.by_operator(), analyzer.unsupported_ops()


def get_flops(config: str, shape: Sequence[int] | None = None,
              cfg_options: dict | None = None, *, deploy: bool = True) -> Complexity:
    """FLOPs and parameters of ``config``'s (deployed) model on one image of ``shape`` (H, W)."""
    cfg, toolbox = tool_config.load_config(config, work_dir=None, cfg_options=cfg_options,
                                           launcher='none')
    size = parse_shape(shape, toolbox)
    with DefaultScope.overwrite_default_scope(toolbox):  # leaves no global scope behind
        model = build_model(cfg, toolbox, deploy=deploy)
        inputs, data_samples = make_inputs(model, toolbox, size)
        flops, by_operator, skipped = count(model, inputs, data_samples, deployed=deploy)
    return Complexity(toolbox, tuple(inputs.shape[-2:]), flops, parameter_count(model)[''],
                      by_operator, skipped, deploy)


def report(result: Complexity) -> str:
    """The printed summary; its ``Flops:`` and ``Params:`` lines are those of the toolboxes."""
    ops = ', '.join(f'{op} {n / 1e9:.2f}G' for op, n in result.by_operator.most_common())
    skipped = ', '.join(sorted(result.skipped_ops)) or 'none'
    line = '=' * 30
    return (f'{line}\nToolbox: {result.toolbox}\nInput shape: {result.input_shape}\n'
            f'Flops: {result.flops / 1e9:.2f}G\nParams: {result.params / 1e6:.2f}M\n'
            f'By operator: {ops}\n'
            f'Not counted (no FLOP handle): {skipped}\n{line}\n'
            'One multiply-add = one FLOP (mmengine/fvcore); '
            + ('deployed vHeat (decay**k folded).' if result.deployed else
               'vHeat as trained (k = ReLU(Linear(freq_embed)) counted), not deployed.'))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='FLOPs and parameters of a vheat_mm model')
    parser.add_argument('config', help='config file path')
    defaults = ', '.join(f'{toolbox} {profile.flops_shape[0]} {profile.flops_shape[1]}'
                         for toolbox, profile in TOOLBOX_PROFILES.items())
    parser.add_argument('--shape', type=int, nargs='+',
                        help=f'input size: S or H W (default: {defaults})')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (lists as key="[a,b]")')
    parser.add_argument('--no-deploy', action='store_true',
                        help='count vHeat as trained, computing k = ReLU(Linear(freq_embed)) in '
                             'the forward (how the official detection/segmentation FLOPs were '
                             'counted)')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        result = get_flops(args.config, args.shape, args.cfg_options, deploy=not args.no_deploy)
    except (tool_config.ToolConfigError, CheckpointError) as err:
        sys.exit(f'get_flops.py: error: {err}')
    print(report(result))


if __name__ == '__main__':
    main()
