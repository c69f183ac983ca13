"""timm's own model tests (``tests/test_models.py`` of huggingface/pytorch-image-models) on
``vheat_tiny``, ``vheat_small`` and ``vheat_base``, as timm runs them on its models.

The tests are read from a checkout named by ``TIMM_CHECKOUT`` (skipped without one) and run in
a subprocess with tests/timm_suite_plugin.py, which registers the vHeat models before timm's
module is collected, leaves out the tests that download weights and skips the TorchScript
tests with their reason. tests/test_timm_contract.py checks the same points without the
checkout.
"""
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import ROOT

pytest.importorskip('timm')
from timm_suite_plugin import SKIPPED  # noqa: E402

CHECKOUT = Path(os.environ.get('TIMM_CHECKOUT', '/nonexistent'))
TIMM_TESTS = CHECKOUT / 'tests' / 'test_models.py'
NAMES = ('vheat_tiny', 'vheat_small', 'vheat_base')
# the tests every vHeat model must pass (timm's test for default cfgs is named by the tag)
PASSING = ('test_model_forward', 'test_model_backward', 'test_model_default_cfgs',
           'test_model_forward_features', 'test_model_forward_intermediates_features',
           'test_model_forward_intermediates', 'test_model_forward_fx', 'test_model_backward_fx')


def outcomes(report: Path) -> dict[str, str]:
    """Test id -> 'passed', 'skipped: REASON', 'failed' or 'error', from a junit xml report."""
    results = {}
    for case in ET.parse(report).iter('testcase'):
        result = 'passed'
        for child in case:
            if child.tag == 'skipped':
                result = f'skipped: {child.get("message")}'
            elif child.tag in ('failure', 'error'):
                result = 'failed' if child.tag == 'failure' else 'error'
        results[case.get('name')] = result
    return results


@pytest.mark.slow
@pytest.mark.skipif(not TIMM_TESTS.is_file(), reason='set TIMM_CHECKOUT to a checkout of github '
                                                     'huggingface/pytorch-image-models')
def test_timm_model_tests_pass_on_the_vheat_models(tmp_path):
    report = tmp_path / 'timm.xml'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / 'tests'), str(ROOT)]),
               TIMEOUT='900')  # timm's per-test limit for its env-driven timeouts
    done = subprocess.run(
        [sys.executable, '-m', 'pytest', str(TIMM_TESTS), '-p', 'timm_suite_plugin',
         '--import-mode=importlib', '-p', 'no:cacheprovider', '-q', '-rs',
         f'--junitxml={report}'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    results = outcomes(report)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    failed = {name: result for name, result in results.items()
              if result in ('failed', 'error')}
    assert not failed
    for model in NAMES:
        mine = {name.split('[')[0]: result for name, result in results.items()
                if f'-{model}]' in name or f'-{model}.' in name}
        assert all(mine.get(test) == 'passed' for test in PASSING), (model, mine)
        for test, reason in SKIPPED.items():
            assert mine[test] == f'skipped: {reason}'
        assert set(mine) == set(PASSING) | set(SKIPPED), (model, sorted(mine))
