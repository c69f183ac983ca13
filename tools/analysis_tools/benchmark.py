"""Throughput and peak memory of vHeat (vheat_mm) against Swin and the official vHeat code.

Every model runs in this one process; for each case (input size and batch) the models are timed
in interleaved rounds (the order rotates each round) after a warm-up, and the median over the
rounds is reported, with its ratio to the baseline (Swin) and to the official implementation.

Usage (the command behind the README's table and plot):

    python tools/analysis_tools/benchmark.py --arch tiny \\
        --cases classifier:deploy:224:16 classifier:deploy:224:1 classifier:deploy:512:1 \\
                classifier:deploy:1024:1 backbone:eval:512x512:1 backbone:eval:800x1344:1 \\
        --official /path/to/vHeat-checkout --official-deps /path/with/timm+einops \\
        --threads 2 --rounds 5 --warmup 1 --round-seconds 3 --out-dir work_dirs/benchmark

A case is PART:MODE:SIZE:BATCH. PART is ``classifier`` (the ImageNet model, logits) or
``backbone`` (the mmdet/mmseg feature backbone: four NCHW maps; img_size 512 as in the detection
configs). MODE is ``deploy`` (vheat: ``switch_to_deploy()``, official: ``infer_mode`` with
``infer_init()``; Swin has no deploy form and runs in eval) or ``eval``. SIZE is S or HxW.

Models: ``vheat_mm``; ``swin`` (mmpretrain's SwinTransformer + pooling + linear head for
classifiers, mmdet's SwinTransformer for backbones, with vHeat's stage widths); ``official``
(classification/models/vHeat.py and detection/model.py loaded from ``--official``, a checkout
of github MzeroMiko/vHeat; they need timm and einops, which ``--official-deps`` may point to).
The official code is only imported from that checkout, never copied here.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over one forward; on the CPU the peak
resident set size above the level before that forward, sampled every millisecond after
returning freed memory to the system (glibc ``malloc_trim``), an estimate that includes
the allocator's slack. Writes ``benchmark.json``, ``benchmark.md`` and ``benchmark.png``.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import importlib.util
import json
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

PARTS = ('classifier', 'backbone')
MODES = ('deploy', 'eval')
MODELS = ('vheat_mm', 'official', 'swin')
AMP_DTYPES = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
BACKBONE_IMG_SIZE = 512  # img_size of the detection and segmentation configs
SWIN_HEADS = {96: (3, 6, 12, 24), 128: (4, 8, 16, 32)}


@dataclass(frozen=True)
class Case:
    part: str
    mode: str
    height: int
    width: int
    batch: int

    @classmethod
    def parse(cls, text: str) -> Case:
        try:
            part, mode, size, batch = text.split(':')
            height, _, width = size.partition('x')
            case = cls(part, mode, int(height), int(width or height), int(batch))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f'a case is PART:MODE:SIZE:BATCH, e.g. classifier:deploy:224:16, got {text!r}')
        if part not in PARTS or mode not in MODES:
            raise argparse.ArgumentTypeError(
                f'PART is one of {PARTS} and MODE one of {MODES}, got {text!r}')
        return case

    @property
    def name(self) -> str:
        return f'{self.part} {self.mode} {self.height}x{self.width} batch {self.batch}'


@dataclass
class Result:
    case: Case
    model: str
    images_per_s: list[float] = field(default_factory=list)
    peak_memory_mib: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.images_per_s)


# ----------------------------------------------------------------------------- models
class _Classifier(nn.Module):
    """A feature backbone's last map -> global average pool -> linear (for Swin)."""

    def __init__(self, backbone: nn.Module, width: int, num_classes: int = 1000):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.backbone(x)[-1].mean((2, 3)))


def _arch(arch: str):
    from vheat_mm.models import resolve_arch
    return resolve_arch(arch)


def build_vheat_mm(arch: str, case: Case) -> nn.Module:
    from vheat_mm.models import VHeat, VHeatFeatures
    if case.part == 'classifier':
        model = VHeat(arch, img_size=_square_size(case))
    else:
        model = VHeatFeatures(arch, img_size=BACKBONE_IMG_SIZE)
    model.eval()
    if case.mode == 'deploy':
        model.switch_to_deploy()
    return model


def _square_size(case: Case) -> int:
    """The classifier's img_size: the input size when square (the official deploy form needs
    it), else 224."""
    return case.height if case.height == case.width else 224


def _official_kwargs(arch: str) -> dict:
    a = _arch(arch)
    return dict(depths=list(a.depths), dims=list(a.dims), post_norm=a.post_norm,
                layer_scale=a.layer_scale, mlp_ratio=a.mlp_ratio, drop_path_rate=0.0)


