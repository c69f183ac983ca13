"""Tiny or damaged checkpoints end in one bounded line naming the file, on every path.

- A zip archive with a deflated record of 3 GiB (3 MB on disk) is refused without inflating.
- One changed byte in a tensor record fails the record's CRC-32.
- A key that is not a string is named; one whose repr is exponentially long is cut, and a
  pickle whose shared parts nest deep (a dict key that would take hours to hash) is refused
  before it is unpickled.
- A tensor of 2**40 elements that repeat one stored value (a stride of 0) is checked for NaN
  by its stored value, not by a tensor of its size.

Each case is read by every path that reads checkpoints: read_checkpoint, load_pretrained,
interpolate4downstream.py and, where mmengine is installed, vheat_mm.mm's load_checkpoint.
"""
import collections
import contextlib
import io
import pickle
import re
import struct
import time
import zipfile
import zlib
from pathlib import Path

import importlib.util

import pytest
import torch

from helpers import MINI, ROOT, load_script, one_line_message
from vheat_mm.checkpoint import CheckpointError, load_pretrained, read_checkpoint
from vheat_mm.checkpoint.messages import MAX_SHOWN, cut, shown, shown_keys
from vheat_mm.models import VHeat

interpolate = load_script(ROOT / 'interpolate4downstream.py')
converter = load_script(ROOT / 'tools/model_converters/vheat_to_mmpretrain.py')


@pytest.fixture
def state():
    return VHeat(MINI, img_size=64, num_classes=5).state_dict()


class _Storage:
    """Stands for the storage of the tensor a bomb archive holds."""


_STORAGE = _Storage()


class _Zeros:
    """Pickles as torch.save pickles a uint8 tensor of ``numel`` values in record 0."""

    def __init__(self, numel: int) -> None:
        self.numel = numel

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (_STORAGE, 0, (self.numel,), (1,), False, collections.OrderedDict()))


def tensor_pickle(numel: int) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.persistent_id = lambda obj: (('storage', torch.ByteStorage, '0', 'cpu', numel)
                                         if obj is _STORAGE else None)
    pickler.dump({'weight': _Zeros(numel)})
    return buffer.getvalue()


def write_zip(path: Path, records) -> None:
    """A zip archive of ``(name, chunks, method, crc, uncompressed size)`` records."""
    central = []
    with open(path, 'wb') as file:
        for name, chunks, method, crc, size in records:
            encoded, offset, stored = name.encode(), file.tell(), sum(map(len, chunks))
            file.write(struct.pack('<4s5H3L2H', b'PK\x03\x04', 20, 0, method, 0, 0, crc, stored,
                                   size, len(encoded), 0) + encoded)
            for chunk in chunks:
                file.write(chunk)
            central.append(struct.pack('<4s6H3L5H2L', b'PK\x01\x02', 20, 20, 0, method, 0, 0, crc,
                                       stored, size, len(encoded), 0, 0, 0, 0, 0, offset)
                           + encoded)
        start = file.tell()
        file.write(b''.join(central))
        file.write(struct.pack('<4s4H2LH', b'PK\x05\x06', 0, 0, len(central), len(central),
                               file.tell() - start, start, 0))


