"""One training run per work_dir: the lock file ``WORK_DIR/train.lock`` of ``tools/train.py``.

Two runs in one work_dir write over each other's checkpoints and ``last_checkpoint``, and
delete each other's (``max_keep_ckpts``). ``tools/train.py`` takes the lock before the runner
writes anything there (:func:`vheat_mm.mm.tool_config.lock_work_dir`); a second run refuses to
start, in one line naming the other run's pid and host and the lock file. The lock file is a
JSON record of its holder: pid, host, the pid's start time (Linux), start date, command line and
a token. It is removed when the run ends: normally, on an error, on Ctrl-C and on SIGTERM.

- A lock whose pid is no longer alive on this host (a killed run) is taken over, with a warning.
- A lock of another host cannot be checked from here (work_dirs are often on a file system
  shared by several nodes); it counts as live.
- ``take_over`` (``--resume``) starts even when the holder is alive or cannot be checked, with a
  warning: the user says the other run is gone or is to be replaced.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import os.path as osp
import signal
import sys
import threading
import uuid

from mmengine.logging import print_log

from ..liveness import pid_alive, this_host

__all__ = ['LOCK_FILE', 'WorkDirInUse', 'WorkDirLock']

LOCK_FILE = 'train.lock'
_ATTEMPTS = 5  # of taking the lock while other runs take it or remove it at the same moment


class WorkDirInUse(RuntimeError):
    """Another live run holds the work_dir's lock; the message says which and what to do."""


def _process_start(pid: int) -> str | None:
    """When process ``pid`` of this host started (clock ticks after boot, from Linux's
    ``/proc/PID/stat``); None where unknown."""
    try:
        with open(f'/proc/{pid}/stat') as file:
            stat = file.read()
    except OSError:
        return None
    fields = stat.rpartition(')')[2].split()  # from field 3 on; the name may hold spaces
    return fields[19] if len(fields) > 19 else None


class WorkDirLock:
    """The lock of the run in this process on ``work_dir`` (:meth:`acquire`, :meth:`release`;
    ``with`` releases it)."""

    def __init__(self, work_dir: str | os.PathLike) -> None:
        self.work_dir = osp.abspath(os.fspath(work_dir))
        self.path = osp.join(self.work_dir, LOCK_FILE)
        pid = os.getpid()
        self.record = dict(pid=pid, host=this_host(), pid_start=_process_start(pid),
                           started=datetime.datetime.now().isoformat(timespec='seconds'),
                           command=' '.join(sys.argv), token=uuid.uuid4().hex)
        self.held = False
        self._previous_sigterm = None

    # ------------------------------------------------------------------------- holder
    def _read(self) -> tuple[bytes, dict | None] | None:
        """The lock file's bytes and its record (None where it holds none); None if absent."""
        try:
            with open(self.path, 'rb') as file:
                data = file.read()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(data)
        except ValueError:  # UnicodeDecodeError included
            return data, None
        if not (isinstance(record, dict) and isinstance(record.get('pid'), int)
                and isinstance(record.get('host'), str)):
            return data, None
        return data, record

    @staticmethod
    def _holder_alive(record: dict) -> bool | None:
        """Whether the holder runs: None where it cannot be checked (another host)."""
        if record['host'] != this_host():
            return None
        pid = record['pid']
        if not pid_alive(pid):
            return False
        recorded, now = record.get('pid_start'), _process_start(pid)
        if recorded is not None and now is not None:
            return recorded == now  # another start time: the pid was reused
        return pid != os.getpid()  # our own pid, of another start: reused after a restart

    def _describe(self, record: dict | None) -> str:
        if record is None:
            return f'a lock file {self.path} that names no run (not written by tools/train.py?)'
        host = record['host']
        where = ('this host' if host == this_host()
                 else f'host {host}, which cannot be checked from {this_host()}')
        return (f'another training run, pid {record["pid"]} on {where}, started '
                f'{record.get("started", "at an unknown time")} (lock file {self.path})')

    # ------------------------------------------------------------------------- taking, leaving
    def acquire(self, *, take_over: bool = False) -> None:
        """Take the lock; :class:`WorkDirInUse` where a live (or unknown) run holds it, unless
        ``take_over``. Creates the work_dir if needed."""
        os.makedirs(self.work_dir, exist_ok=True)
        for _ in range(_ATTEMPTS):
            try:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                found = self._read()
                if found is not None:
                    self._replace_holder(*found, take_over=take_over)
                continue
            with os.fdopen(descriptor, 'w') as file:
                json.dump(self.record, file)
                file.write('\n')
                file.flush()
                os.fsync(file.fileno())
            self.held = True
            self._release_on_sigterm()
            return
        raise WorkDirInUse(f'could not take the lock file {self.path}: other runs take it or '
                           f'remove it at the same moment')

    def _replace_holder(self, data: bytes, record: dict | None, *, take_over: bool) -> None:
        """Remove the lock file that holds ``data`` where its holder is gone or ``take_over``;
        else raise :class:`WorkDirInUse`."""
        alive = None if record is None else self._holder_alive(record)
        holder = self._describe(record)
        if alive is False:
            message = (f'took over the lock file {self.path} of pid {record["pid"]} on this '
                       f'host, which is no longer alive (a run that was killed)')
        elif take_over:
            message = (f'--resume: {self.work_dir} is in use by {holder}; this run takes over '
                       f'the lock. If that run is still training, the two runs write over each '
                       f'other\'s checkpoints')
        else:
            advice = ('wait for it to end, give another --work-dir, or add --resume to continue '
                      'from its last checkpoint in its place')
            if alive is None:
                advice += f'; if no run uses {self.work_dir}, delete {self.path}'
            raise WorkDirInUse(f'{self.work_dir} is in use by {holder}: {advice}')
        # Rename, then check that the renamed file is the one judged: another run may have
        # replaced it in the meantime, and its lock is put back.
        aside = f'{self.path}.{self.record["token"]}'
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            with open(aside, 'rb') as file:
                if file.read() != data:
                    with contextlib.suppress(FileExistsError):
                        os.link(aside, self.path)
                    return
        finally:
            os.remove(aside)
        print_log(message, logger='current', level=logging.WARNING)

    def release(self) -> None:
        """Remove the lock file if it is still this run's (a run that took it over keeps it)."""
        if not self.held or os.getpid() != self.record['pid']:  # a forked child holds nothing
            return
        self.held = False
        self._restore_sigterm()
        found = self._read()
        if found is not None and found[1] is not None \
                and found[1].get('token') == self.record['token']:
            os.remove(self.path)

    def __enter__(self) -> WorkDirLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------------- SIGTERM
    def _release_on_sigterm(self) -> None:
        """On SIGTERM, release, then let the signal do what it did before (by default: end the
        process, killed by SIGTERM)."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous is signal.SIG_IGN or previous is None:  # ignored, or a handler not of Python
            return
        self._previous_sigterm = previous
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _restore_sigterm(self) -> None:
        previous, self._previous_sigterm = self._previous_sigterm, None
        if previous is not None and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self, signum: int, frame) -> None:
        previous = self._previous_sigterm
        self.release()
        if callable(previous):
            previous(signum, frame)
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
