"""Downloads a user can trust, against a local HTTP server: hash checks, no partial files, and
one download for all ranks of a distributed run."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import CountingServer
from vheat_mm.checkpoint import CheckpointError, cached_download


@pytest.fixture
def served(tmp_path):
    """A checkpoint served under a name carrying its sha256 prefix, and one with a wrong one."""
    root = tmp_path / 'www'
    root.mkdir()
    payload = root / 'payload.pth'
    torch.save(dict(model={'w': torch.arange(1000.0)}), payload)
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    (root / f'vHeat_tiny-{digest[:10]}.pth').write_bytes(payload.read_bytes())
    (root / 'vHeat_tiny-0123456789.pth').write_bytes(payload.read_bytes())
    with CountingServer(root) as server:
        yield server, digest


def test_hash_in_the_name_is_checked(served, tmp_path):
    server, digest = served
    cache = tmp_path / 'cache'
    path = cached_download(server.url(f'vHeat_tiny-{digest[:10]}.pth'), str(cache))
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    cached_download(server.url(f'vHeat_tiny-{digest[:10]}.pth'), str(cache))
    assert server.counts[f'/vHeat_tiny-{digest[:10]}.pth'] == 1  # read from the cache after

    bad = server.url('vHeat_tiny-0123456789.pth')
    with pytest.raises(CheckpointError) as error:
        cached_download(bad, str(cache))
    message = str(error.value)
    assert message.startswith(bad) and digest in message and '0123456789' in message
    assert sorted(p.name for p in cache.iterdir()) == [f'vHeat_tiny-{digest[:10]}.pth']


def test_explicit_sha256_is_checked(served, tmp_path):
    server, digest = served
    url = server.url('payload.pth')
    with pytest.raises(CheckpointError, match=re.escape(f'not the expected {"f" * 64}')):
        cached_download(url, str(tmp_path / 'cache'), sha256='f' * 64)
    assert not (tmp_path / 'cache' / 'payload.pth').exists()
    assert Path(cached_download(url, str(tmp_path / 'cache'), sha256=digest)).is_file()


def _rank(rank: int, url: str, cache: str, init: str, results) -> None:
    dist.init_process_group('gloo', init_method=init, rank=rank, world_size=2)
    try:
        path = cached_download(url, cache)
        results[rank] = torch.load(path, weights_only=True)['model']['w'].sum().item()
    finally:
        dist.destroy_process_group()


def test_two_ranks_download_once(served, tmp_path):
    server, digest = served
    name = f'vHeat_tiny-{digest[:10]}.pth'
    results = mp.get_context('spawn').Manager().dict()
    mp.spawn(_rank, args=(server.url(name), str(tmp_path / 'cache'),
                          f'file://{tmp_path / "init"}', results), nprocs=2)
    assert dict(results) == {0: 499500.0, 1: 499500.0}
    assert server.counts[f'/{name}'] == 1
