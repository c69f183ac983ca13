"""Downloads a user can trust, against a local HTTP server: hash checks on download and on
every use, no partial or refused file kept, one cached file per URL, and one download for all
ranks of a distributed run."""
from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import CountingServer
from vheat_mm.checkpoint import PRETRAINED_URLS, CheckpointError, cached_download, read_checkpoint
from vheat_mm.checkpoint import download


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
    assert Path(path).name == f'vHeat_tiny-{digest[:10]}.pth'  # torch hub's name: its hash
    cached_download(server.url(f'vHeat_tiny-{digest[:10]}.pth'), str(cache))
    assert server.counts[f'/vHeat_tiny-{digest[:10]}.pth'] == 1  # read from the cache after

    bad = server.url('vHeat_tiny-0123456789.pth')
    with pytest.raises(CheckpointError) as error:
        cached_download(bad, str(cache))
    message = str(error.value)
    assert message.startswith(bad) and digest in message and '0123456789' in message
    name = Path(path).name
    assert sorted(p.name for p in cache.iterdir()) == [name, f'{name}.sha256']


def test_explicit_sha256_is_checked(served, tmp_path):
    server, digest = served
    url = server.url('payload.pth')
    with pytest.raises(CheckpointError, match=re.escape(f'not the expected {"f" * 64}')):
        cached_download(url, str(tmp_path / 'cache'), sha256='f' * 64)
    assert list((tmp_path / 'cache').iterdir()) == []
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


