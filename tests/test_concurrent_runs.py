"""Runs that share a work_dir: temporary files of live writers survive, a second training run
refuses to start (unless ``--resume``), a stale lock is taken over, and a damaged
``last_checkpoint`` is one line naming it.

The holders are real processes: a child that takes the lock (or stays alive under a pid named in
a temporary file's name), and one that has exited for a dead writer. The tool runs use the tiny
classifier of ``tests/test_interruption.py``, two iterations.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mmengine.config import Config

from helpers import CONFIGS, ROOT, python_tool, remove_checkpoints, synthetic_shapes, write_config
from test_interruption import CHILD_ENV, CLASSIFIER
from vheat_mm.checkpoint.atomic import leftover_temporaries, replaced_atomically, temporary_files
from vheat_mm.liveness import this_host
from vheat_mm.mm import tool_config
from vheat_mm.mm.tool_config import ToolConfigError
from vheat_mm.mm.work_dir_lock import LOCK_FILE, WorkDirInUse, WorkDirLock

DEMO = CONFIGS / 'demo/mask-rcnn_vheat-t_fpn_shapes.py'
TWO_ITERATIONS = ('--cfg-options', 'train_cfg.max_iters=2')
HOLD_LOCK = '''\
import sys
from vheat_mm.mm.work_dir_lock import WorkDirLock
lock = WorkDirLock(sys.argv[1])
lock.acquire()
print('held', flush=True)
sys.stdin.read()
lock.release()
'''


# ----------------------------------------------------------------------------- processes
def child(*args: str, **kwargs) -> subprocess.Popen:
    environ = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=environ, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, **kwargs)


@pytest.fixture
def live_pid():
    """The pid of a process that stays alive during the test."""
    process = child('-c', 'import sys; sys.stdin.read()')
    yield process.pid
    process.communicate('')


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process of this host that has exited."""
    process = child('-c', 'pass')
    process.communicate('')
    return process.pid


@pytest.fixture
def lock_holder():
    """Start a process holding the lock of a work_dir; returns it once it holds the lock."""
    processes = []

    def start(work_dir: Path) -> subprocess.Popen:
        process = child('-c', HOLD_LOCK, str(work_dir))
        processes.append(process)
        assert process.stdout.readline() == 'held\n'
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.communicate('')


