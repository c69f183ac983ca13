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

- an arch (``tiny``, ``small``, ``base`` or their initials; default ``--arch``, which may also
  be an arch dict as JSON, e.g. ``'{"depths": [1, 1, 2, 1], "dims": 8}'``);
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
checkout, never copied here. A model that cannot run a case is reported as skipped, with why
(Swin, for instance, for an arch whose stage widths no Swin has).

Timing: on CUDA with CUDA events around each round, on the CPU with the wall clock. Peak
memory: on CUDA ``torch.cuda.max_memory_allocated`` during one forward or training step, above
what was allocated before it (for a training step: after a warm-up step, so with the optimizer's
state and without gradients: activations, gradients and temporaries); on the CPU the peak
resident set size above the level before, sampled every millisecond after returning freed memory
to the system (glibc ``malloc_trim``), an estimate that includes the allocator's slack. Writes
``benchmark.json``, ``benchmark.md`` and (with matplotlib) ``benchmark.png``.

Host work: the ATen calls of one step, counted below autograd
(``benchmarking/dispatch_counts.py``; a training step's backward and optimizer step included),
and of them the calls that make the host wait for the device (``item``, ``equal``, ...): each
call is a trip through the dispatcher, and a waiting one a device-to-host synchronisation.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarking import official
from benchmarking.cases import MODELS, PRECISIONS, Case, parse_arch, set_mode
from benchmarking.competitors import Unavailable, build_official, build_swin
from benchmarking.dispatch_counts import count_dispatch
from benchmarking.import_order import import_official_first, vheat_models
from benchmarking.measure import (Timer, device_description, interleaved_rounds, iterations,
                                  peak_memory_mib, release_freed_memory)


@dataclass
class Result:
    case: Case
    model: str
    images_per_s: list[float] = field(default_factory=list)
    peak_memory_mib: float | None = None
    aten_calls: int | None = None   # of one step (dispatch_counts.py), views included
    aten_syncs: int | None = None   # of them, calls that make the host wait for the device
    skipped: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.images_per_s) if self.images_per_s else None


# ----------------------------------------------------------------------------- models
def build_vheat_mm(case: Case) -> nn.Module:
    models = vheat_models()
    if case.part == 'classifier':
        model = models.VHeat(case.arch_argument, img_size=case.img_size)
    else:
        model = models.VHeatFeatures(case.arch_argument, img_size=case.img_size)
    set_mode(model, case)
    if case.mode == 'deploy':
        model.switch_to_deploy()
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


def run_case(case: Case, builders: dict[str, Callable[[Case], nn.Module]], *, rounds: int,
             warmup: int, round_seconds: float, device: torch.device,
             log: Callable[[str], None]) -> list[Result]:
    """Build, warm up and time each model on one input in interleaved rounds, then measure
    the peak memory of one step of each."""
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
        iters[name] = iterations(timer, steps[name], round_seconds)
    for r, seconds in enumerate(interleaved_rounds(steps, iters, rounds, timer)):
        for name, per_step in seconds.items():
            results[name].images_per_s.append(case.batch / per_step)
        log(f'  round {r + 1}/{rounds}: ' + ', '.join(
            f'{n} {results[n].images_per_s[-1]:.2f}' for n in steps) + ' images/s')
    for name, step in steps.items():
        results[name].peak_memory_mib = peak_memory_mib(step, device)
        counts = count_dispatch(step)
        results[name].aten_calls = counts.calls
        results[name].aten_syncs = sum(counts.syncs.values())
    steps.clear()
    release_freed_memory(device)
    return list(results.values())


# ----------------------------------------------------------------------------- reporting
def ratio(results: list[Result], case: Case, model: str, baseline: str) -> float | None:
    by_name = {r.model: r for r in results if r.case == case and r.median}
    if model in by_name and baseline in by_name:
        return by_name[model].median / by_name[baseline].median
    return None


def markdown_table(results: list[Result], header: str) -> str:
    lines = [header, '',
             '| case | model | images/s | vheat_mm / this | peak memory (MiB) | ATen calls '
             '(syncs) |',
             '|---|---|---|---|---|---|']
    for r in results:
        if r.skipped:
            lines.append(f'| {r.case.name} | {r.model} | skipped: {r.skipped} | | | |')
            continue
        speedup = ratio(results, r.case, 'vheat_mm', r.model)
        lines.append(f'| {r.case.name} | {r.model} | {r.median:.2f} | '
                     f'{"" if r.model == "vheat_mm" or speedup is None else f"{speedup:.2f}x"} | '
                     f'{r.peak_memory_mib:.0f} | {r.aten_calls} ({r.aten_syncs}) |')
    return '\n'.join(lines) + '\n'


def report_json(results: list[Result], device_name: str, rounds: int) -> str:
    return json.dumps(dict(
        device=device_name, torch=torch.__version__, rounds=rounds, command=' '.join(sys.argv),
        results=[dict(asdict(r), median_images_per_s=r.median) for r in results]), indent=1)


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


# ----------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('--arch', default='tiny',
                        help="vHeat arch of cases that name none: a name of vheat_mm's "
                             'ARCH_SETTINGS or its initial, or an arch dict as JSON')
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
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    models = args.models or (['vheat_mm', 'official', 'swin'] if args.official
                             else ['vheat_mm', 'swin'])
    if 'official' in models:
        if not official.is_checkout(args.official):
            parser.error(f'--official must be a checkout of github MzeroMiko/vHeat '
                         f'(with {official.CLASSIFICATION_FILE})')
        if args.official_deps:
            sys.path.insert(0, str(args.official_deps))
        # the import-order workaround of benchmarking/import_order.py: before vheat_mm
        import_official_first(args.official, any(text.split(':', 1)[0] == 'backbone'
                                                 for text in args.cases))
    try:
        default_arch = parse_arch(args.arch)
    except ValueError as error:
        parser.error(f'--arch: {error}')
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
    (args.out_dir / 'benchmark.json').write_text(report_json(results, device_name, args.rounds))
    plotted = plot(results, args.out_dir / 'benchmark.png', f'vHeat vs Swin, {device_name}')
    print(table)
    print(f'wrote {args.out_dir}/benchmark.{{md,json{",png" if plotted else ""}}}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
