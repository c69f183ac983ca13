import os
from pathlib import Path

import pytest
import torch

from helpers import load_script  # noqa: F401  (test modules import it from here too)

if not torch.cuda.is_available():
    # Triton kernels run on CPU tensors through Triton's interpreter (tests/test_kernels.py);
    # it must be chosen before Triton is first imported.
    os.environ.setdefault('TRITON_INTERPRET', '1')

DATA = Path(__file__).parent / 'data'


@pytest.fixture(scope='session')
def official_mini():
    """Official vHeat outputs on a small model (see tests/data/README.md)."""
    return torch.load(DATA / 'vheat_official_mini.pt', weights_only=True)


def mini_arch(config: dict) -> dict:
    """The arch dict of an official constructor config."""
    return {k: config[k] for k in ('depths', 'dims', 'post_norm', 'layer_scale')}


MINI = dict(depths=(1, 1, 2, 1), dims=8, post_norm=False, layer_scale=None)
MINI_POST = dict(depths=(1, 1, 2, 1), dims=8, post_norm=True, layer_scale=1e-5)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


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
}


def write_damaged_checkpoint(path: Path, kind: str, checkpoint: dict) -> None:
    """Write a file of one of the :data:`DAMAGED_FILES` kinds to ``path``: ``checkpoint`` saved
    and cut short, random bytes, a zip archive that torch.save did not write, or nothing."""
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
    else:
        raise ValueError(f'unknown kind {kind!r}; choose one of {sorted(DAMAGED_FILES)}')