# ----------------------------------------------------------------------------- a server to vary
class Server:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1 with their Content-Length; ``cut`` (URL
    path -> n) closes the connection after n bytes, ``types`` sets a Content-Type."""

    def __init__(self):
        self.files, self.cut, self.types, self.counts = {}, {}, {}, Counter()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.counts[self.path] += 1
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header('Content-Type',
                                 outer.types.get(self.path, 'application/octet-stream'))
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body[:outer.cut.get(self.path, len(body))])
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f'http://127.0.0.1:{self.server.server_address[1]}{path}'

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server():
    serving = Server()
    yield serving
    serving.close()


def _checkpoint(value: float, size: int = 20000) -> bytes:
    buffer = io.BytesIO()
    torch.save(dict(model={'w': torch.full((size,), value)}), buffer)
    return buffer.getvalue()


def _value(path: str) -> float:
    return read_checkpoint(path)['model']['w'][0].item()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_cut_transfer_is_not_kept(server, tmp_path):
    body = _checkpoint(1.0)
    server.files['/w.pth'], server.cut['/w.pth'] = body, len(body) // 3
    cache = tmp_path / 'cache'
    url = server.url('/w.pth')
    with pytest.raises(CheckpointError) as error:
        cached_download(url, str(cache))
    assert str(error.value).startswith(url)
    assert f'stopped after {len(body) // 3} of its {len(body)} bytes' in str(error.value)
    assert list(cache.iterdir()) == []  # no file under the final name, no temporary, no record
    del server.cut['/w.pth']  # the next run downloads again
    assert _value(cached_download(url, str(cache))) == 1.0
    assert server.counts['/w.pth'] == 2


def test_html_page_is_refused_and_not_kept(server, tmp_path):
    server.files['/w.pth'] = b'<!DOCTYPE html><html><body>502 Bad Gateway</body></html>\n'
    server.types['/w.pth'] = 'text/html; charset=utf-8'
    cache = tmp_path / 'cache'
    url = server.url('/w.pth')
    with pytest.raises(CheckpointError) as error:
        cached_download(url, str(cache))
    message = str(error.value)
    assert url in message and 'text/html' in message and 'not kept' in message
    assert '.tmp' not in message and '\n' not in message
    assert list(cache.iterdir()) == []
    server.files['/w.pth'], server.types['/w.pth'] = _checkpoint(2.0), 'application/octet-stream'
    assert _value(cached_download(url, str(cache))) == 2.0


def test_two_urls_with_one_file_name_get_two_files(server, tmp_path):
    server.files['/a/best.pth'], server.files['/b/best.pth'] = _checkpoint(1.0), _checkpoint(2.0)
    cache = str(tmp_path / 'cache')
    first = cached_download(server.url('/a/best.pth'), cache)
    second = cached_download(server.url('/b/best.pth'), cache)
    assert first != second and _value(first) == 1.0 and _value(second) == 2.0
    assert Path(first).name.startswith('best.') and Path(first).suffix == '.pth'
    assert cached_download(server.url('/a/best.pth'), cache) == first
    assert server.counts == {'/a/best.pth': 1, '/b/best.pth': 1}


def test_a_file_the_server_changed_is_not_taken_silently(server, tmp_path):
    old, new = _checkpoint(1.0), _checkpoint(2.0)
    server.files['/w.pth'] = old
    cache = tmp_path / 'cache'
    url = server.url('/w.pth')
    path = Path(cached_download(url, str(cache)))
    server.files['/w.pth'] = new
    assert _value(cached_download(url, str(cache))) == 1.0  # the cached file, checked
    assert server.counts['/w.pth'] == 1
    path.unlink()
    with pytest.raises(CheckpointError) as error:
        cached_download(url, str(cache))
    message = str(error.value)
    assert message.startswith(url) and _sha(new) in message and _sha(old) in message
    assert f'{path}.sha256' in message and 'not kept' in message
    assert [p.name for p in cache.iterdir()] == [f'{path.name}.sha256']
    Path(f'{path}.sha256').unlink()  # accepting the new file
    assert _value(cached_download(url, str(cache))) == 2.0


@pytest.mark.parametrize('edit', ['rewritten', 'same size and times'])
def test_a_cached_file_changed_after_its_download_is_refused(server, tmp_path, edit):
    body = _checkpoint(1.0)
    server.files['/w.pth'] = body
    url = server.url('/w.pth')
    path = Path(cached_download(url, str(tmp_path / 'cache')))
    edited = _checkpoint(3.0)
    assert len(edited) == len(body)
    if edit == 'rewritten':
        path.write_bytes(edited)
    else:  # the record is old enough to be trusted while size, mtime, ctime and inode hold
        later = time.time_ns() + 10**10
        os.utime(f'{path}.sha256', ns=(later, later))
        before = path.stat()
        time.sleep(0.05)  # past the file system's timestamp tick
        with open(path, 'r+b') as file:
            file.write(edited)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert path.stat().st_size == before.st_size
        assert path.stat().st_mtime_ns == before.st_mtime_ns
    with pytest.raises(CheckpointError) as error:
        cached_download(url, str(tmp_path / 'cache'))
    message = str(error.value)
    assert message.startswith(str(path)) and _sha(edited) in message and _sha(body) in message
    assert f'delete {path}' in message
    path.unlink()
    assert _value(cached_download(url, str(tmp_path / 'cache'))) == 1.0
    assert server.counts['/w.pth'] == 2


def test_an_unchanged_file_is_rehashed_only_while_its_record_is_fresh(server, tmp_path,
                                                                       monkeypatch):
    server.files['/w.pth'] = _checkpoint(1.0)
    url = server.url('/w.pth')
    path = cached_download(url, str(tmp_path / 'cache'))
    hashed = []
    hash_file = download._hash_file
    monkeypatch.setattr(download, '_hash_file', lambda p: hashed.append(p) or hash_file(p))
    cached_download(url, str(tmp_path / 'cache'))
    assert hashed == [path]  # the record was written just after the file
    later = time.time_ns() + 10**10
    os.utime(f'{path}.sha256', ns=(later, later))
    cached_download(url, str(tmp_path / 'cache'))
    assert hashed == [path]


def test_a_known_sha256_is_checked_on_every_use(server, tmp_path):
    body = _checkpoint(1.0)
    server.files['/w.pth'] = body
    url = server.url('/w.pth')
    path = cached_download(url, str(tmp_path / 'cache'))
    assert cached_download(url, str(tmp_path / 'cache'), sha256=_sha(body)[:12]) == path
    with pytest.raises(CheckpointError) as error:
        cached_download(url, str(tmp_path / 'cache'), sha256='f' * 64)
    message = str(error.value)
    assert message.startswith(path) and _sha(body) in message and 'f' * 64 in message
    assert f'delete {path}' in message


def test_a_cached_file_without_record_is_used_if_it_reads(server, tmp_path, monkeypatch):
    """The release keeps its bare name: a copy another tool put in the cache is used and
    recorded; one an interrupted download left there is downloaded again."""
    monkeypatch.setitem(PRETRAINED_URLS, 'tiny', server.url('/vheatcls/vHeat_tiny.pth'))
    body = _checkpoint(1.0)
    server.files['/vheatcls/vHeat_tiny.pth'] = body
    cache = tmp_path / 'cache'
    cache.mkdir()
    (cache / 'vHeat_tiny.pth').write_bytes(body)
    path = cached_download(PRETRAINED_URLS['tiny'], str(cache))
    assert path == str(cache / 'vHeat_tiny.pth') and server.counts['/vheatcls/vHeat_tiny.pth'] == 0
    record = (cache / 'vHeat_tiny.pth.sha256').read_text()
    assert record.startswith(f'{_sha(body)}  vHeat_tiny.pth\n')

    (cache / 'vHeat_tiny.pth.sha256').unlink()
    (cache / 'vHeat_tiny.pth').write_bytes(body[:len(body) // 3])
    assert _value(cached_download(PRETRAINED_URLS['tiny'], str(cache))) == 1.0
    assert server.counts['/vheatcls/vHeat_tiny.pth'] == 1
