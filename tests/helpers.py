"""Test code shared by several test modules (fixtures stay in conftest.py)."""
from __future__ import annotations

import http.server
import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
import torch

__all__ = ['ROOT', 'CONFIGS', 'DATA', 'DAMAGED_FILES', 'MINI', 'MINI_POST', 'TOOL_TIMEOUT',
           'CountingServer', 'as_tuple', 'free_port', 'load_script', 'mini_arch',
           'one_line_message', 'python_tool', 'rel_error', 'remove_checkpoints', 'run_fresh',
           'run_tool', 'synthetic_shapes', 'write_config', 'write_crafted_checkpoint',
           'write_damaged_checkpoint']

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
DATA = ROOT / 'tests' / 'data'
TOOL_TIMEOUT = 420  # seconds for one tool run on tiny data; a whole run takes well under a minute


def load_script(path: Path) -> ModuleType:
    """Import a file that is not part of a package (a tools/ or demo/ script, hubconf.py) by its
    path, as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_shapes() -> ModuleType:
    """``tools/synthetic_shapes.py``: the generated "shapes" datasets and ``SHAPE_CLASSES``."""
    return load_script(ROOT / 'tools' / 'synthetic_shapes.py')


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- tool runs
def _tail(text: str | bytes | None, lines: int = 40) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors='replace')
    return '\n'.join((text or '').splitlines()[-lines:])


def run_tool(*args: str | os.PathLike, timeout: float = TOOL_TIMEOUT, env: dict | None = None,
             returncode: int = 0) -> subprocess.CompletedProcess:
    """Run a command in the repository root with the repository on PYTHONPATH; it must exit with
    ``returncode`` (success unless told; a negative code is a signal's number).

    On failure or timeout the assertion message holds the tails of stdout and stderr.
    """
    command = [str(arg) for arg in args]
    environ = dict(os.environ, **(env or {}))
    environ['PYTHONPATH'] = os.pathsep.join(
        [str(ROOT)] + ([environ['PYTHONPATH']] if environ.get('PYTHONPATH') else []))
    try:
        done = subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f'{" ".join(command)} ran past {timeout} s\n--- stdout\n{_tail(err.stdout)}'
                    f'\n--- stderr\n{_tail(err.stderr)}')
    assert done.returncode == returncode, (
        f'{" ".join(command)} exited with {done.returncode}, not {returncode}\n'
        f'--- stdout\n{_tail(done.stdout)}\n--- stderr\n{_tail(done.stderr)}')
    return done


def run_fresh(code: str, timeout: float = TOOL_TIMEOUT) -> dict:
    """Run ``code`` (dedented) in a new interpreter, as :func:`run_tool` runs a command; it prints
    one JSON object last, returned here."""
    done = run_tool(sys.executable, '-c', textwrap.dedent(code), timeout=timeout)
    return json.loads(done.stdout.strip().splitlines()[-1])


def python_tool(script: str, *args: str | os.PathLike, **kwargs) -> subprocess.CompletedProcess:
    """:func:`run_tool` for ``script`` (a path in the repository) with this Python."""
    return run_tool(sys.executable, ROOT / script, *args, **kwargs)


def one_line_message(error: pytest.ExceptionInfo, *names: str) -> str:
    """The message of ``error``: one line of bounded length that holds each of ``names``."""
    message = str(error.value)
    assert '\n' not in message and len(message) < 2000, message[:2000]
    for name in names:
        assert name in message, message
    return message


# The head of a config of a tiny vHeat classifier with the project's ImageNet recipe, on 32x32
# images of 3 classes, for tools/train.py; the tests append their loops and hooks and format
# it with base, data and classes ({imports}: the custom_imports, a Python list).
TINY_CLASSIFIER = '''\
_base_ = '{base}'
custom_imports = dict(imports={imports}, allow_failed_imports=False)
data_root = '{data}'
metainfo = dict(classes={classes})
data_preprocessor = dict(num_classes=3)
model = dict(
    backbone=dict(arch=dict(_delete_=True, depths=[1, 1, 2, 1], dims=8), img_size=32,
                  drop_path_rate=0.0),
    head=dict(num_classes=3, in_channels=64),
    train_cfg=None)  # no Mixup / CutMix
pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]  # 32x32 images as they are
'''


def tiny_classifier(imports: list[str], rest: str) -> str:
    """A config template: :data:`TINY_CLASSIFIER` importing ``imports``, then ``rest``."""
    return TINY_CLASSIFIER.replace('{imports}', repr(imports)) + rest


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def remove_checkpoints(directory: Path) -> None:
    """Delete the .pth files under ``directory`` (hundreds of MB each; pytest keeps tmp dirs)."""
    for path in directory.rglob('*.pth'):
        path.unlink()


def as_tuple(out: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A model's output as a tuple: the classifier's logits alone, or the backbone's features."""
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """|out - ref| / |ref| (Frobenius norms), computed in float64."""
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


class CountingServer:
    """Serves a folder on 127.0.0.1 and counts the GET requests per path."""

    def __init__(self, root: Path):
        counts = self.counts = Counter()

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                counts[self.path] += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f'http://127.0.0.1:{self.server.server_address[1]}/{name}'

    def __enter__(self) -> CountingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def mini_arch(config: dict) -> dict:
    """The arch dict of an official constructor config."""
    return {k: config[k] for k in ('depths', 'dims', 'post_norm', 'layer_scale')}


MINI = dict(depths=(1, 1, 2, 1), dims=8, post_norm=False, layer_scale=None)
MINI_POST = dict(depths=(1, 1, 2, 1), dims=8, post_norm=True, layer_scale=1e-5)


class FileCreatingPayload:
    """Pickles as ``open(path, 'w')``: loading it without weights_only creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


def write_crafted_checkpoint(path: Path, checkpoint: dict) -> Path:
    """Save ``checkpoint`` plus a pickled payload to ``path``; return the file the payload would
    create (next to ``path``) if the checkpoint were ever loaded without weights_only."""
    marker = path.with_name(f'{path.stem}_payload_ran')
    torch.save(dict(checkpoint, extra=FileCreatingPayload(marker)), path)
    assert not marker.exists()
    return marker


# Files torch.load cannot read, and what read_checkpoint says about each (after the path).
DAMAGED_FILES = {
    'truncated': 'the zip archive is truncated (an interrupted download or copy?); expected a '
                 'complete file written by torch.save',
    'random_bytes': 'it is neither a zip archive (what torch.save writes) nor a readable legacy '
                    'torch file',
    'zip_not_torch': 'a zip archive without data.pkl, not written by torch.save (it holds '
                     'notes.txt, weights.bin)',
    'empty': 'the file is empty; expected a complete file written by torch.save',
    # never opened: a FIFO would block the read, /dev/zero never ends
    'directory': 'it is a directory, not a file written by torch.save',
    'fifo': 'it is a FIFO (named pipe), not a file written by torch.save',
    'link_to_dev_zero': 'it is a device (a link to /dev/zero), not a file written by torch.save',
}


def write_damaged_checkpoint(path: Path, kind: str, checkpoint: dict) -> None:
    """Write a file of one of the :data:`DAMAGED_FILES` kinds to ``path``: ``checkpoint`` saved
    and cut short, random bytes, a zip archive that torch.save did not write, nothing, or in
    place of a file a directory, a FIFO or a link to /dev/zero."""
    import zipfile
    if kind == 'truncated':
        torch.save(checkpoint, path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == 'random_bytes':
        generator = torch.Generator().manual_seed(0)
        path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=generator).tolist()))
    elif kind == 'zip_not_torch':
        with zipfile.ZipFile(path, 'w') as archive:
            archive.writestr('notes.txt', 'not a checkpoint')
            archive.writestr('weights.bin', bytes(64))
    elif kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'directory':
        path.mkdir()
    elif kind == 'fifo':
        os.mkfifo(path)
    elif kind == 'link_to_dev_zero':
        path.symlink_to('/dev/zero')
    else:
        raise ValueError(f'unknown kind {kind!r}; choose one of {sorted(DAMAGED_FILES)}')
