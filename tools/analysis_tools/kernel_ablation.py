"""What each fused kernel of vheat_mm.kernels contributes, and whether each one works here.

For one vHeat model and input (by default vHeat-T, deployed, batch 128 at 224 under bfloat16
autocast on CUDA; ``--mode eval`` the train form in eval mode, ``--mode train`` a training step:
forward, backward, AdamW) it times, in interleaved rounds with the same input:

- ``all``: every kernel on (the default);
- ``-NAME``: every kernel on but NAME;
- ``eager``: every kernel off (the eager PyTorch references);

and reports images/s, the ratio to ``eager``, and the relative error of each variant's output
against ``eager`` and against the float32 model. ``--check`` instead runs each kernel alone
through a forward and a training step and compares with the eager path, printing the names of
the kernels that failed on the last line (``VHEAT_MM_DISABLE_KERNELS`` takes that list).
On the CPU with ``TRITON_INTERPRET=1`` the kernels run through Triton's interpreter (a dry run of
the tool, at tiny sizes).
``--profile`` adds the CUDA kernels that took the most time in one forward of ``all``.

    python tools/analysis_tools/kernel_ablation.py --device cuda --arch tiny --size 224 \\
        --batch 128 --amp bf16 --rounds 5 --profile
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import traceback

import torch

from benchmarking.measure import Timer, device_description, interleaved_rounds, iterations
from vheat_mm.kernels import SWITCHES, kernel_switches
from vheat_mm.kernels.dispatch import INTERPRET, SWITCH_NAMES
from vheat_mm.models import VHeat

AMP = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def variants() -> dict[str, dict[str, bool]]:
    everything = {name: True for name in SWITCH_NAMES}
    table = {'all': everything}
    table.update({f'-{name}': dict(everything, **{name: False}) for name in SWITCH_NAMES})
    table['eager'] = {name: False for name in SWITCH_NAMES}
    return table


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def build(args, device: torch.device) -> VHeat:
    model = VHeat(args.arch, img_size=args.size).to(device)
    model.train(args.mode == 'train')
    if args.mode == 'deploy':
        model.switch_to_deploy()
    return model


def check(args, device: torch.device) -> list[str]:
    """Each kernel alone, forward and training step, against the eager path."""
    torch.manual_seed(0)
    model = VHeat(args.arch, img_size=64).to(device)
    x = torch.randn(2, 3, 64, 64, device=device)
    dtype = AMP[args.amp]
    failed = []
    for name in SWITCH_NAMES:
        try:
            outs, grads = [], []
            for on in (True, False):
                with kernel_switches(**{n: (on and n == name) for n in SWITCH_NAMES}), \
                        torch.autocast(device.type, dtype=dtype):
                    model.eval()
                    with torch.no_grad():
                        outs.append(model(x).float())
                    model.train()
                    model.zero_grad(set_to_none=True)
                    model(x).float().square().mean().backward()
                grads.append(torch.cat([p.grad.flatten() for p in model.parameters()
                                        if p.grad is not None]))
            forward, backward = rel_error(outs[0], outs[1]), rel_error(grads[0], grads[1])
            ok = forward < 3e-2 and backward < 5e-2 and torch.isfinite(grads[0]).all()
            print(f'{name}: forward error {forward:.2e}, gradient error {backward:.2e} '
                  f'{"ok" if ok else "FAILED"}', flush=True)
        except Exception:  # noqa: BLE001 -- report and go on with the other kernels
            traceback.print_exc()
            ok = False
            print(f'{name}: FAILED (exception above)', flush=True)
        if not ok:
            failed.append(name)
    return failed


def ablate(args, device: torch.device) -> None:
    torch.manual_seed(0)
    model = build(args, device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    dtype = AMP[args.amp]
    with torch.no_grad():
        reference = model(x).float()

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=device.type == 'cuda')
    labels = torch.randint(0, 1000, (args.batch,), device=device)

    def forward(switches: dict[str, bool]):
        def run():
            if args.mode != 'train':
                with kernel_switches(**switches), torch.inference_mode(), \
                        torch.autocast(device.type, dtype=dtype):
                    return model(x)
            with kernel_switches(**switches), torch.autocast(device.type, dtype=dtype):
                out = model(x)
            torch.nn.functional.cross_entropy(out.float(), labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return out.detach()
        return run

    steps = {name: forward(switches) for name, switches in variants().items()}
    outputs = {name: step().float() for name, step in steps.items()}  # warm-up, compile
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    timer = Timer(device)
    iters = {name: iterations(timer, step, args.round_seconds) for name, step in steps.items()}
    speed = {name: [] for name in steps}
    for seconds in interleaved_rounds(steps, iters, args.rounds, timer):
        for name, per_step in seconds.items():
            speed[name].append(args.batch / per_step)
    eager = statistics.median(speed['eager'])
    print(f'vHeat-{args.arch} {args.mode}, batch '
          f'{args.batch} at {args.size}, {args.amp} autocast, {device_description(device)}, '
          f'torch {torch.__version__}; median of {args.rounds} rounds')
    print('| variant | images/s | vs eager | error vs eager | error vs float32 |')
    print('|---|---|---|---|---|')
    for name in steps:
        median = statistics.median(speed[name])
        print(f'| {name} | {median:.1f} | {median / eager:.3f}x | '
              f'{rel_error(outputs[name], outputs["eager"]):.2e} | '
              f'{rel_error(outputs[name], reference):.2e} |')
    if args.profile:
        profile(steps['all'], device)


def profile(run, device: torch.device, rows: int = 30) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda'
                                           else [])
    run()
    with torch_profile(activities=activities) as prof:
        run()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
    key = 'self_cuda_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--arch', default='tiny', type=lambda text: json.loads(text)
                        if text.startswith('{') else text,
                        help='tiny, small, base, or an arch dict as JSON')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--amp', choices=sorted(AMP), default='bf16')
    parser.add_argument('--mode', choices=('deploy', 'eval', 'train'), default='deploy')
    parser.add_argument('--warmup', type=int, default=2, help='steps of every variant first')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--round-seconds', type=float, default=1.0)
    parser.add_argument('--check', action='store_true',
                        help='check each kernel against the eager path; last line: the failed')
    parser.add_argument('--profile', action='store_true')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    # a dry run on the CPU: the kernels through Triton's interpreter (TRITON_INTERPRET=1)
    SWITCHES.cpu_interpreter = device.type == 'cpu' and INTERPRET
    if args.check:
        failed = check(args, device)
        print(','.join(failed))
        return 0
    ablate(args, device)
    return 0


if __name__ == '__main__':
    sys.exit(main())
