"""Reading checkpoints changes nothing in the process, so reads in several threads at once each
get their file.

- 4 threads reading one official training checkpoint (its yacs config included, yacs not
  importable) 100 times each all get it, also while another thread changes torch's own
  allowlist (torch >= 2.5);
- after reading official and mmengine checkpoints, torch's allowlist, copyreg's extensions and
  mmengine's registry of HistoryBuffer statistics are as they were;
- reading a plain checkpoint imports neither mmengine nor yacs (a runner's checkpoint imports
  mmengine's HistoryBuffer when it asks for it).
"""
import copyreg
import os
import subprocess
import sys
import threading

import pytest
import torch

from checkpoint_files import write_official_training_checkpoint, write_runner_checkpoint
from helpers import MINI, ROOT
from vheat_mm.checkpoint import read_checkpoint
from vheat_mm.models import VHeat

THREADS = 4
READS = 100


@pytest.fixture(scope='module')
def state():
    return VHeat(MINI, img_size=64, num_classes=5).state_dict()


@pytest.fixture(scope='module')
def official_checkpoint(tmp_path_factory, state):
    pytest.importorskip('yacs.config')
    path = tmp_path_factory.mktemp('official') / 'ckpt_epoch_299.pth'
    write_official_training_checkpoint(path, state)
    return path


@pytest.fixture
def no_yacs(monkeypatch):
    """yacs cannot be imported while the files are read."""
    monkeypatch.setitem(sys.modules, 'yacs', None)
    monkeypatch.setitem(sys.modules, 'yacs.config', None)


def _read_in_threads(path, check, meanwhile=None) -> list[str]:
    """Read ``path`` :data:`READS` times in each of :data:`THREADS` threads, calling ``check`` on
    each checkpoint, while ``meanwhile`` (if given) runs in one more thread until they are done;
    returns what went wrong, one line per read."""
    failures, done = [], threading.Event()

    def reader():
        for _ in range(READS):
            try:
                check(read_checkpoint(path))
            except Exception as err:  # noqa: BLE001 -- every failure is reported
                failures.append(f'{type(err).__name__}: {err}'[:300])

    def other():
        while not done.wait(0.001):  # a change a millisecond: the readers keep the interpreter
            meanwhile()

    readers = [threading.Thread(target=reader) for _ in range(THREADS)]
    extra = [threading.Thread(target=other)] if meanwhile else []
    for thread in readers + extra:
        thread.start()
    for thread in readers:
        thread.join()
    done.set()
    for thread in extra:
        thread.join()
    return failures


def test_threads_each_read_an_official_training_checkpoint(official_checkpoint, state, no_yacs):
    def check(checkpoint):
        assert checkpoint['config']['MODEL']['TYPE'] == 'vHeat'
        assert checkpoint['config'].__immutable__ is True
        assert torch.equal(checkpoint['model_ema']['freq_embed.0'], state['freq_embed.0'])

    failures = _read_in_threads(official_checkpoint, check)
    assert not failures, f'{len(failures)} of {THREADS * READS} reads failed: {failures[:3]}'


@pytest.mark.skipif(not hasattr(torch.serialization, 'safe_globals'),
                    reason='torch < 2.5 has no safe_globals context manager')
def test_threads_read_while_another_changes_torchs_allowlist(official_checkpoint, no_yacs):
    class Other:
        """A global some other code allows for a while."""

    def allow_for_a_while():
        with torch.serialization.safe_globals([Other]):
            pass

    failures = _read_in_threads(official_checkpoint,
                                lambda checkpoint: checkpoint['config']['TRAIN']['EPOCHS'],
                                meanwhile=allow_for_a_while)
    assert not failures, f'{len(failures)} of {THREADS * READS} reads failed: {failures[:3]}'


def test_reading_leaves_the_process_as_it_was(official_checkpoint, tmp_path, no_yacs):
    files = [official_checkpoint]
    registry = None
    try:
        from mmengine.logging import HistoryBuffer
    except ImportError:
        pass
    else:
        HistoryBuffer()  # mmengine's defaults in its class-wide registry of statistics
        registry = dict(HistoryBuffer._statistics_methods)
        files.append(write_runner_checkpoint(tmp_path / 'runner'))
    allowlist = getattr(torch.serialization, 'get_safe_globals', list)
    before = (list(allowlist()), dict(copyreg._extension_cache))
    for path in files:
        read_checkpoint(path)
    assert (list(allowlist()), dict(copyreg._extension_cache)) == before
    if registry is not None:
        assert dict(HistoryBuffer._statistics_methods) == registry


def test_reading_a_plain_checkpoint_imports_neither_mmengine_nor_yacs(tmp_path, state):
    plain = tmp_path / 'plain.pth'
    torch.save({'model': state}, plain)
    code = ('import sys; from vheat_mm.checkpoint import read_checkpoint; '
            f'read_checkpoint({str(plain)!r}); '
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mmengine', 'yacs')))")
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == '[]'
