"""What ``import vheat_mm`` costs in a fresh interpreter, after each of the imports a user may
have run before it, and what importing mmengine or timm costs with vheat_mm imported before
them and without.

Each measurement is one new interpreter (the repository first on its path) that runs the imports
before, then times the measured statement alone with ``time.perf_counter``. The rounds are
interleaved (every case once, then again) so that a slow spell of the machine touches every
case alike. Prints a markdown table: the median, the fastest and the slowest run in seconds, and
the toolboxes (among mmengine, mmcv, mmdet, mmseg, mmpretrain and timm) that the measured
statement itself imported. A case that needs a package that is not installed is a skipped row.

Example::

    python tools/analysis_tools/import_cost.py --rounds 5
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
TOOLBOXES = ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'timm')


class Case(NamedTuple):
    """``measured`` timed in a fresh interpreter that ran ``before`` (packages, in order)."""
    measured: str
    before: tuple[str, ...]


CASES = [
    Case('vheat_mm', ()),
    Case('vheat_mm', ('torch',)),
    Case('vheat_mm', ('mmengine',)),
    Case('vheat_mm', ('timm',)),
    Case('vheat_mm', TOOLBOXES),
    Case('mmengine', ()),
    Case('mmengine', ('torch',)),
    Case('mmengine', ('vheat_mm',)),
    Case('timm', ()),
    Case('timm', ('torch',)),
    Case('timm', ('vheat_mm',)),
]

PROGRAM = '''
import json, sys, time
{imports_before}
modules_before = set(sys.modules)
start = time.perf_counter()
import {measured}
seconds = time.perf_counter() - start
new = {{name.split('.')[0] for name in set(sys.modules) - modules_before}}
print(json.dumps(dict(seconds=seconds, imported=[t for t in {toolboxes!r} if t in new])))
'''


def missing_packages(case: Case) -> list[str]:
    """The packages of ``case`` that cannot be imported here (vheat_mm is the repository's)."""
    return [name for name in (*case.before, case.measured)
            if name != 'vheat_mm' and importlib.util.find_spec(name) is None]


def measure_once(case: Case, python: str) -> dict:
    """One fresh interpreter: the seconds ``import measured`` took after ``before``, and the
    toolboxes it imported."""
    code = PROGRAM.format(imports_before='\n'.join(f'import {name}' for name in case.before),
                          measured=case.measured, toolboxes=TOOLBOXES)
    environ = dict(os.environ)
    environ['PYTHONPATH'] = os.pathsep.join(
        [str(ROOT)] + ([environ['PYTHONPATH']] if environ.get('PYTHONPATH') else []))
    done = subprocess.run([python, '-c', code], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ['(no output)']
        raise SystemExit(f'import_cost: {describe(case)} failed with exit code '
                         f'{done.returncode}: {tail[0]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe(case: Case) -> str:
    return (f'`import {case.measured}` after '
            + (', '.join(f'`{name}`' for name in case.before) if case.before else 'nothing'))


def machine_description() -> str:
    """The CPU model, its cores, the OS, Python and the versions of torch and the toolboxes."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path('/proc/cpuinfo')
    if cpuinfo.is_file():
        names = [line.split(':', 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith('model name')]
        cpu = names[0] if names else cpu
    versions = []
    for package in ('torch', *TOOLBOXES):
        distribution = {'mmseg': 'mmsegmentation'}.get(package, package)
        try:
            versions.append(f'{package} {importlib.metadata.version(distribution)}')
        except importlib.metadata.PackageNotFoundError:
            versions.append(f'{package} not installed')
    return (f'{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, '
            f'Python {platform.python_version()}; {", ".join(versions)}')


def markdown_table(cases: list[Case], runs: dict[Case, list[dict]], header: str) -> str:
    lines = [header, '',
             '| measured | imported before | median (s) | fastest (s) | slowest (s) | '
             'toolboxes it imported |',
             '|---|---|---|---|---|---|']
    for case in cases:
        before = ', '.join(case.before) or 'nothing'
        missing = missing_packages(case)
        if missing:
            lines.append(f'| import {case.measured} | {before} | skipped: '
                         f'{", ".join(missing)} not installed | | | |')
            continue
        seconds = [run['seconds'] for run in runs[case]]
        imported = sorted({name for run in runs[case] for name in run['imported']},
                          key=TOOLBOXES.index)
        lines.append(f'| import {case.measured} | {before} | {statistics.median(seconds):.2f} | '
                     f'{min(seconds):.2f} | {max(seconds):.2f} | '
                     f'{", ".join(imported) or "none"} |')
    return '\n'.join(lines) + '\n'


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=textwrap.dedent(__doc__.split('\n\n', 1)[1]))
    parser.add_argument('--rounds', type=int, default=5,
                        help='fresh interpreters per case (the median is reported); default 5')
    parser.add_argument('--python', default=sys.executable,
                        help='the interpreter to measure (default: this one)')
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f'--rounds must be at least 1, got {args.rounds}')
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = ' '.join(['python', *sys.argv] if argv is None else ['import_cost.py', *argv])
    measured = [case for case in CASES if not missing_packages(case)]
    runs: dict[Case, list[dict]] = {case: [] for case in measured}
    for _ in range(args.rounds):
        for case in measured:
            runs[case].append(measure_once(case, args.python))
    header = (f'{datetime.date.today().isoformat()}, {machine_description()}. '
              f'`{command}`: seconds of one import statement in a fresh interpreter, '
              f'{args.rounds} rounds.')
    print(markdown_table(CASES, runs, header), end='')


if __name__ == '__main__':
    main()
