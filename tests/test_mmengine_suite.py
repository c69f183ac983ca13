"""mmengine's own checkpoint, runner and hook tests, alone and with vheat_mm imported first.

Importing vheat_mm, as a config's ``custom_imports`` does, must change nothing for what is not
vHeat's. The test files of :data:`SUITE` are read from a checkout of open-mmlab/mmengine named by
``MMENGINE_CHECKOUT`` (skipped without one, or when its ``mmengine/version.py`` is not the
installed mmengine's version), copied to a temporary folder (nothing is written into the
checkout) and run twice in subprocesses with tests/mmengine_suite_plugin.py: alone, and with
:data:`IMPORTS` imported before collection. Every test that passes alone must pass with them;
the tests whose outcome differs either way are printed as a table (``-s`` shows it) and named
in the assertion message.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT

pytest.importorskip('mmengine')

CHECKOUT_VARIABLE = 'MMENGINE_CHECKOUT'
CHECKOUT = os.environ.get(CHECKOUT_VARIABLE)
#: mmengine's test files that load, save and hook checkpoints (paths in its checkout), in the
#: order of mmengine's own ``pytest tests``: its tests share registries across files, and
#: test_ema_hook.py fails after test_runner.py (both register ``ToyModel2`` in ``MODELS``).
SUITE = ('tests/test_hooks/test_checkpoint_hook.py', 'tests/test_hooks/test_ema_hook.py',
         'tests/test_runner/test_checkpoint.py', 'tests/test_runner/test_runner.py')
#: what a config's custom_imports of vheat_mm amounts to in a toolbox's process, in order.
IMPORTS = ('mmengine', 'mmdet', 'mmseg', 'mmpretrain', 'vheat_mm')
TOOLBOXES = {'mmdet', 'mmseg', 'mmpretrain'}
PER_TEST_TIMEOUT = 600  # seconds, pytest-timeout's limit for one mmengine test
RUN_TIMEOUT = 3600  # seconds for one run of the whole SUITE


def checkout_version(checkout: Path) -> str:
    """The ``__version__`` written in a checkout's ``mmengine/version.py`` (read, not run)."""
    version_file = checkout / 'mmengine' / 'version.py'
    if not version_file.is_file():
        pytest.fail(f'{CHECKOUT_VARIABLE}={checkout}: no {version_file} (not an mmengine checkout)')
    found = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", version_file.read_text(),
                      re.MULTILINE)
    if found is None:
        pytest.fail(f'{version_file}: no __version__ = "..." line')
    return found.group(1)


@pytest.fixture(scope='module')
def checkout() -> Path:
    if not CHECKOUT:
        pytest.skip(f'set {CHECKOUT_VARIABLE} to a checkout of github open-mmlab/mmengine at the '
                    f'installed mmengine\'s tag')
    path = Path(CHECKOUT)
    installed = importlib.metadata.version('mmengine')
    found = checkout_version(path)
    if found != installed:
        pytest.skip(f'{CHECKOUT_VARIABLE}={path} is mmengine {found}, the installed mmengine is '
                    f'{installed}: check out v{installed}')
    missing = [name for name in SUITE if not (path / name).is_file()]
    if missing:
        pytest.fail(f'{CHECKOUT_VARIABLE}={path}: no {", ".join(missing)}')
    return path


def run_suite(checkout: Path, folder: Path, imports: tuple[str, ...]) -> tuple[dict, float]:
    """Run :data:`SUITE` from a copy in ``folder`` with ``imports`` imported first (vheat_mm from
    this tree); returns the plugin's record (``imported``, ``finds_vheat``, ``outcomes`` by node
    id) and the seconds the run took. The run's output is left in ``folder/pytest.log``."""
    for name in SUITE:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkout / name, folder / name)
    (folder / 'pytest.ini').write_text('[pytest]\n')  # the rootdir, and no config from above
    record_file = folder / 'outcomes.json'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / 'tests'), str(ROOT)]))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, '-m', 'pytest', *SUITE, '-p', 'mmengine_suite_plugin',
         f'--outcomes={record_file}', f'--import-first={",".join(imports)}',
         '--import-mode=importlib', '-p', 'no:cacheprovider', '-q', '-rfE',
         '--continue-on-collection-errors', f'--timeout={PER_TEST_TIMEOUT}'],
        cwd=folder, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    seconds = time.monotonic() - started
    (folder / 'pytest.log').write_text(done.stdout + done.stderr)
    # 0: all passed, 1: some failed; anything else means the run itself went wrong
    assert done.returncode in (0, 1) and record_file.is_file(), (
        f'mmengine suite with imports {imports}: exit {done.returncode}\n'
        + done.stdout[-6000:] + done.stderr[-3000:])
    return json.loads(record_file.read_text()), seconds


def outcome_table(rows: list[tuple[str, str, str]]) -> str:
    """Lines of ``outcome alone | outcome with the imports | node id``."""
    lines = [f'{"alone":<24} {"with the imports":<24} test']
    lines += [f'{alone[:24]:<24} {imported[:24]:<24} {node}' for node, alone, imported in rows]
    return '\n'.join(lines)


def test_mmengine_tests_pass_with_vheat_mm_imported_first(checkout, tmp_path):
    alone, alone_seconds = run_suite(checkout, tmp_path / 'alone', ())
    with_vheat, with_seconds = run_suite(checkout, tmp_path / 'with_vheat_mm', IMPORTS)

    # the comparison means something only where every file was collected, and vheat_mm.mm ran
    uncollected = [name for name in SUITE
                   if not any(node.startswith(f'{name}::') for node in alone['outcomes'])]
    assert not uncollected, (f'no test collected alone from {uncollected} (a missing package? '
                             f'see requirements/tests.txt): {alone["outcomes"]}')
    assert with_vheat['imported'] == list(IMPORTS)
    assert TOOLBOXES <= set(with_vheat['finds_vheat']), with_vheat['finds_vheat']

    nodes = sorted(set(alone['outcomes']) | set(with_vheat['outcomes']))
    differing = [(node, alone['outcomes'].get(node, 'absent'),
                  with_vheat['outcomes'].get(node, 'absent')) for node in nodes]
    differing = [row for row in differing if row[1] != row[2]]
    passed_alone = sum(outcome == 'passed' for outcome in alone['outcomes'].values())
    passed_with = sum(outcome == 'passed' for outcome in with_vheat['outcomes'].values())
    summary = (f'mmengine {importlib.metadata.version("mmengine")} tests, {len(nodes)} in all: '
               f'{passed_alone} pass alone ({alone_seconds:.0f} s), {passed_with} pass with '
               f'{", ".join(IMPORTS)} imported first ({with_seconds:.0f} s); '
               f'{len(differing)} differ')
    print(f'\n{summary}\n{outcome_table(differing)}' if differing else f'\n{summary}')

    broken = [row for row in differing if row[1] == 'passed']
    assert not broken, (f'{len(broken)} mmengine tests pass alone and not with '
                        f'{", ".join(IMPORTS)} imported first\n{summary}\n'
                        f'{outcome_table(differing)}')