def write_deflate_bomb(path: Path, size: int = 3 << 30) -> None:
    """An archive as torch.save lays it out whose tensor of ``size`` zero bytes is one deflated
    record: a deflate segment of 16 MiB of zeros, complete in itself, repeated."""
    block = 1 << 24
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc, zeros = 0, bytes(block)
    for _ in range(size // block):
        crc = zlib.crc32(zeros, crc)
    pkl = tensor_pickle(size)

    def stored(name, data):
        return name, [data], zipfile.ZIP_STORED, zlib.crc32(data), len(data)

    write_zip(path, [stored('archive/data.pkl', pkl), stored('archive/byteorder', b'little'),
                     ('archive/data/0', [segment] * (size // block) + [final],
                      zipfile.ZIP_DEFLATED, crc, size),
                     stored('archive/version', b'3\n')])


def test_a_deflated_record_of_gigabytes_is_refused_without_inflating(tmp_path):
    path = tmp_path / 'bomb.pth'
    write_deflate_bomb(path)
    assert path.stat().st_size < 4 << 20
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert time.perf_counter() - start < 2
    with zipfile.ZipFile(path) as archive:
        stored = archive.getinfo('archive/data/0').compress_size
    assert one_line_message(error) == (
        f"refusing to load {path}: its record 'archive/data/0' is compressed (deflate, {stored} "
        f"bytes that would inflate to 3221225472); torch.save never compresses its records, so "
        f"torch.save did not write this file")


def flip_a_byte(path: Path) -> str:
    """Change the middle byte of the largest tensor record of ``path``; returns its name."""
    with zipfile.ZipFile(path) as archive:
        record = max((r for r in archive.infolist() if '/data/' in r.filename),
                     key=lambda r: r.file_size)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack_from('<HH', data, record.header_offset + 26)
    where = record.header_offset + 30 + name_length + extra_length + record.file_size // 2
    data[where] ^= 0x10
    path.write_bytes(bytes(data))
    return record.filename


def read_by(path: str, how: str) -> None:
    """Read ``path`` the way ``how`` names."""
    if how == 'read_checkpoint':
        read_checkpoint(path)
    elif how == 'load_pretrained':
        load_pretrained(VHeat(MINI, img_size=64, num_classes=5), path)
    elif how == 'vheat_mm.mm load_checkpoint':
        from vheat_mm.mm.runner import load_checkpoint
        load_checkpoint(VHeat(MINI, img_size=64, num_classes=5), path)
    elif how == 'init_cfg':
        from vheat_mm.mm.backbone import VHeatBackbone
        VHeatBackbone(MINI, img_size=64,
                      init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()
    elif how == 'timm pretrained file':
        import timm
        timm.create_model('vheat_tiny', pretrained=True, arch=MINI, img_size=64, num_classes=5,
                          pretrained_cfg_overlay=dict(file=path))
    elif how == 'vheat_to_mmpretrain.py':
        printed = io.StringIO()
        with contextlib.redirect_stderr(printed):
            assert converter.main([path, f'{path}.out']) == 1
        prefix = 'vheat_to_mmpretrain.py: error: '
        assert printed.getvalue().startswith(prefix)
        raise CheckpointError(printed.getvalue()[len(prefix):].strip())
    else:
        try:
            interpolate.main(['--pt_pth', path, '--pt_size', '64', '--tg_pth',
                              f'{path}.out', '--tg_size', '128'])
        except SystemExit as done:
            prefix = 'interpolate4downstream.py: error: '
            assert str(done.code).startswith(prefix)
            raise CheckpointError(str(done.code)[len(prefix):]) from None


PATHS = ['read_checkpoint', 'load_pretrained', 'interpolate4downstream.py',
         'vheat_to_mmpretrain.py'] + \
    (['vheat_mm.mm load_checkpoint', 'init_cfg'] if importlib.util.find_spec('mmengine') else []) \
    + (['timm pretrained file'] if importlib.util.find_spec('timm') else [])


@pytest.mark.parametrize('how', PATHS)
def test_one_changed_byte_fails_the_records_crc(tmp_path, state, how):
    path = tmp_path / 'flipped.pth'
    torch.save({'model': state}, path)
    record = flip_a_byte(path)
    with pytest.raises(CheckpointError) as error:
        read_by(str(path), how)
    assert re.fullmatch(rf'cannot read checkpoint {re.escape(str(path))}: its record '
                        rf"'{re.escape(record)}' does not match its CRC-32 \(listed [0-9a-f]{{8}}, "
                        r'read [0-9a-f]{8}\): the file is damaged .*', one_line_message(error))
    assert not Path(f'{path}.out').exists()


def nested_tuple(depth: int = 26) -> tuple:
    """A tuple whose repr is 2**depth pairs long: each level holds the level below twice."""
    key = ()
    for _ in range(depth):
        key = (key, key)
    return key


@pytest.mark.parametrize('how', PATHS)
@pytest.mark.parametrize('where', ['model entry', 'top level'])
def test_a_key_that_is_not_a_string_is_named(tmp_path, state, how, where):
    path = tmp_path / 'odd_key.pth'
    odd = {'model': {**state, 7: torch.zeros(2)}} if where == 'model entry' \
        else {'model': state, 7: 'notes'}
    torch.save(odd, path)
    with pytest.raises(CheckpointError) as error:
        read_by(str(path), how)
    what = "a key of its 'model' entry" if where == 'model entry' else 'a top-level key'
    assert one_line_message(error) == (f'refusing to load {path}: {what}, 7, is not a string but '
                                       f'of type int (a checkpoint and its state dicts are keyed '
                                       f'by names)')


@pytest.mark.parametrize('how', PATHS)
def test_a_key_whose_repr_is_exponential_is_cut(tmp_path, how):
    path = tmp_path / 'key_bomb.pth'
    torch.save({'model': {nested_tuple(18): torch.zeros(1)}}, path)
    assert path.stat().st_size < 4096
    with pytest.raises(CheckpointError) as error:
        read_by(str(path), how)
    assert one_line_message(error, str(path), "a key of its 'model' entry, ((((((((")
    assert len(str(error.value)) < len(str(path)) + 300


class _DictOf:
    """Pickles as an OrderedDict of one item, without hashing its key while pickling."""

    def __init__(self, key, value) -> None:
        self.item = (key, value)

    def __reduce__(self):
        return (collections.OrderedDict, (), None, None, iter([self.item]))


@pytest.mark.parametrize('how', PATHS)
def test_a_pickle_of_shared_parts_nested_deep_is_refused_before_unpickling(tmp_path, how):
    """Unpickling a dict whose key is such a tuple would hash 2**31 tuples."""
    path = tmp_path / 'hash_bomb.pth'
    torch.save({'model': _DictOf(nested_tuple(30), torch.zeros(1))}, path)
    assert path.stat().st_size < 4096
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as error:
        read_by(str(path), how)
    assert time.perf_counter() - start < 2
    assert re.fullmatch(rf"refusing to load {re.escape(str(path))}: its pickle "
                        r"'hash_bomb/data\.pkl' builds a value of more than \d+ items from \d+ "
                        r'bytes \(the same parts nested in each other: .*\)',
                        one_line_message(error))


def write_repeats(path: Path, value: float, shape: tuple[int, ...]) -> int:
    """A file of about 1 kB whose tensor of ``shape`` repeats one stored ``value`` (an expanded
    view, stride 0); returns the file's size."""
    torch.save({'model': {'weight': torch.full((1,), value).expand(*shape)}}, path)
    assert path.stat().st_size < 4096
    return path.stat().st_size


def test_a_tensor_repeating_its_stored_value_within_the_files_size_is_read_as_it_is(tmp_path):
    path = tmp_path / 'repeats.pth'
    write_repeats(path, 0.5, (16, 16))
    weight = read_checkpoint(path)['model']['weight']
    assert weight.shape == (16, 16) and weight.stride() == (0, 0) and weight[7, 9] == 0.5


@pytest.mark.parametrize('how', PATHS)
def test_a_tensor_declaring_more_than_its_storage_and_the_file_is_refused(tmp_path, how):
    """2**40 elements of one stored value: refused before anything reads or copies it (it
    would ask for 4 TiB), naming the file and the key."""
    path = tmp_path / 'repeats.pth'
    write_repeats(path, 0.5, (2**20, 2**20))
    with pytest.raises(CheckpointError) as error:
        read_by(str(path), how)
    assert one_line_message(error) == (
        f"refusing to load {path}: tensor ['model']['weight'] (1048576, 1048576) declares "
        f"4398046511104 bytes, but its storage holds 4 (an expanded view of a few values: a copy "
        f"of it would allocate them all)")


def test_tensors_declaring_more_than_the_bound_in_all_are_refused_until_it_is_raised(
        tmp_path, state, monkeypatch):
    path = tmp_path / 'model.pth'
    torch.save({'model': state}, path)
    declared = sum(t.numel() * t.element_size() for t in state.values())
    monkeypatch.setenv('VHEAT_MM_MAX_CHECKPOINT_BYTES', str(declared - 1))
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert one_line_message(error).startswith(
        f'refusing to load {path}: its tensors declare more than {declared - 1} bytes in all (at '
        f"['model']")
    assert one_line_message(error).endswith(
        'set VHEAT_MM_MAX_CHECKPOINT_BYTES to a larger number of bytes to read it')
    monkeypatch.setenv('VHEAT_MM_MAX_CHECKPOINT_BYTES', str(declared))
    assert read_checkpoint(path)['model'].keys() == state.keys()
    monkeypatch.setenv('VHEAT_MM_MAX_CHECKPOINT_BYTES', 'lots')
    with pytest.raises(ValueError, match="VHEAT_MM_MAX_CHECKPOINT_BYTES must be a positive "
                                         "number of bytes, got 'lots'"):
        read_checkpoint(path)


@pytest.mark.parametrize('how', PATHS)
def test_a_tensor_repeating_a_stored_nan_is_refused(tmp_path, how):
    path = tmp_path / 'repeats.pth'
    write_repeats(path, float('nan'), (16, 16))
    with pytest.raises(CheckpointError) as error:
        read_by(str(path), how)
    assert one_line_message(error) == (
        f"refusing to load {path}: tensor 'weight' (16, 16) holds 1 NaN or inf value "
        f"(a diverged run or a damaged file?)")


def test_shown_cuts_every_kind_of_value():
    assert shown('weight') == "'weight'" and shown(7) == '7' and shown((1,)) == '(1,)'
    assert shown({'a': torch.zeros(2, 3)}) == "{'a': <Tensor (2, 3) torch.float32>}"
    for value in (nested_tuple(40), 'k' * 10**7, b'\0' * 10**7, 7**100000, list(range(10**6)),
                  {i: (i,) * 100 for i in range(10**4)}):
        start = time.perf_counter()
        text = shown(value)
        assert len(text) <= MAX_SHOWN and text.endswith(('...', '>'))
        assert time.perf_counter() - start < 0.1
    assert shown_keys(['b', 'a']) == "['a', 'b']"
    assert shown_keys(map(str, range(30)), 2) == "['0', '1', ... (30 keys)]"
    assert shown_keys(['b', 'a'], as_list=False) == 'a, b'


FORGING_KEYS = ('x\nINFO - all weights loaded OK', 'y\x1b[2J', 'z\u202egnp.exe', 'w' * 10**5)


def assert_printable(text: str) -> None:
    lines = [line for line in text.splitlines() if line.strip()]
    assert all(line.isprintable() for line in lines), lines
    assert all(len(line) < 10**4 for line in lines)
    assert 'all weights loaded OK' not in [line.partition(' - ')[2] for line in lines]


def test_cut_escapes_what_a_terminal_or_a_log_would_act_on():
    assert cut('a\nb\x1b[2Jc\u202ed\te') == 'a\\nb\\x1b[2Jc\\u202ed\\te'
    assert cut('plain key') == 'plain key'
    assert len(cut('\n' * 1000)) == MAX_SHOWN and cut('\n' * 1000).endswith('...')
    assert shown_keys(['b\n', 'a'], as_list=False) == 'a, b\\n'


def test_keys_that_would_forge_a_log_line_are_shown_escaped(tmp_path, state, caplog, capsys):
    """The load report of load_pretrained and mmengine's list of unexpected keys on
    VHeatRunner's path show a key holding a newline, a terminal escape or a bidi override
    escaped, and a long one cut."""
    path = tmp_path / 'forging.pth'
    torch.save({'model': {**state, **{key: torch.zeros(1) for key in FORGING_KEYS}}}, path)
    with caplog.at_level('INFO'):
        load_pretrained(VHeat(MINI, img_size=64, num_classes=5), path)
    logged = '\n'.join(record.getMessage() for record in caplog.records)
    assert 'x\\nINFO - all weights loaded OK' in logged and 'y\\x1b[2J' in logged
    assert_printable(logged)
    if importlib.util.find_spec('mmengine') is None:
        return
    from vheat_mm.mm.runner import load_checkpoint
    capsys.readouterr()
    load_checkpoint(VHeat(MINI, img_size=64, num_classes=5), str(path))
    printed = ''.join(capsys.readouterr())
    assert 'y\\x1b[2J' in printed
    assert_printable(printed)


@pytest.mark.parametrize('how', [how for how in PATHS if how != 'read_checkpoint'])
def test_a_state_dict_that_is_not_a_mapping_is_named_with_the_file(tmp_path, how):
    path = tmp_path / 'listed.pth'
    torch.save({'state_dict': [1, 2, 3]}, path)
    with pytest.raises(CheckpointError) as error:
        read_by(str(path), how)
    message = one_line_message(error)
    assert str(path) in message and "'state_dict'" in message


def test_an_expanded_tensor_is_refused_within_a_memory_limit(tmp_path):
    """Under an 8 GiB address-space limit (resource.setrlimit, in a child process), a 1 kB file
    declaring 8 GiB of one repeated value is refused by every reader in one line, while a copy
    of that tensor cannot even be allocated there."""
    import resource
    import subprocess
    import sys

    path = tmp_path / 'expanded.pth'
    torch.save({'model': {'weight': torch.zeros(1).expand(2**31)}}, path)
    code = f'''
import sys, torch
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
from helpers import MINI
from vheat_mm.checkpoint import CheckpointError, load_pretrained, read_checkpoint
from vheat_mm.models import VHeat
readers = [read_checkpoint, lambda p: load_pretrained(VHeat(MINI, img_size=64), p)]
try:
    from vheat_mm.mm.runner import load_checkpoint
    readers.append(lambda p: load_checkpoint(VHeat(MINI, img_size=64), p))
except ImportError:
    pass
for read in readers:
    try:
        read({str(path)!r})
    except CheckpointError as err:
        print('refused:', str(err).splitlines()[0].endswith('would allocate them all)'))
try:
    torch.zeros(1).expand(2**31).clone()
except RuntimeError:
    print('a copy cannot be allocated')
'''

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    done = subprocess.run([sys.executable, '-c', code], preexec_fn=limit_memory,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == 'a copy cannot be allocated'
    assert len(lines) >= 3 and all(line == 'refused: True' for line in lines[:-1])