def write_lock(work_dir: Path, *, pid: int, host: str, pid_start: str | None = None) -> Path:
    """A lock file as tools/train.py writes it, naming ``pid`` on ``host``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / LOCK_FILE
    path.write_text(json.dumps(dict(pid=pid, host=host, pid_start=pid_start,
                                    started='2024-01-01T00:00:00', command='train.py',
                                    token='0' * 32)))
    return path


def temporary(directory: Path, *, pid: int, host: str) -> Path:
    """A temporary checkpoint file of writer ``pid`` on ``host`` (no character to escape)."""
    path = directory / f'.iter_2.pth.{host}.{pid}.0123456789abcdef.tmp'
    path.write_bytes(b'partial')
    return path


def train(config: Path, work_dir: Path, *args: str, returncode: int = 0):
    """``tools/train.py`` (the test hooks' directory on PYTHONPATH, as the config imports them)."""
    return python_tool('tools/train.py', config, '--work-dir', work_dir, *args, env=CHILD_ENV,
                       returncode=returncode)


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one ``train.py: error:`` line of a failed run, which must show no traceback."""
    (line,) = [line for line in done.stderr.splitlines() if line.startswith('train.py: error:')]
    assert 'Traceback' not in done.stderr, done.stderr
    return line


# ----------------------------------------------------------------------------- temporaries
def test_a_temporary_file_names_its_writer(tmp_path):
    with replaced_atomically(tmp_path / 'iter_2.pth') as tmp:
        Path(tmp).write_bytes(b'partial')
        (file,) = temporary_files(tmp_path)
        assert (file.path, file.host, file.pid) == (tmp, this_host(), os.getpid())
        assert file.kept_because(time.time()) is None  # this process's own pid: reused
    assert temporary_files(tmp_path) == []


def test_only_temporaries_of_gone_writers_are_left_over(tmp_path, live_pid, dead_pid):
    started = time.time()
    live = temporary(tmp_path, pid=live_pid, host=this_host())
    dead = temporary(tmp_path, pid=dead_pid, host=this_host())
    foreign = temporary(tmp_path, pid=dead_pid, host='other-node')
    old_before = tmp_path / f'.iter_4.pth.{"a" * 32}.tmp'  # the earlier format, no writer
    old_after = tmp_path / f'.iter_6.pth.{"b" * 32}.tmp'
    for path, mtime in ((old_before, started - 60), (old_after, started + 60)):
        path.write_bytes(b'partial')
        os.utime(path, (mtime, mtime))
    assert leftover_temporaries(tmp_path, started=started) == sorted(map(str, [dead, old_before]))
    assert leftover_temporaries(tmp_path) == [str(dead)]  # no start: no earlier-format file
    reasons = {Path(f.path): f.kept_because(started) for f in temporary_files(tmp_path)}
    assert reasons[live] == f'its writer, pid {live_pid} on this host, is alive'
    assert reasons[foreign] == (f'its writer, pid {dead_pid} on host other-node, cannot be '
                                f'checked from here')
    assert 'modified after this run started' in reasons[old_after]


# ----------------------------------------------------------------------------- the lock
def test_the_lock_is_released_on_sigterm_and_on_errors(tmp_path, lock_holder):
    holder = lock_holder(tmp_path)
    lock = tmp_path / LOCK_FILE
    assert json.loads(lock.read_text())['pid'] == holder.pid
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=60) == -signal.SIGTERM  # still ended by the signal
    assert not lock.exists()

    with pytest.raises(RuntimeError, match='mid-run'), WorkDirLock(tmp_path) as held:
        held.acquire()
        assert lock.exists()
        raise RuntimeError('mid-run')
    assert not lock.exists()


def test_a_live_or_unknown_holder_refuses_a_stale_one_is_taken_over(tmp_path, lock_holder,
                                                                    dead_pid, live_pid):
    lock = tmp_path / LOCK_FILE
    holder = lock_holder(tmp_path)
    with pytest.raises(WorkDirInUse, match=rf'pid {holder.pid} on this host, .* \(lock file '
                                           rf'{re.escape(str(lock))}\): wait for it to end'):
        WorkDirLock(tmp_path).acquire()
    holder.communicate('')

    write_lock(tmp_path, pid=dead_pid, host='other-node')
    with pytest.raises(WorkDirInUse, match=rf'host other-node, which cannot be checked .*; if no '
                                           rf'run uses {re.escape(f"{tmp_path}, delete {lock}")}'
                                           rf'$'):
        WorkDirLock(tmp_path).acquire()
    lock.write_bytes(b'\x80 not a record')
    with pytest.raises(WorkDirInUse, match='names no run'):
        WorkDirLock(tmp_path).acquire()

    # stale: a dead pid; a live pid of another start time (reused); this process's own pid
    for pid, pid_start in ((dead_pid, None), (live_pid, '1'), (os.getpid(), None)):
        write_lock(tmp_path, pid=pid, host=this_host(), pid_start=pid_start)
        with WorkDirLock(tmp_path) as taken:
            taken.acquire()
            assert json.loads(lock.read_text())['token'] == taken.record['token']
        assert not lock.exists()
    write_lock(tmp_path, pid=live_pid, host=this_host())
    with pytest.raises(WorkDirInUse, match=f'pid {live_pid} on this host'):
        WorkDirLock(tmp_path).acquire()


def test_only_rank_0_of_a_launch_takes_the_lock(tmp_path, monkeypatch, live_pid):
    lock = write_lock(tmp_path, pid=live_pid, host=this_host())
    cfg = Config(dict(work_dir=str(tmp_path), launcher='pytorch'))
    for variable, launcher in (('RANK', 'pytorch'), ('SLURM_PROCID', 'slurm'),
                               ('OMPI_COMM_WORLD_RANK', 'mpi')):
        monkeypatch.setenv(variable, '1')
        cfg.launcher = launcher
        with tool_config.lock_work_dir(cfg, resume=False):  # another rank: not refused
            assert json.loads(lock.read_text())['pid'] == live_pid
        monkeypatch.setenv(variable, '0')
        with pytest.raises(WorkDirInUse):
            tool_config.lock_work_dir(cfg, resume=False)


# ----------------------------------------------------------------------------- last_checkpoint
def test_last_checkpoint_must_name_an_existing_file(tmp_path):
    tool_config.check_last_checkpoint(str(tmp_path))  # none: mmengine starts afresh
    path = tmp_path / 'last_checkpoint'
    for content, message in ((b'\x80\x03}q\x00.', 'is not a text file (byte 0 of 6 is not UTF-8)'),
                             (b'', "holds '', not the path of a checkpoint"),
                             (b'a\nb', "holds 'a\\nb', not the path"),
                             (str(tmp_path / 'iter_4.pth').encode(), 'which is not a file')):
        path.write_bytes(content)
        with pytest.raises(ToolConfigError, match=rf'^{re.escape(f"{path} ")}.*'
                                                  rf'{re.escape(message)}'):
            tool_config.check_last_checkpoint(str(tmp_path))
    (tmp_path / 'iter_4.pth').write_bytes(b'')
    tool_config.check_last_checkpoint(str(tmp_path))
    path.write_text('s3://bucket/iter_4.pth')
    tool_config.check_last_checkpoint(str(tmp_path))


# ----------------------------------------------------------------------------- tools/train.py
@pytest.fixture(scope='module')
def classifier(tmp_path_factory):
    """The tiny classifier config of tests/test_interruption.py, on its generated data."""
    shapes = synthetic_shapes()
    tmp = tmp_path_factory.mktemp('concurrent')
    data = shapes.make_shapes_imagenet(tmp / 'imagenet', num_train=4, num_val=1, size=(32, 32))
    yield write_config(tmp / 'classifier.py', CLASSIFIER.format(
        base=CONFIGS / 'classification/vheat-t_16xb128_in1k.py', data=data,
        classes=shapes.SHAPE_CLASSES, kill_hooks=[]))
    remove_checkpoints(tmp)


@pytest.mark.e2e
def test_a_second_run_refuses_a_locked_work_dir(tmp_path, lock_holder):
    work_dir = tmp_path / 'work'
    holder = lock_holder(work_dir)
    done = train(DEMO, work_dir, returncode=1)
    line = error_line(done)
    assert line.startswith(f'train.py: error: {work_dir} is in use by another training run, pid '
                           f'{holder.pid} on this host, '), line
    assert f'(lock file {work_dir / LOCK_FILE}): wait for it to end, give another --work-dir, ' \
           f'or add --resume' in line, line
    assert sorted(os.listdir(work_dir)) == [LOCK_FILE]  # the refused run wrote nothing
    assert json.loads((work_dir / LOCK_FILE).read_text())['pid'] == holder.pid


@pytest.mark.e2e
def test_a_run_takes_over_a_stale_lock_and_keeps_live_temporaries(classifier, tmp_path, live_pid,
                                                                  dead_pid, lock_holder):
    work_dir = tmp_path / 'work'
    lock = write_lock(work_dir, pid=dead_pid, host=this_host())
    live = temporary(work_dir, pid=live_pid, host=this_host())
    foreign = temporary(work_dir, pid=dead_pid, host='other-node')
    dead = temporary(work_dir, pid=dead_pid, host=this_host())
    # the earlier name format, which says nothing of the writer: one last modified an hour
    # before the run (a dead writer's) and one written to now (a live save of another run)
    old_dead, old_live = (work_dir / f'.iter_{n}.pth.{n * 16}.tmp' for n in ('ab', 'cd'))
    for path, mtime in ((old_dead, time.time() - 3600), (old_live, time.time() + 3600)):
        path.write_bytes(b'partial')
        os.utime(path, (mtime, mtime))
    done = train(classifier, work_dir, *TWO_ITERATIONS)
    assert (f'took over the lock file {lock} of pid {dead_pid} on this host, which is no longer '
            f'alive') in done.stdout
    assert f'removed {dead}, left by an interrupted checkpoint save' in done.stdout
    assert (f'kept {live}, a temporary checkpoint file: its writer, pid {live_pid} on this host, '
            f'is alive') in done.stdout
    assert f'kept {foreign}, a temporary checkpoint file: its writer, pid {dead_pid} on host ' \
           f'other-node, cannot be checked from here' in done.stdout
    assert f'removed {old_dead}, left by an interrupted checkpoint save' in done.stdout
    assert (f'kept {old_live}, a temporary checkpoint file: its name does not say which process '
            f'writes it, and it was modified after this run started') in done.stdout
    assert live.exists() and foreign.exists() and old_live.exists()
    assert not dead.exists() and not old_dead.exists()
    assert (work_dir / 'iter_2.pth').is_file() and not lock.exists()  # released at the end

    # --resume runs beside a live holder, with a warning, and leaves the holder's lock alone
    holder = lock_holder(work_dir)
    done = train(classifier, work_dir, '--resume', *TWO_ITERATIONS)
    assert (f'--resume: {work_dir} is in use by another training run, pid {holder.pid} on this '
            f'host') in done.stdout
    assert 'this run takes over the lock' in done.stdout
    assert f'Auto resumed from the latest checkpoint {work_dir / "iter_2.pth"}' in done.stdout
    assert not lock.exists()  # released: the holder's lock was taken over, then removed


@pytest.mark.e2e
@pytest.mark.parametrize('content', [b'\x80\x04\x95 binary', 'missing'])
def test_resume_with_a_bad_last_checkpoint_is_one_line(classifier, tmp_path, content):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    path = work_dir / 'last_checkpoint'
    if content == 'missing':
        path.write_text(str(work_dir / 'iter_4.pth'))
    else:
        path.write_bytes(content)
    done = train(classifier, work_dir, '--resume', returncode=1)
    expected = ('is not a text file (byte 0 of 10 is not UTF-8)' if content != 'missing'
                else f'names {work_dir / "iter_4.pth"}, which is not a file')
    assert error_line(done).startswith(f'train.py: error: {path} {expected}'), done.stderr
    assert sorted(os.listdir(work_dir)) == ['last_checkpoint']
