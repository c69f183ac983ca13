"""Throughput and peak memory of vHeat (vheat_mm) against Swin and the official vHeat code.

Every model runs in this one process; for each case the models are timed in interleaved rounds
(the order rotates each round) after a warm-up, and the median over the rounds is reported, with
vheat_mm's ratio to each other model.

Usage (the commands behind the README's tables):

    # CPU (mmpretrain's and mmdet's Swin)
    python tools/analysis_tools/benchmark.py --arch tiny \\
        --cases classifier:deploy:224:16 classifier:deploy:224:1 classifier:deploy:512:1 \\
                classifier:deploy:1024:1 backbone:eval:512x512:1 backbone:eval:800x1344:1 \\
        --official /path/to/vHeat-checkout --official-deps /path/with/timm+einops \\
        --threads 2 --rounds 5 --warmup 1 --round-seconds 3 --out-dir work_dirs/benchmark

    # GPU (needs only torch, timm and einops; Swin from timm)
    python tools/analysis_tools/benchmark.py --device cuda --cases \\
        classifier:deploy:224:128:f32 classifier:deploy:224:128:bf16 \\
        classifier:train:224:128:bf16 classifier:deploy:224:128:bf16:compile ...

A case is PART:MODE:SIZE:BATCH, then any of these options, colon-separated:

- an arch (``tiny``, ``small``, ``base`` or their initials; default ``--arch``);
- a precision: ``f32``, or ``bf16`` / ``fp16`` for every model under the same
  ``torch.autocast`` (default ``--amp``);
- ``compile``: every model through ``torch.compile`` (default mode) after its set-up;
- ``models=NAME,NAME``: only these of the models compared.

PART is ``classifier`` (the ImageNet model, logits) or ``backbone`` (the mmdet/mmseg feature
backbone: four NCHW maps; img_size 512 as in the detection configs). MODE is ``deploy``
(vheat_mm: ``switch_to_deploy()``; official: ``infer_mode`` with ``infer_init()``; Swin has no
deploy form and runs in eval), ``eval``, or ``train``: one training step (forward, loss,
backward, AdamW step; cross-entropy on random labels for classifiers, the mean of each map for
backbones). SIZE is S or HxW.

Models: ``vheat_mm``; ``swin`` with vHeat's stage widths and depths (``--swin``: mmpretrain's
classifier and mmdet's backbone, or timm's ``swin_{tiny,small,base}_patch4_window7_224`` with
``img_size`` set; ``auto`` takes the OpenMMLab ones where they are installed, else timm);
``official`` (classification/models/vHeat.py and detection/model.py loaded from ``--official``,
a checkout of github MzeroMiko/vHeat; they need timm and einops, which ``--official-deps`` may
point to; the detection backbone also needs mmdet). The official code is only imported from that
checkout, never copied here. A model that cannot run a case is reported as skipped, with why.

Timing: on CUDA with CUDA events around each round, on the CPU with the wall clock. Peak
memory: on CUDA ``torch.cuda.max_memory_allocated`` during one forward or training step, above
what was allocated before it (for a training step: after a warm-up step, so with the optimizer's
state and without gradients: activations, gradients and temporaries); on the CPU the peak
resident set size above the level before, sampled every millisecond after returning freed memory
to the system (glibc ``malloc_trim``), an estimate that includes the allocator's slack. Writes
``benchmark.json``, ``benchmark.md`` and (with matplotlib) ``benchmark.png``.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import json
import os
import platform
import statistics
import sys
import threading
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PARTS = ('classifier', 'backbone')
MODES = ('deploy', 'eval', 'train')
MODELS = ('vheat_mm', 'official', 'swin')
PRECISIONS = {'f32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
BACKBONE_IMG_SIZE = 512  # img_size of the detection and segmentation configs
SWIN_HEADS = {96: (3, 6, 12, 24), 128: (4, 8, 16, 32)}
TIMM_SWIN = {'tiny': 'swin_tiny_patch4_window7_224', 'small': 'swin_small_patch4_window7_224',
             'base': 'swin_base_patch4_window7_224'}
SWIN_WINDOW = 7


class Unavailable(Exception):
    """A model cannot run a case here (missing package, unsupported size or mode)."""


@dataclass(frozen=True)
class Case:
    part: str
    mode: str
    height: int
    width: int
    batch: int
    arch: str = 'tiny'
    precision: str = 'f32'
    compile: bool = False
    models: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, text: str, *, arch: str = 'tiny', precision: str = 'f32') -> Case:
        fields = text.split(':')
        try:
            part, mode, size, batch = fields[:4]
            height, _, width = size.partition('x')
            height, width, batch = int(height), int(width or height), int(batch)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f'a case is PART:MODE:SIZE:BATCH[:OPTION...], e.g. classifier:deploy:224:16 or '
                f'classifier:train:224:128:small:bf16:compile, got {text!r}')
        if part not in PARTS or mode not in MODES:
            raise argparse.ArgumentTypeError(
                f'PART is one of {PARTS} and MODE one of {MODES}, got {text!r}')
        compiled, models = False, None
        for option in fields[4:]:
            if (name := arch_name(option)) is not None:
                arch = name
            elif option in PRECISIONS:
                precision = option
            elif option == 'compile':
                compiled = True
            elif option.startswith('models='):
                models = tuple(option[len('models='):].split(','))
                if not models or set(models) - set(MODELS):
                    raise argparse.ArgumentTypeError(
                        f'models= takes names among {MODELS}, got {option!r} in {text!r}')
            else:
                raise argparse.ArgumentTypeError(
                    f'unknown case option {option!r} in {text!r}; options are an arch '
                    f'({arch_names()}), a precision ({sorted(PRECISIONS)}), '
                    f"'compile' and 'models=NAME,NAME'")
        return cls(part, mode, height, width, batch, arch, precision, compiled, models)

    @property
    def name(self) -> str:
        return (f'{self.arch} {self.part} {self.mode} {self.height}x{self.width} '
                f'batch {self.batch} {self.precision}' + (' compiled' if self.compile else ''))

    @property
    def amp(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]


@dataclass
class Result:
    case: Case
    model: str
    images_per_s: list[float] = field(default_factory=list)
    peak_memory_mib: float | None = None
    skipped: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.images_per_s) if self.images_per_s else None


# ----------------------------------------------------------------------------- models
class _Classifier(nn.Module):
    """A feature backbone's last map -> global average pool -> linear (mmpretrain's Swin)."""

    def __init__(self, backbone: nn.Module, width: int, num_classes: int = 1000):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.backbone(x)[-1].mean((2, 3)))


def _arch(arch: str):
    from vheat_mm.models import resolve_arch
    return resolve_arch(arch)


# vheat_mm is imported only once the official code is (see main), hence these functions.
def arch_names() -> list[str]:
    """The vHeat archs by name (vheat_mm's ARCH_SETTINGS)."""
    from vheat_mm.models import ARCH_SETTINGS
    return sorted(ARCH_SETTINGS)


def arch_name(text: str) -> str | None:
    """The ARCH_SETTINGS name of the arch that vheat_mm's ``resolve_arch`` takes ``text`` for
    (a name or its initial), or None where it is none."""
    from vheat_mm.models import ARCH_SETTINGS, resolve_arch
    try:
        arch = resolve_arch(text)
    except ValueError:
        return None
    return next(name for name in ARCH_SETTINGS if resolve_arch(name) == arch)


def _square_size(case: Case) -> int:
    """The classifier's img_size: the input size when square (the official deploy form needs
    it), else 224."""
    return case.height if case.height == case.width else 224


def _set_mode(model: nn.Module, case: Case) -> nn.Module:
    if case.mode == 'train':
        model.train()
    else:
        model.eval()
        model.requires_grad_(False)
    return model


def build_vheat_mm(case: Case) -> nn.Module:
    from vheat_mm.models import VHeat, VHeatFeatures
    if case.part == 'classifier':
        model = VHeat(case.arch, img_size=_square_size(case))
    else:
        model = VHeatFeatures(case.arch, img_size=BACKBONE_IMG_SIZE)
    _set_mode(model, case)
    if case.mode == 'deploy':
        model.switch_to_deploy()
    return model


def _official_kwargs(arch: str) -> dict:
    a = _arch(arch)
    return dict(depths=list(a.depths), dims=list(a.dims), post_norm=a.post_norm,
                layer_scale=a.layer_scale, mlp_ratio=a.mlp_ratio, drop_path_rate=0.0)


def _official_package(name: str, folder: Path) -> None:
    """Make ``name`` a package whose modules are the files of ``folder`` (unless it is one)."""
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package


def official_classification_module(checkout: Path):
    """The official classification/models/vHeat.py, imported as ``vHeat.vHeat``.

    That is the name detection/model.py imports it by: the official repository expects its user
    to link classification/models to ``vHeat``; here the package ``vHeat`` is that folder.
    """
    _official_package('vHeat', checkout / 'classification/models')
    return importlib.import_module('vHeat.vHeat')


def official_detection_module(checkout: Path):
    """The official detection/model.py (it registers MMDET_VHEAT into mmdet on import)."""
    official_classification_module(checkout)
    _official_package('official_vheat_detection', checkout / 'detection')
    return importlib.import_module('official_vheat_detection.model')


def build_official(checkout: Path, case: Case) -> nn.Module:
    if case.part == 'classifier':
        model = official_classification_module(checkout).vHeat(
            img_size=_square_size(case), infer_mode=case.mode == 'deploy',
            **_official_kwargs(case.arch))
        _set_mode(model, case)
        if case.mode == 'deploy':
            with torch.no_grad():
                model.infer_init()
        return model
    if case.mode == 'deploy':
        raise Unavailable('the official downstream backbone has no deploy form; use eval')
    if importlib.util.find_spec('mmdet') is None:
        raise Unavailable('the official downstream backbone needs mmdet')
    model = official_detection_module(checkout).MMDET_VHEAT(img_size=BACKBONE_IMG_SIZE,
                                                            **_official_kwargs(case.arch))
    return _set_mode(model, case)


def swin_source(choice: str, case: Case) -> str:
    """'openmmlab' or 'timm', as ``--swin`` asks and what is installed allows."""
    openmmlab = importlib.util.find_spec('mmpretrain' if case.part == 'classifier' else 'mmdet')
    if choice == 'openmmlab' or (choice == 'auto' and openmmlab is not None):
        if openmmlab is None:
            raise Unavailable(f'--swin openmmlab needs '
                              f'{"mmpretrain" if case.part == "classifier" else "mmdet"}')
        return 'openmmlab'
    if importlib.util.find_spec('timm') is None:
        raise Unavailable('Swin needs mmpretrain/mmdet or timm')
    return 'timm'


def timm_swin(arch: str, height: int, width: int, **kwargs) -> nn.Module:
    """timm's Swin with the widths and depths of vHeat ``arch`` at height x width (random
    weights); :class:`Unavailable` where timm has none (other arch, or a size that does not
    tile into whole windows)."""
    import timm
    if arch not in TIMM_SWIN:
        raise Unavailable(f'no timm Swin for arch {arch!r}')
    multiple = 4 * 2 ** (len(_arch(arch).depths) - 1) * SWIN_WINDOW  # whole windows everywhere
    if height % multiple or width % multiple:
        raise Unavailable(f"timm's Swin needs sizes divisible by {multiple} (whole "
                          f'{SWIN_WINDOW}x{SWIN_WINDOW} windows at every stage)')
    return timm.create_model(TIMM_SWIN[arch], pretrained=False, img_size=(height, width),
                             drop_path_rate=0.0, **kwargs)


def build_swin(choice: str, case: Case) -> nn.Module:
    a = _arch(case.arch)
    if swin_source(choice, case) == 'timm':
        features = dict(features_only=True, out_indices=(0, 1, 2, 3))
        return _set_mode(timm_swin(case.arch, case.height, case.width,
                                   **(features if case.part == 'backbone' else {})), case)
    heads = SWIN_HEADS[a.dims[0]]
    if case.part == 'classifier':
        from mmpretrain.models import SwinTransformer
        backbone = SwinTransformer(arch=dict(embed_dims=a.dims[0], depths=tuple(a.depths),
                                             num_heads=heads),
                                   img_size=(case.height, case.width), window_size=SWIN_WINDOW,
                                   drop_path_rate=0.0, pad_small_map=True)
        model = _Classifier(backbone, a.dims[-1])
    else:
        from mmdet.models.backbones import SwinTransformer
        model = SwinTransformer(embed_dims=a.dims[0], depths=tuple(a.depths), num_heads=heads,
                                window_size=SWIN_WINDOW, drop_path_rate=0.0,
                                out_indices=(0, 1, 2, 3))
    _set_mode(model, case)  # mmdet's SwinTransformer.train() returns None: no chaining
    return model


class Autocast(nn.Module):
    """Runs the wrapped model under ``torch.autocast`` (the same for every model compared)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: Tensor):
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x)


# ----------------------------------------------------------------------------- steps
def _loss(out, labels: Tensor) -> Tensor:
    if isinstance(out, Tensor):
        return F.cross_entropy(out.float(), labels)
    return sum(o.float().mean() for o in out)


def make_step(model: nn.Module, case: Case, x: Tensor) -> Callable[[], None]:
    """One forward (inference mode) or one training step of ``model`` on ``x``."""
    if case.mode != 'train':
        def forward() -> None:
            with torch.inference_mode():
                model(x)
        return forward
    labels = torch.randint(0, 1000, (x.shape[0],), device=x.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=x.device.type == 'cuda')

    def train_step() -> None:
        _loss(model(x), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return train_step


def prepare(model: nn.Module, case: Case, x: Tensor) -> nn.Module:
    """Autocast and compile as the case asks; the deployed vheat_mm first runs once eagerly at
    this size, so that the compiled graph reads its folded tensors (see switch_to_deploy)."""
    if case.amp is not None:
        model = Autocast(model, case.amp)
    if case.compile:
        if case.mode != 'train':
            with torch.inference_mode():
                model(x)
        model = torch.compile(model)
    return model


# ----------------------------------------------------------------------------- measuring
class Timer:
    """Seconds taken by ``iters`` calls of ``step``: CUDA events on CUDA, else the wall clock."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, step: Callable[[], None], iters: int) -> float:
        if self.device.type == 'cuda':
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            for _ in range(iters):
                step()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        begin = time.perf_counter()
        for _ in range(iters):
            step()
        return time.perf_counter() - begin


def _rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _release_freed_memory(device: torch.device | None = None) -> None:
    gc.collect()
    if device is not None and device.type == 'cuda':
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except OSError:
        pass


def peak_memory_mib(step: Callable[[], None], device: torch.device) -> float:
    """Peak memory of one step above the level before it, in MiB (module docstring)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    _release_freed_memory()
    before = peak = _rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    step()
    done.set()
    sampler.join()
    peak = max(peak, _rss_bytes())
    return (peak - before) / 2**20


def run_case(case: Case, builders: dict[str, Callable[[Case], nn.Module]], *, rounds: int,
             warmup: int, round_seconds: float, device: torch.device,
             log: Callable[[str], None]) -> list[Result]:
    x = torch.randn(case.batch, 3, case.height, case.width, device=device)
    results = {name: Result(case, name) for name in builders}
    steps, iters = {}, {}
    timer = Timer(device)
    for name, build in builders.items():
        try:
            model = prepare(build(case).to(device), case, x)
        except Unavailable as why:
            results[name].skipped = str(why)
            log(f'  {name}: skipped ({why})')
            continue
        steps[name] = make_step(model, case, x)
        for _ in range(max(warmup, 1)):
            steps[name]()
        per_step = timer(steps[name], 1)
        iters[name] = max(1, round(round_seconds / per_step))
    names = list(steps)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)] if names else []
        for name in order:
            seconds = timer(steps[name], iters[name])
            results[name].images_per_s.append(iters[name] * case.batch / seconds)
        log(f'  round {r + 1}/{rounds}: ' + ', '.join(
            f'{n} {results[n].images_per_s[-1]:.2f}' for n in names) + ' images/s')
    for name in names:
        results[name].peak_memory_mib = peak_memory_mib(steps[name], device)
    steps.clear()
    _release_freed_memory(device)
    return list(results.values())


# ----------------------------------------------------------------------------- reporting
def ratio(results: list[Result], case: Case, model: str, baseline: str) -> float | None:
    by_name = {r.model: r for r in results if r.case == case and r.median}
    if model in by_name and baseline in by_name:
        return by_name[model].median / by_name[baseline].median
    return None


def markdown_table(results: list[Result], header: str) -> str:
    lines = [header, '',
             '| case | model | images/s | vheat_mm / this | peak memory (MiB) |',
             '|---|---|---|---|---|']
    for r in results:
        if r.skipped:
            lines.append(f'| {r.case.name} | {r.model} | skipped: {r.skipped} | | |')
            continue
        speedup = ratio(results, r.case, 'vheat_mm', r.model)
        lines.append(f'| {r.case.name} | {r.model} | {r.median:.2f} | '
                     f'{"" if r.model == "vheat_mm" or speedup is None else f"{speedup:.2f}x"} | '
                     f'{r.peak_memory_mib:.0f} |')
    return '\n'.join(lines) + '\n'


def plot(results: list[Result], path: Path, title: str) -> bool:
    """Images/s and peak memory against input size, per (part, mode, batch, precision)."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    measured = [r for r in results if r.median]
    groups = sorted({(r.case.arch, r.case.part, r.case.mode, r.case.batch, r.case.precision,
                      r.case.compile) for r in measured})
    if not groups:
        return False
    fig, axes = plt.subplots(2, len(groups), figsize=(4.5 * len(groups), 7), squeeze=False)
    for col, group in enumerate(groups):
        for model in MODELS:
            rows = sorted((r for r in measured if r.model == model and
                           (r.case.arch, r.case.part, r.case.mode, r.case.batch,
                            r.case.precision, r.case.compile) == group),
                          key=lambda r: r.case.height * r.case.width)
            if not rows:
                continue
            pixels = [f'{r.case.height}x{r.case.width}' for r in rows]
            axes[0][col].plot(pixels, [r.median for r in rows], marker='o', label=model)
            axes[1][col].plot(pixels, [r.peak_memory_mib for r in rows], marker='o', label=model)
        arch, part, mode, batch, precision, compiled = group
        axes[0][col].set_title(f'{arch} {part}, {mode}, batch {batch}, {precision}'
                               + (', compiled' if compiled else ''))
        axes[0][col].set_ylabel('images / s')
        axes[1][col].set_ylabel('peak memory (MiB)')
        axes[1][col].set_xlabel('input size')
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def device_description(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return (f'CPU ({platform.processor() or platform.machine()}), '
            f'{torch.get_num_threads()} threads')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('--arch', default='tiny',
                        help="vHeat arch of cases that name none: a name of vheat_mm's "
                             'ARCH_SETTINGS or its initial')
    parser.add_argument('--cases', nargs='+', required=True, metavar='PART:MODE:SIZE:BATCH')
    parser.add_argument('--models', nargs='+', choices=MODELS, default=None,
                        help='default: vheat_mm, swin, and official when --official is given')
    parser.add_argument('--official', type=Path, help='checkout of github MzeroMiko/vHeat')
    parser.add_argument('--official-deps', type=Path,
                        help='a directory to put on sys.path for the official code (timm, einops)')
    parser.add_argument('--swin', choices=('auto', 'openmmlab', 'timm'), default='auto',
                        help="Swin implementation (default: OpenMMLab's where installed, else "
                             "timm's)")
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--amp', choices=('none', *PRECISIONS), default='none',
                        help='precision of cases that name none: none or f32 (float32), or bf16 '
                             '/ fp16 autocast for every model')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2, help='steps before timing')
    parser.add_argument('--round-seconds', type=float, default=2.0,
                        help='about how long one model runs in one round')
    parser.add_argument('--out-dir', type=Path, default=Path('work_dirs/benchmark'))
    args = parser.parse_args(argv)
    models = args.models or (['vheat_mm', 'official', 'swin'] if args.official
                             else ['vheat_mm', 'swin'])
    if 'official' in models:
        if (args.official is None
                or not (args.official / 'classification/models/vHeat.py').is_file()):
            parser.error('--official must be a checkout of github MzeroMiko/vHeat '
                         '(with classification/models/vHeat.py)')
        if args.official_deps:
            sys.path.insert(0, str(args.official_deps))
        # the official detection module registers MMDET_VHEAT into mmdet; import it before
        # vheat_mm so that neither registration is refused (vheat_mm then leaves it in place)
        if (any(text.split(':', 1)[0] == 'backbone' for text in args.cases)
                and importlib.util.find_spec('mmdet')):
            official_detection_module(args.official)
    default_arch = arch_name(args.arch)
    if default_arch is None:
        parser.error(f'--arch takes one of {arch_names()} or its initial, got {args.arch!r}')
    precision = 'f32' if args.amp == 'none' else args.amp
    try:
        cases = [Case.parse(text, arch=default_arch, precision=precision)
                 for text in args.cases]
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    builders = {
        'vheat_mm': build_vheat_mm,
        'official': lambda case: build_official(args.official, case),
        'swin': lambda case: build_swin(args.swin, case),
    }
    device_name = device_description(device)
    header = (f'Device: {device_name}; torch {torch.__version__}. Median images/s over '
              f'{args.rounds} interleaved rounds; peak memory of one forward or training step '
              f'above what was allocated before it.')
    print(header, flush=True)
    results: list[Result] = []
    for case in cases:
        print(f'{case.name}:', flush=True)
        chosen = {name: builders[name] for name in models
                  if case.models is None or name in case.models}
        results += run_case(case, chosen, rounds=args.rounds, warmup=args.warmup,
                            round_seconds=args.round_seconds, device=device,
                            log=lambda line: print(line, flush=True))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results, header)
    (args.out_dir / 'benchmark.md').write_text(table)
    (args.out_dir / 'benchmark.json').write_text(json.dumps(dict(
        device=device_name, torch=torch.__version__, rounds=args.rounds,
        command=' '.join(sys.argv),
        results=[dict(asdict(r), median_images_per_s=r.median) for r in results]), indent=1))
    plotted = plot(results, args.out_dir / 'benchmark.png', f'vHeat vs Swin, {device_name}')
    print(table)
    print(f'wrote {args.out_dir}/benchmark.{{md,json{",png" if plotted else ""}}}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
