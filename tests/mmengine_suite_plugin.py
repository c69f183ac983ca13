"""pytest plugin that runs mmengine's own tests, optionally with other modules imported first.

Loaded with ``-p mmengine_suite_plugin`` (tests/ on ``PYTHONPATH``); tests/test_mmengine_suite.py
runs it twice on the same test files, once with ``--import-first`` and once without, and
compares the two. The plugin:

- imports the modules of ``--import-first=mod1,mod2,...`` in that order before collection, as a
  config's ``custom_imports`` would (``import mmengine, mmdet, mmseg, mmpretrain, vheat_mm``);
- writes each test's outcome by node id to the JSON file of ``--outcomes``:
  ``{"imported": [...], "finds_vheat": [...], "outcomes": {node id: outcome}}``, an outcome
  being ``passed``, ``failed``, ``error`` (setup or teardown failed), ``skipped: REASON``,
  ``xfailed`` or ``xpassed``; a file that fails to collect is an ``error`` under its own id.
  ``finds_vheat`` names the imported packages whose ``registry.MODELS`` gives the backbone
  ``vHeat``, looked up after the last test so that the look-up changes no test.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import pytest

OUTCOMES: dict[str, str] = {}  # node id -> outcome, filled as the reports come


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup('mmengine_suite')
    group.addoption('--import-first', default='', metavar='MODULES',
                    help='comma-separated modules to import, in order, before collection')
    group.addoption('--outcomes', metavar='PATH',
                    help='JSON file to write each test outcome to, by node id')


def imported_modules(config: pytest.Config) -> list[str]:
    return [name.strip() for name in config.getoption('import_first').split(',') if name.strip()]


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption('outcomes'):
        raise pytest.UsageError('mmengine_suite_plugin needs --outcomes=PATH (a JSON file)')
    for name in imported_modules(config):
        importlib.import_module(name)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, 'Skipped: reason')
        return str(longrepr[2]).removeprefix('Skipped: ')
    return str(longrepr)


def outcome_of(report: pytest.TestReport, earlier: str | None) -> str | None:
    """The outcome one phase's report gives a test that had ``earlier`` so far (None: none)."""
    if hasattr(report, 'wasxfail'):
        return 'xfailed' if report.skipped else 'xpassed'
    if report.failed:
        if report.when == 'call':
            return 'failed'
        return earlier if earlier in ('failed', 'error') else 'error'
    if report.skipped:
        return f'skipped: {_skip_reason(report)}'
    if report.when == 'call':
        return 'passed'
    return earlier


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    outcome = outcome_of(report, OUTCOMES.get(report.nodeid))
    if outcome is not None:
        OUTCOMES[report.nodeid] = outcome


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        OUTCOMES[report.nodeid] = 'error'


def finds_vheat(packages: list[str]) -> list[str]:
    """Those of ``packages`` whose ``registry.MODELS`` gives ``vHeat`` (from its own module
    dict or, as mmengine's registries search, from a parent's)."""
    found = []
    for name in packages:
        if importlib.util.find_spec(f'{name}.registry') is None:
            continue
        models = getattr(importlib.import_module(f'{name}.registry'), 'MODELS', None)
        if models is not None and models.get('vHeat') is not None:
            found.append(name)
    return found


def pytest_sessionfinish(session: pytest.Session) -> None:
    imported = imported_modules(session.config)
    record = {'imported': imported, 'finds_vheat': finds_vheat(imported), 'outcomes': OUTCOMES}
    Path(session.config.getoption('outcomes')).write_text(json.dumps(record, indent=1))
