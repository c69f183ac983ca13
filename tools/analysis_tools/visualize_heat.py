"""Pictures of heat conduction in vHeat: receptive field, learned attenuation, a point source.

Writes three PNGs into ``--out-dir``:

- ``erf.png``: the effective receptive field, as in the paper's figure: the gradient of the
  central output position of a stage (summed over its channels) with respect to the input
  image, its absolute value summed over the colour channels and averaged over real photographs
  (those scikit-image bundles), for vHeat and for Swin of the same size (timm's, with the same
  weights state: random unless ``--swin-weights``), side by side;
- ``decay.png``: the learned attenuation decay ** k of each stage (its first block) at the
  model's own resolution, as a frequency map (row n, column m): averaged over the channels and
  for three channels;
- ``point_source.png``: heat spreading from a point source through the HCO's transform pair,
  IDCT(DCT(u) * decay ** k), at several conductivities k: the physical picture behind the
  operator.

Each picture's title names the weights that made it: random initialisation, or the checkpoint
given with ``--weights`` (any layout ``load_pretrained`` reads: the official release, an
mmengine checkpoint of a detector, segmentor or classifier).

    python tools/analysis_tools/visualize_heat.py --arch tiny --out-dir work_dirs/heat
    python tools/analysis_tools/visualize_heat.py --config configs/demo/mask-rcnn_vheat-t_fpn_shapes.py \\
        --weights work_dirs/shapes_demo/iter_560.pth --out-dir work_dirs/heat
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarking's timm Swin

from vheat_mm.checkpoint import CheckpointError, load_pretrained, strict_loading
from vheat_mm.models import VHeatFeatures
from vheat_mm.models.heat import dct_basis, heat_conduction, heat_decay_map

PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'camera', 'cat')
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def photographs(names: list[str], size: int) -> list[torch.Tensor]:
    """The named scikit-image photographs, RGB, resized to size x size and normalized."""
    import skimage.data
    images = []
    for name in names:
        image = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        tensor = torch.from_numpy(image[..., :3]).permute(2, 0, 1)[None]
        tensor = F.interpolate(tensor, size=(size, size), mode='bilinear', align_corners=False)
        images.append((tensor[0] - MEAN) / STD)
    return images


def progress(items, label: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=label, unit='image')


def build_vheat(args) -> tuple[VHeatFeatures, str]:
    """The backbone to draw, and the words that name its weights."""
    if args.config:
        from mmengine.config import Config
        from mmengine.registry import DefaultScope
        from vheat_mm.mm.tool_config import select_toolbox  # imports vheat_mm: registers vHeat
        from vheat_mm.mm.toolbox import registry
        cfg = Config.fromfile(args.config)
        scope = select_toolbox(cfg)
        backbone_cfg = dict(cfg.model.backbone)
        backbone_cfg.pop('init_cfg', None)
        backbone_cfg.pop('pretrained', None)
        with DefaultScope.overwrite_default_scope(scope):
            model = registry(scope).MODELS.build(backbone_cfg)
        name = Path(args.config).stem
    else:
        arch = json.loads(args.arch) if args.arch.startswith('{') else args.arch
        model = VHeatFeatures(arch, img_size=args.size)
        name = f'vHeat-{args.arch}'
    if args.weights:
        # a detector's or segmentor's backbone. part too; a picture titled with a checkpoint
        # that fits badly would show a mostly random model: refused (strict loading)
        with strict_loading():
            load_pretrained(model, args.weights)
        return model.eval(), f'{name}, weights {Path(args.weights).name}'
    return model.eval(), f'{name}, random initialisation'


def build_swin(model: VHeatFeatures, size: int):
    """timm's Swin of ``model``'s widths and depths (the benchmark's), features only; None
    without timm or where timm has no such Swin."""
    from benchmarking.competitors import Unavailable, timm_swin
    try:
        return timm_swin(model.arch, size, size, features_only=True).eval()
    except (ImportError, Unavailable):
        return None


def effective_receptive_field(forward, images: list[torch.Tensor], label: str) -> np.ndarray:
    """Mean over images of |d out[center] / d input| summed over colours, normalized to max 1."""
    total = None
    for image in progress(images, label):
        x = image[None].clone().requires_grad_(True)
        out = forward(x)
        h, w = out.shape[-2:]
        out[..., h // 2, w // 2].sum().backward()
        grad = x.grad[0].abs().sum(0)
        total = grad if total is None else total + grad
    field = (total / len(images)).numpy()
    return field / max(field.max(), 1e-12)


def draw_erf(model, swin, images, stage: int, title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fields = {'vHeat': effective_receptive_field(
        lambda x: model.forward_stages(x)[stage].permute(0, 3, 1, 2), images, 'vHeat ERF')}
    if swin is not None:
        fields['Swin'] = effective_receptive_field(
            lambda x: swin(x)[stage].permute(0, 3, 1, 2), images, 'Swin ERF')
    fig, axes = plt.subplots(1, len(fields), figsize=(4.2 * len(fields), 4.4), squeeze=False)
    for ax, (name, field) in zip(axes[0], fields.items()):
        ax.imshow(np.log10(field + 1e-4), cmap='RdYlGn_r', vmin=-4, vmax=0)
        share = (field > 0.01).mean()
        ax.set_title(f'{name}, stage {stage + 1}: {100 * share:.0f}% of pixels above 1%')
        ax.axis('off')
    fig.suptitle(f'Effective receptive field (log10 of the normalized gradient), mean over '
                 f'{len(images)} photographs\n{title}', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


@torch.no_grad()
def draw_decay(model, title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    stages = len(model.layers)
    fig, axes = plt.subplots(stages, 4, figsize=(12, 3 * stages), squeeze=False)
    for i, stage in enumerate(model.layers):
        size = model.freq_embed[i].shape[:2]
        ctx = model.heat_context(i, size[0], size[1], model.freq_embed[i])
        attenuation = stage[0].op.attenuation(ctx).float()  # (H, W, C)
        channels = attenuation.shape[-1]
        picks = [('mean over channels', attenuation.mean(-1))] + [
            (f'channel {c}', attenuation[..., c]) for c in (0, channels // 3, 2 * channels // 3)]
        for col, (ax, (label, values)) in enumerate(zip(axes[i], picks)):
            image = ax.imshow(values.numpy(), cmap='magma', vmin=0, vmax=1)
            ax.set_title(f'stage {i + 1}, {label}', fontsize=9)
            if i == stages - 1:
                ax.set_xlabel('m (horizontal frequency)', fontsize=8)
            if col == 0:
                ax.set_ylabel('n (vertical frequency)', fontsize=8)
    fig.suptitle(f'Learned attenuation decay ** k of the first block of each stage\n{title}',
                 fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.86, top=0.92, bottom=0.05, hspace=0.35, wspace=0.25)
    fig.colorbar(image, cax=fig.add_axes((0.89, 0.3, 0.015, 0.4)))
    fig.savefig(path, dpi=90)
    plt.close(fig)


@torch.no_grad()
def draw_point_source(path: Path, size: int = 56,
                      conductivities: tuple[float, ...] = (0.5, 2.0, 8.0, 32.0)) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    u = torch.zeros(1, size, size, 1)
    u[0, size // 2, size // 3, 0] = 1.0
    basis = dct_basis(size)
    decay = heat_decay_map(size, size)[..., None]
    fig, axes = plt.subplots(1, len(conductivities) + 1, figsize=(3.2 * (len(conductivities) + 1), 3.6))
    axes[0].imshow(u[0, ..., 0].numpy(), cmap='inferno')
    axes[0].set_title('point source u', fontsize=9)
    for ax, k in zip(axes[1:], conductivities):
        spread = heat_conduction(u, basis, basis, decay ** k)[0, ..., 0]
        ax.imshow(spread.numpy(), cmap='inferno')
        ax.set_title(f'IDCT(DCT(u) * decay ** {k:g})\nsum {spread.sum():.3f}', fontsize=9)
    for ax in axes:
        ax.axis('off')
    fig.suptitle(f'Heat spreading from a point source on a {size}x{size} plate with insulated '
                 f'borders (the HCO with a uniform conductivity k)', fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('--arch', default='tiny', help='tiny, small, base or an arch dict as JSON')
    parser.add_argument('--config', help='an mmdet/mmseg/mmpretrain config with a vHeat backbone')
    parser.add_argument('--weights', help='a checkpoint for the vHeat backbone')
    parser.add_argument('--size', type=int, default=224, help='input size of the ERF (square)')
    parser.add_argument('--stage', type=int, default=3, help='stage of the ERF (1 to 4)')
    parser.add_argument('--images', type=int, default=4, help='photographs for the ERF')
    parser.add_argument('--no-swin', action='store_true', help='draw the ERF of vHeat alone')
    parser.add_argument('--out-dir', type=Path, default=Path('work_dirs/heat'))
    args = parser.parse_args(argv)
    if not 1 <= args.images <= len(PHOTOS):
        parser.error(f'--images must be in [1, {len(PHOTOS)}] (bundled photographs: {PHOTOS})')
    torch.manual_seed(0)
    try:
        model, title = build_vheat(args)
    except (CheckpointError, FileNotFoundError) as err:
        parser.exit(1, f'{parser.prog}: error: {err}\n')
    if not 1 <= args.stage <= len(model.layers):
        parser.error(f'--stage must be in [1, {len(model.layers)}], got {args.stage}')
    swin = None if args.no_swin else build_swin(model, args.size)
    if swin is None and not args.no_swin:
        print('no Swin of this size and arch in timm here: the ERF shows vHeat alone')
    args.out_dir.mkdir(parents=True, exist_ok=True)
    images = photographs(list(PHOTOS[:args.images]), args.size)
    draw_erf(model, swin, images, args.stage - 1, title, args.out_dir / 'erf.png')
    draw_decay(model, title, args.out_dir / 'decay.png')
    draw_point_source(args.out_dir / 'point_source.png')
    for name in ('erf.png', 'decay.png', 'point_source.png'):
        print(f'wrote {args.out_dir / name}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
