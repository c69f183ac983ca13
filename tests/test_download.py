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


def test_a_release_records_sha256_is_checked(served, tmp_path, monkeypatch):
    """An official release whose record (vheat_mm/variants.py) states its sha256 must match it."""
    server, digest = served
    url = server.url('payload.pth')
    monkeypatch.setitem(download.RELEASE_SHA256, url, 'f' * 64)
    with pytest.raises(CheckpointError, match=re.escape(f'not the expected {"f" * 64}')):
        cached_download(url, str(tmp_path / 'cache'))
    assert list((tmp_path / 'cache').iterdir()) == []
    monkeypatch.setitem(download.RELEASE_SHA256, url, digest)
    assert Path(cached_download(url, str(tmp_path / 'cache'))).is_file()


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
    """Serves ``files`` (URL path -> bytes, whatever the query) on 127.0.0.1 with their
    Content-Length; ``cut`` (URL path -> n) closes the connection after n bytes, ``types`` sets a
    Content-Type, ``drip`` (URL path -> s) sends one byte every s seconds, and a path in
    ``no_length`` is sent without Content-Length (until the connection closes)."""

    def __init__(self):
        self.files, self.cut, self.types, self.counts = {}, {}, {}, Counter()
        self.drip, self.no_length = {}, set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.partition('?')[0]
                outer.counts[path] += 1
                body = outer.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header('Content-Type',
                                 outer.types.get(path, 'application/octet-stream'))
                if path not in outer.no_length:
                    self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                body = body[:outer.cut.get(path, len(body))]
                try:
                    if path in outer.drip:
                        for index in range(len(body)):
                            self.wfile.write(body[index:index + 1])
                            self.wfile.flush()
                            time.sleep(outer.drip[path])
                    else:
                        self.wfile.write(body)
                except OSError:  # the client gave up
                    pass
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


def test_a_download_that_passes_its_deadline_is_stopped_and_not_kept(server, tmp_path,
                                                                     monkeypatch):
    """One byte every 0.2 s never stalls a read for the per-read timeout, but the whole
    transfer has a deadline."""
    server.files['/slow.pth'], server.drip['/slow.pth'] = _checkpoint(1.0), 0.2
    monkeypatch.setenv('VHEAT_MM_DOWNLOAD_DEADLINE_S', '1')
    cache, url = tmp_path / 'cache', server.url('/slow.pth')
    start = time.monotonic()
    with pytest.raises(CheckpointError) as error:
        cached_download(url, str(cache))
    assert time.monotonic() - start < 10
    assert re.fullmatch(rf'{re.escape(url)}: the download passed its deadline of 1 s after \d+ '
                        r'bytes \(set VHEAT_MM_DOWNLOAD_DEADLINE_S to allow more\); the partial '
                        r'file was not kept', str(error.value))
    assert list(cache.iterdir()) == []


def test_the_deadline_follows_the_size_and_the_variables(monkeypatch):
    assert download.download_bounds(100_000_000) == (240.0, 100_000_000)
    assert download.download_bounds(None) == (60 + 180 * 4 * 2**30 / 100e6, 4 * 2**30)
    monkeypatch.setenv('VHEAT_MM_DOWNLOAD_DEADLINE_S', '30')
    monkeypatch.setenv('VHEAT_MM_DOWNLOAD_MAX_BYTES', '1000')
    assert download.download_bounds(None) == (30.0, 1000)
    assert download.download_bounds(5000) == (30.0, 5000)  # Content-Length is the bound
    monkeypatch.setenv('VHEAT_MM_DOWNLOAD_DEADLINE_S', '-1')
    with pytest.raises(ValueError, match="VHEAT_MM_DOWNLOAD_DEADLINE_S must be a positive "
                                         "number, got '-1'"):
        download.download_bounds(None)


def test_a_body_without_length_beyond_the_bound_is_stopped_and_not_kept(server, tmp_path,
                                                                        monkeypatch):
    body = _checkpoint(1.0)
    server.files['/endless.pth'] = body
    server.no_length.add('/endless.pth')
    monkeypatch.setenv('VHEAT_MM_DOWNLOAD_MAX_BYTES', str(len(body) - 1))
    cache, url = tmp_path / 'cache', server.url('/endless.pth')
    with pytest.raises(CheckpointError) as error:
        cached_download(url, str(cache))
    assert str(error.value) == (
        f'{url}: the server sent more than {len(body) - 1} bytes, the most read without a '
        f'Content-Length (set VHEAT_MM_DOWNLOAD_MAX_BYTES to read more); the partial file was '
        f'not kept')
    assert list(cache.iterdir()) == []
    monkeypatch.setenv('VHEAT_MM_DOWNLOAD_MAX_BYTES', str(len(body)))
    assert _value(cached_download(url, str(cache))) == 1.0


def test_a_temporary_file_of_a_killed_download_is_removed_by_the_next(server, tmp_path):
    """SIGTERM or SIGKILL leave the temporary file; the next download of that file removes it
    where its process is gone, and leaves another file's and a live process's."""
    import subprocess
    import sys

    server.files['/w.pth'] = _checkpoint(1.0)
    cache, url = tmp_path / 'cache', server.url('/w.pth')
    cache.mkdir()
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    cached = Path(cached_download(url, str(tmp_path / 'probe'))).name  # the cache's file name
    host = download.temporary_files.__globals__['_encode_host'](
        download.temporary_files.__globals__['this_host']())
    leftover = cache / f'.{cached}.{host}.{pid}.0123456789abcdef.tmp'
    alive = cache / f'.{cached}.{host}.{os.getppid()}.0123456789abcdef.tmp'
    other = cache / f'.other.pth.{host}.{pid}.0123456789abcdef.tmp'
    for path in (leftover, alive, other):
        path.write_bytes(b'partial')
    assert _value(cached_download(url, str(cache))) == 1.0
    assert not leftover.exists() and alive.exists() and other.exists()


def test_no_secret_of_the_url_reaches_the_record_or_the_log(server, tmp_path, caplog):
    server.files['/w.pth'] = _checkpoint(1.0)
    assert download.shown_url('https://user:PASSWORD@example.org:8443/w.pth?token=SECRET#x') \
        == 'https://example.org:8443/w.pth (query not shown)'
    url = server.url('/w.pth') + '?token=SECRET'
    with caplog.at_level('INFO', logger='vheat_mm'):
        path = cached_download(url, str(tmp_path / 'cache'))
    record = Path(f'{path}.sha256').read_text()
    logged = '\n'.join(r.getMessage() for r in caplog.records)
    assert '/w.pth (query not shown)' in record and '/w.pth (query not shown)' in logged
    assert 'SECRET' not in record and 'SECRET' not in logged and 'SECRET' not in path
    server.files['/w.pth'] = b'<html>changed</html>'
    Path(path).unlink()
    with pytest.raises(CheckpointError) as error:
        cached_download(url, str(tmp_path / 'cache'))
    assert 'SECRET' not in str(error.value)