@functools.lru_cache(maxsize=None)
def _load_file(name: str, path: Path):
    """Import a file of the official checkout as module ``name`` (once)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_detection_module(checkout: Path):
    """The official detection/model.py (it registers MMDET_VHEAT into mmdet on import)."""
    if str(checkout / 'detection') not in sys.path:
        sys.path.insert(0, str(checkout / 'detection'))
    return _load_file('official_vheat_det', checkout / 'detection/model.py')


def build_official(checkout: Path, arch: str, case: Case) -> nn.Module:
    if case.part == 'classifier':
        module = _load_file('official_vheat_cls', checkout / 'classification/models/vHeat.py')
        model = module.vHeat(img_size=_square_size(case), infer_mode=case.mode == 'deploy',
                             **_official_kwargs(arch))
        model.eval()
        if case.mode == 'deploy':
            with torch.no_grad():
                model.infer_init()
        return model
    if case.mode == 'deploy':
        raise SystemExit('the official downstream backbone has no deploy form; use eval')
    model = official_detection_module(checkout).MMDET_VHEAT(img_size=BACKBONE_IMG_SIZE, **_official_kwargs(arch))
    model.eval()
    return model


def build_swin(arch: str, case: Case) -> nn.Module:
    a = _arch(arch)
    kwargs = dict(embed_dims=a.dims[0], depths=tuple(a.depths), num_heads=SWIN_HEADS[a.dims[0]],
                  window_size=7, drop_path_rate=0.0)
    if case.part == 'classifier':
        from mmpretrain.models import SwinTransformer
        backbone = SwinTransformer(arch=dict(embed_dims=kwargs['embed_dims'],
                                             depths=kwargs['depths'],
                                             num_heads=kwargs['num_heads']),
                                   img_size=(case.height, case.width), window_size=7,
                                   drop_path_rate=0.0, pad_small_map=True)
        model = _Classifier(backbone, a.dims[-1])
    else:
        from mmdet.models.backbones import SwinTransformer
        model = SwinTransformer(out_indices=(0, 1, 2, 3), **kwargs)
    model.eval()  # mmdet's SwinTransformer.train() returns None
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


# ----------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_forward(model: nn.Module, x: Tensor, iters: int) -> float:
    """Images per second over ``iters`` forward passes."""
    _sync(x.device)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(iters):
            model(x)
    _sync(x.device)
    return iters * x.shape[0] / (time.perf_counter() - start)


def _rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _release_freed_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except OSError:
        pass


def peak_memory_mib(model: nn.Module, x: Tensor) -> float:
    """Peak memory of one forward pass, in MiB (see the module docstring for the CPU method)."""
    if x.device.type == 'cuda':
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        before = torch.cuda.memory_allocated(x.device)
        with torch.inference_mode():
            model(x)
        torch.cuda.synchronize(x.device)
        return (torch.cuda.max_memory_allocated(x.device) - before) / 2**20
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
    with torch.inference_mode():
        model(x)
    done.set()
    sampler.join()
    peak = max(peak, _rss_bytes())
    return (peak - before) / 2**20


def calibrate_iters(model: nn.Module, x: Tensor, seconds: float) -> int:
    """Forward passes per round so that one round of this model lasts about ``seconds``."""
    rate = time_forward(model, x, 1) / x.shape[0]  # forwards per second
    return max(1, round(seconds * rate))


def run_case(case: Case, builders: dict[str, Callable[[Case], nn.Module]], *, rounds: int,
             warmup: int, round_seconds: float, device: torch.device,
             log: Callable[[str], None], amp: torch.dtype | None = None) -> list[Result]:
    x = torch.randn(case.batch, 3, case.height, case.width, device=device)
    models = {name: build(case).to(device) for name, build in builders.items()}
    if amp is not None:
        models = {name: Autocast(model, amp) for name, model in models.items()}
    results = {name: Result(case, name) for name in models}
    iters = {}
    for name, model in models.items():
        for _ in range(warmup):
            time_forward(model, x, 1)
        iters[name] = calibrate_iters(model, x, round_seconds)
    names = list(models)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            results[name].images_per_s.append(time_forward(models[name], x, iters[name]))
        log(f'  round {r + 1}/{rounds}: ' + ', '.join(
            f'{n} {results[n].images_per_s[-1]:.2f}' for n in names) + ' images/s')
    for name, model in models.items():
        results[name].peak_memory_mib = peak_memory_mib(model, x)
    del models
    _release_freed_memory()
    return list(results.values())


# ----------------------------------------------------------------------------- reporting
def ratio(results: list[Result], case: Case, model: str, baseline: str) -> float | None:
    by_name = {r.model: r for r in results if r.case == case}
    if model in by_name and baseline in by_name:
        return by_name[model].median / by_name[baseline].median
    return None


def markdown_table(results: list[Result], device_name: str) -> str:
    lines = [f'Device: {device_name}. Median images/s over the rounds; peak memory of one '
             'forward.', '',
             '| case | model | images/s | vheat_mm / this | peak memory (MiB) |',
             '|---|---|---|---|---|']
    for r in results:
        speedup = ratio(results, r.case, 'vheat_mm', r.model)
        lines.append(f'| {r.case.name} | {r.model} | {r.median:.2f} | '
                     f'{"" if r.model == "vheat_mm" or speedup is None else f"{speedup:.2f}x"} | '
                     f'{r.peak_memory_mib:.0f} |')
    return '\n'.join(lines) + '\n'


def plot(results: list[Result], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    groups = sorted({(r.case.part, r.case.mode, r.case.batch) for r in results})
    fig, axes = plt.subplots(2, len(groups), figsize=(4.5 * len(groups), 7), squeeze=False)
    for col, (part, mode, batch) in enumerate(groups):
        for model in MODELS:
            rows = sorted((r for r in results if r.model == model and
                           (r.case.part, r.case.mode, r.case.batch) == (part, mode, batch)),
                          key=lambda r: r.case.height * r.case.width)
            if not rows:
                continue
            pixels = [f'{r.case.height}x{r.case.width}' for r in rows]
            axes[0][col].plot(pixels, [r.median for r in rows], marker='o', label=model)
            axes[1][col].plot(pixels, [r.peak_memory_mib for r in rows], marker='o', label=model)
        axes[0][col].set_title(f'{part}, {mode}, batch {batch}')
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


def device_description(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return (f'CPU ({platform.processor() or platform.machine()}), '
            f'{torch.get_num_threads()} threads')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('--arch', default='tiny', help='vHeat arch: tiny, small or base')
    parser.add_argument('--cases', nargs='+', type=Case.parse, required=True,
                        metavar='PART:MODE:SIZE:BATCH')
    parser.add_argument('--models', nargs='+', choices=MODELS, default=None,
                        help='default: vheat_mm, swin, and official when --official is given')
    parser.add_argument('--official', type=Path, help='checkout of github MzeroMiko/vHeat')
    parser.add_argument('--official-deps', type=Path,
                        help='a directory to put on sys.path for the official code (timm, einops)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--amp', choices=AMP_DTYPES, default='none',
                        help='run every model under torch.autocast in this dtype (default: '
                             'none, float32)')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2, help='forward passes before timing')
    parser.add_argument('--round-seconds', type=float, default=2.0,
                        help='about how long one model runs in one round')
    parser.add_argument('--out-dir', type=Path, default=Path('work_dirs/benchmark'))
    args = parser.parse_args(argv)

    models = args.models or (['vheat_mm', 'official', 'swin'] if args.official
                             else ['vheat_mm', 'swin'])
    if 'official' in models:
        if args.official is None or not (args.official / 'classification/models/vHeat.py').is_file():
            parser.error('--official must be a checkout of github MzeroMiko/vHeat '
                         '(with classification/models/vHeat.py)')
        if args.official_deps:
            sys.path.insert(0, str(args.official_deps))
        # the official detection module registers MMDET_VHEAT into mmdet; import it before
        # vheat_mm so that neither registration is refused (vheat_mm then leaves it in place)
        if any(c.part == 'backbone' for c in args.cases):
            official_detection_module(args.official)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    builders = {
        'vheat_mm': lambda case: build_vheat_mm(args.arch, case),
        'official': lambda case: build_official(args.official, args.arch, case),
        'swin': lambda case: build_swin(args.arch, case),
    }
    builders = {name: builders[name] for name in models}
    device_name = device_description(device)
    if args.amp != 'none':
        device_name += f', autocast {args.amp}'
    print(f'vHeat-{args.arch} on {device_name}; torch {torch.__version__}', flush=True)
    results: list[Result] = []
    for case in args.cases:
        print(f'{case.name}:', flush=True)
        results += run_case(case, builders, rounds=args.rounds, warmup=args.warmup,
                            round_seconds=args.round_seconds, device=device,
                            log=lambda line: print(line, flush=True),
                            amp=AMP_DTYPES[args.amp])

    args.out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results, device_name)
    (args.out_dir / 'benchmark.md').write_text(table)
    (args.out_dir / 'benchmark.json').write_text(json.dumps(dict(
        arch=args.arch, device=device_name, torch=torch.__version__, rounds=args.rounds,
        command=' '.join(sys.argv),
        results=[dict(asdict(r), median_images_per_s=r.median) for r in results]), indent=1))
    plot(results, args.out_dir / 'benchmark.png', f'vHeat-{args.arch} vs Swin, {device_name}')
    print(table)
    print(f'wrote {args.out_dir}/benchmark.{{md,json,png}}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
