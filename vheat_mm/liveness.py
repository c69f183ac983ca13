"""Whether the process that left a file behind is still running: its host and its pid.

Both the temporary files of an atomic write (:mod:`vheat_mm.checkpoint.atomic`) and a work
directory's lock (:mod:`vheat_mm.mm.work_dir_lock`) name their writer by host and pid; a writer
is known to be gone only where its host is this one and its pid is no longer alive.
"""
from __future__ import annotations

import os
import socket

__all__ = ['pid_alive', 'this_host']


def this_host() -> str:
    """This machine's host name (``socket.gethostname()``)."""
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (another user's counts; so does a zombie).

    Only on POSIX systems can this be asked without touching the process; elsewhere every pid
    counts as alive.
    """
    if os.name != 'posix':
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True
