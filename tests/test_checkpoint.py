"""Reading and converting checkpoints: layouts, prefixes, freq_embed resizing, clear errors.

Reading: what torch.save writes (tensors, parameters, state dicts, dtypes, bytes, sets, numpy
arrays and scalars under numpy 1.x's and 2.x's names, in pickle protocols 2, 4 and 5, zip and
legacy files) and what mmengine's runner writes are read as they were saved; a pickle that asks
for any other global (os.system through REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX or the EXT
opcodes), calls an allowed one as no checkpoint does, or changes a class is refused in one line
naming what it asks for.
"""
import argparse
import codecs
import collections
import copyreg
import os
import re
import sys
import tarfile

import pytest
import torch

from checkpoint_files import rewrite_pickle, write_pickle_archive, write_runner_checkpoint
from helpers import (DAMAGED_FILES, MINI, CountingServer, one_line_message,
                     write_crafted_checkpoint, write_damaged_checkpoint)
from vheat_mm.checkpoint import (CheckpointError, checkpoint_filter_fn, load_pretrained,
                                 official_to_mmpretrain, read_checkpoint)
from vheat_mm.models import VHeat, VHeatFeatures, resize_freq_embed


@pytest.fixture
def classifier_state():
    return VHeat(MINI, img_size=64, num_classes=5).state_dict()


def layouts(state):
    return {
        'official': {'model': state, 'epoch': 3},
        'mmengine': {'meta': {'epoch': 1}, 'state_dict': {f'backbone.{k}': v for k, v in state.items()}},
        'mmengine_bare': {'state_dict': state},
        'plain': state,
        'ddp': {f'module.{k}': v for k, v in state.items()},
    }


@pytest.mark.parametrize('layout', ['official', 'mmengine', 'mmengine_bare', 'plain', 'ddp'])
def test_every_layout_loads_with_freq_embed_resized(tmp_path, classifier_state, layout):
    path = tmp_path / 'ckpt.pth'
    torch.save(layouts(classifier_state)[layout], path)
    model = VHeatFeatures(MINI, img_size=96)
    report = load_pretrained(model, path)
    assert len(report.resized) == 4 and 'freq_embed.0 (16, 16, 8) -> (24, 24, 8)' in report.resized
    assert report.unexpected == ['classifier.0.bias', 'classifier.0.weight', 'classifier.3.bias',
                                 'classifier.3.weight']
    assert report.missing == [f'outnorm{i}.{p}' for i in range(4) for p in ('bias', 'weight')]
    own = model.state_dict()
    torch.testing.assert_close(own['freq_embed.2'],
                               resize_freq_embed(classifier_state['freq_embed.2'], (6, 6)))
    torch.testing.assert_close(own['layers.2.1.op.to_k.0.weight'],
                               classifier_state['layers.2.1.op.to_k.0.weight'])


def test_prefix_selects_and_strips(tmp_path, classifier_state):
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': {f'model.encoder.{k}': v for k, v in classifier_state.items()}}, path)
    model = VHeat(MINI, img_size=64, num_classes=5)
    report = load_pretrained(model, path, prefix='model.encoder', strict=True)
    assert not report.missing and not report.unexpected and not report.resized
    with pytest.raises(CheckpointError, match="no key starts with 'decoder.'"):
        load_pretrained(model, path, prefix='decoder')


def test_timms_filter_leaves_its_input_untouched_and_the_resize_to_the_model(classifier_state):
    before = {k: v.clone() for k, v in classifier_state.items()}
    model = VHeat(MINI, img_size=128, num_classes=5)
    out = checkpoint_filter_fn({'model': classifier_state}, model)
    assert out['freq_embed.0'].shape == (16, 16, 8)  # the model's load hook resizes it
    assert all(torch.equal(before[k], classifier_state[k]) for k in before)
    model.load_state_dict(out)
    assert model.freq_embed[0].shape == (32, 32, 8)


def test_official_keys_map_to_mmpretrain(classifier_state):
    converted = official_to_mmpretrain(classifier_state)
    assert len(converted) == len(classifier_state)
    assert converted['backbone.outnorm3.weight'] is classifier_state['classifier.0.weight']
    assert converted['head.fc.bias'] is classifier_state['classifier.3.bias']
    assert converted['backbone.freq_embed.0'] is classifier_state['freq_embed.0']
    assert not [k for k in converted if k.startswith('backbone.classifier')]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        load_pretrained(VHeat(MINI, img_size=64), tmp_path / 'nowhere.pth')


@pytest.mark.parametrize('kind', sorted(DAMAGED_FILES))
def test_unreadable_file_says_why_in_one_line(tmp_path, classifier_state, kind):
    path = tmp_path / 'damaged.pth'
    write_damaged_checkpoint(path, kind, {'model': classifier_state})
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f'cannot read checkpoint {path}: ')
    assert DAMAGED_FILES[kind] in message and '\n' not in message


def test_tensors_of_another_shape_are_named_and_not_loaded(tmp_path, classifier_state):
    """A new head (7 classes where the checkpoint has 5): the rest loads, as on every path."""
    path = tmp_path / 'other.pth'
    torch.save({'model': classifier_state}, path)
    model = VHeat(MINI, img_size=64, num_classes=7)
    head = model.classifier[3].weight.detach().clone()
    report = load_pretrained(model, path)
    assert report.mismatched == ['classifier.3.bias: checkpoint (5,) vs model (7,)',
                                 'classifier.3.weight: checkpoint (5, 64) vs model (7, 64)']
    assert report.loaded == report.total - 2 and not report.missing and not report.unexpected
    assert torch.equal(model.classifier[3].weight, head)
    torch.testing.assert_close(model.state_dict()['layers.2.1.op.to_k.0.weight'],
                               classifier_state['layers.2.1.op.to_k.0.weight'])
    with pytest.raises(CheckpointError, match=r'classifier\.3\.weight: checkpoint \(5, 64\) vs '
                                              r'model \(7, 64\)'):
        load_pretrained(VHeat(MINI, img_size=64, num_classes=7), path, strict=True)


def test_unknown_layout_lists_keys(tmp_path):
    path = tmp_path / 'odd.pth'
    torch.save({'weights': [1, 2], 'step': 4}, path)
    with pytest.raises(CheckpointError, match=r"no state dict found.*\['step', 'weights'\]"):
        load_pretrained(VHeat(MINI, img_size=64), path)


def test_pickled_payload_is_refused_and_never_runs(tmp_path, classifier_state):
    path = tmp_path / 'evil.pth'
    marker = write_crafted_checkpoint(path, {'model': classifier_state})
    with pytest.raises(CheckpointError, match=r'refusing to load .*evil\.pth: its pickle asks for '
                       r"\S*open, which vheat_mm's checkpoint reader does not allow .*; allowed "
                       r'are tensors, containers') as error:
        load_pretrained(VHeat(MINI, img_size=64, num_classes=5), path)
    assert '\n' not in str(error.value)
    assert not os.path.exists(marker)


class _StateDict(collections.OrderedDict):
    """An OrderedDict subclass: a global that the reader does not allow."""


@pytest.mark.parametrize('value, name', [
    (argparse.Namespace(lr=0.1), 'argparse.Namespace'),
    (_StateDict(w=torch.ones(1)), f'{__name__}._StateDict'),
])
@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_unsafe_global_is_refused_naming_it(tmp_path, classifier_state, value, name, legacy):
    path = tmp_path / 'unsafe.pth'
    torch.save({'model': classifier_state, 'extra': value}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert one_line_message(error).startswith(
        f"refusing to load {path}: its pickle asks for {name}, which vheat_mm's checkpoint "
        f"reader does not allow (loading it could run code); allowed are ")


def test_reading_needs_no_allowlist_api_of_torch(tmp_path, classifier_state, monkeypatch):
    """torch < 2.4 has none of them: the reader neither reads nor changes torch's allowlist."""
    for api in ('add_safe_globals', 'safe_globals', 'get_safe_globals',
                'get_unsafe_globals_in_checkpoint', 'clear_safe_globals'):
        monkeypatch.delattr(torch.serialization, api, raising=False)
    torch.save({'model': classifier_state}, tmp_path / 'plain.pth')
    assert read_checkpoint(tmp_path / 'plain.pth')['model'].keys() == classifier_state.keys()
    torch.save({'args': argparse.Namespace(lr=0.1)}, tmp_path / 'unsafe.pth')
    with pytest.raises(CheckpointError, match=r'its pickle asks for argparse\.Namespace, '):
        read_checkpoint(tmp_path / 'unsafe.pth')


def test_legacy_file_is_read(tmp_path, classifier_state):
    path = tmp_path / 'legacy.pth'
    torch.save({'model': classifier_state}, path, _use_new_zipfile_serialization=False)
    loaded = read_checkpoint(path)['model']
    assert all(torch.equal(loaded[k], v) for k, v in classifier_state.items())


def test_a_tar_file_of_old_torch_is_not_unpacked(tmp_path):
    path = tmp_path / 'old.tar'
    with tarfile.open(path, 'w') as archive:
        archive.add(__file__, arcname='storages')
    with pytest.raises(CheckpointError, match=r'neither a zip archive .* nor a readable legacy '
                                              r'torch file .*an older tar file'):
        read_checkpoint(path)


# ----------------------------------------------------------------------------- what is read
def _saved_values() -> dict:
    """A checkpoint of what torch.save writes for tensors, parameters, state dicts and the
    values a training script stores beside them."""
    linear = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(linear.parameters())
    linear(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    with_attribute = torch.nn.Parameter(torch.arange(3.0))
    with_attribute.note = 'kept'
    return {'state_dict': linear.state_dict(), 'optimizer': optimizer.state_dict(),
            'parameter': torch.nn.Parameter(torch.ones(2)), 'with_attribute': with_attribute,
            'dtypes': {str(t): torch.zeros(2, dtype=t) for t in (
                torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8,
                torch.int64, torch.bool, torch.complex64)},
            'dtype': torch.float16, 'size': torch.Size([2, 3]), 'device': torch.device('cpu'),
            'view': torch.arange(10.0)[2:8:2], 'bytes': b'\x00\xff', 'no bytes': b'',
            'set': {1, 2},
            'frozenset': frozenset({3}), 'tuple': (1, 'a', None, 2.5, True), 'nested': [[{}]]}


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_what_torch_save_writes_is_read_as_it_was(tmp_path, protocol):
    path = tmp_path / 'values.pth'
    saved = _saved_values()
    torch.save(saved, path, pickle_protocol=protocol)
    assert_same(read_checkpoint(path), saved)
    assert read_checkpoint(path)['with_attribute'].note == 'kept'
    assert isinstance(read_checkpoint(path)['parameter'], torch.nn.Parameter)


@pytest.mark.parametrize('numpy_names', ['installed', 'numpy 1.x', 'numpy 2.x'])
def test_numpy_arrays_and_scalars_under_either_numpys_names(tmp_path, numpy_names):
    import numpy as np

    path = tmp_path / 'numpy.pth'
    saved = {'array': np.arange(6.0).reshape(2, 3), 'ints': np.array([1, 2], np.int64),
             'empty': np.array([]),
             'float': np.float64(1.5), 'int': np.int64(3), 'half': np.float16(0.5),
             'bool': np.bool_(True), 'dtype': np.dtype('float32')}
    torch.save(saved, path)
    spelled = {'numpy 1.x': b'numpy.core.multiarray', 'numpy 2.x': b'numpy._core.multiarray'}
    if numpy_names in spelled:
        rewrite_pickle(path, lambda data: re.sub(rb'numpy\._?core\.multiarray',
                                                 spelled[numpy_names], data))
    assert_same(read_checkpoint(path), saved)


def test_map_location_is_torch_loads(tmp_path, classifier_state):
    path = tmp_path / 'ckpt.pth'
    torch.save({'model': classifier_state}, path)
    locations = []
    loaded = read_checkpoint(path, map_location=lambda storage, where: locations.append(where)
                             or storage)
    assert locations and set(locations) == {'cpu'}
    assert loaded['model'].keys() == classifier_state.keys()


def test_the_weights_only_variable_reads_with_torchs_unpickler(tmp_path, classifier_state,
                                                                monkeypatch):
    """TORCH_FORCE_WEIGHTS_ONLY_LOAD makes torch.load refuse any unpickler but its own: the file
    is read by that one, and what its allowlist refuses is named with the variable."""
    torch.save({'model': classifier_state}, tmp_path / 'plain.pth')
    torch.save({'model': classifier_state, 'args': argparse.Namespace(lr=0.1)},
               tmp_path / 'args.pth')
    monkeypatch.setenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '1')
    assert read_checkpoint(tmp_path / 'plain.pth')['model'].keys() == classifier_state.keys()
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(tmp_path / 'args.pth')
    assert one_line_message(error, 'argparse.Namespace').startswith(
        f"refusing to load {tmp_path / 'args.pth'}: TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, so it "
        f"is read by torch's weights-only unpickler")


# ----------------------------------------------------------------------------- what is refused
def _refusal(path) -> str:
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = one_line_message(error)
    assert message.startswith(f'refusing to load {path}: its pickle asks for '), message
    return message[len(f'refusing to load {path}: its pickle asks for '):]


SYSTEM = b'cos\nsystem\n'  # GLOBAL os.system
TRUE = b'X\x04\x00\x00\x00true'  # BINUNICODE 'true'


@pytest.mark.parametrize('opcodes', [
    b'\x80\x02' + SYSTEM + TRUE + b'\x85R.',  # REDUCE
    b"(S'true'\nios\nsystem\n.",  # INST (protocol 0)
    b'(' + SYSTEM + b"S'true'\no.",  # OBJ (protocol 1)
    b'\x80\x02' + SYSTEM + b')\x81.',  # NEWOBJ
    b'\x80\x04\x8c\x02os\x8c\x06system\x93)}\x92.',  # STACK_GLOBAL, NEWOBJ_EX
], ids=['REDUCE', 'INST', 'OBJ', 'NEWOBJ', 'NEWOBJ_EX'])
def test_a_call_of_os_system_is_refused_naming_it(tmp_path, opcodes):
    path = tmp_path / 'crafted.pth'
    write_pickle_archive(path, opcodes)
    assert _refusal(path).startswith("os.system, which vheat_mm's checkpoint reader does not "
                                     "allow (loading it could run code)")


EXT_SIZES = {b'\x82': 1, b'\x83': 2, b'\x84': 4}  # EXT1, EXT2, EXT4: bytes of their code


@pytest.mark.parametrize('opcode, code', [(b'\x82', 0xf0), (b'\x83', 0x1234),
                                          (b'\x84', 0x12345678)], ids=['EXT1', 'EXT2', 'EXT4'])
def test_an_extension_code_is_refused_naming_its_global(tmp_path, opcode, code):
    """os.system registered with copyreg, and in its cache of extensions (as an earlier
    unrestricted unpickling would leave it)."""
    path = tmp_path / 'crafted.pth'
    write_pickle_archive(path, b'\x80\x02' + opcode + code.to_bytes(EXT_SIZES[opcode], 'little')
                         + TRUE + b'\x85R.')
    copyreg.add_extension('os', 'system', code)
    copyreg._extension_cache[code] = os.system
    try:
        assert _refusal(path).startswith('os.system, which ')
        assert copyreg._extension_cache[code] is os.system  # left as it was
    finally:
        copyreg.remove_extension('os', 'system', code)
    assert _refusal(path).startswith(f'the copyreg extension {code}, which no module has '
                                     f'registered')


class _Reduces:
    """Pickles as ``function(*args)``."""

    def __init__(self, function, *args):
        self.call = function, args

    def __reduce__(self):
        return self.call


@pytest.mark.parametrize('payload, asked', [
    (_Reduces(getattr, collections.OrderedDict, 'fromkeys'), "getattr(OrderedDict, 'fromkeys')"),
    (_Reduces(codecs.encode, 'x', 'zlib_codec'), "_codecs.encode('x', 'zlib_codec')"),
    (_Reduces(bytes, 10**10), 'bytes(10000000000,)'),
    (_Reduces(torch._utils._rebuild_parameter, torch.ones(2), False,
              collections.OrderedDict(hook=1)),
     "torch._utils._rebuild_parameter with backward hooks {'hook': 1}"),
])
def test_an_allowed_global_called_as_no_checkpoint_calls_it_is_refused(tmp_path, payload, asked):
    path = tmp_path / 'calls.pth'
    torch.save({'x': payload}, path)
    assert _refusal(path).startswith(f"{asked}, which vheat_mm's checkpoint reader does not "
                                     f"allow: ")


@pytest.mark.parametrize('opcodes, asked', [
    (b'\x80\x02ccollections\nOrderedDict\nN}X\x01\x00\x00\x00xK\x01s\x86b.',
     'the state of the class collections.OrderedDict set (pickle BUILD)'),
    (b'\x80\x02cyacs.config\nCfgNode\nX\x01\x00\x00\x00a\x85R.', "yacs.config.CfgNode('a',)"),
    (b'\x80\x02ctorch\nSize\n)R(K\x00K\x01u.', 'items set in a Size'),
    (b'\x80\x02}K\x01a.', 'items appended to a dict'),
    (b'\x80\x02](K\x01K\x02u.', 'items set in a list'),
], ids=['BUILD on a class', 'CfgNode with arguments', 'SETITEMS on a Size', 'APPEND to a dict',
        'SETITEMS on a list'])
def test_what_no_checkpoint_does_with_its_objects_is_refused(tmp_path, opcodes, asked):
    path = tmp_path / 'crafted.pth'
    write_pickle_archive(path, opcodes)
    assert _refusal(path).startswith(f'{asked}, which ')


class _MappingWithOwnMethods:
    """Pickles as an OrderedDict of ``items`` whose state sets ``attributes`` on it."""

    def __init__(self, entries, **attributes):
        self.entries, self.attributes = entries, attributes

    def __reduce__(self):
        return collections.OrderedDict, (), self.attributes, None, iter(self.entries.items())


@pytest.mark.parametrize('method', ['get', 'items', 'keys', '__class__'])
def test_a_state_dict_whose_state_hides_its_methods_is_refused(tmp_path, classifier_state,
                                                                method):
    """A mapping whose pickled state would replace its own methods (``get`` returning weights
    that pass the NaN check) is refused; only plain attributes, such as a state dict's
    ``_metadata``, are set."""
    poisoned = {k: torch.full_like(v, float('nan')) if v.is_floating_point() else v
                for k, v in classifier_state.items()}
    path = tmp_path / 'methods.pth'
    torch.save({'model': _MappingWithOwnMethods(poisoned, **{method: torch.Size})}, path)
    asked = f"the attribute '{method}' of a OrderedDict set (pickle BUILD), which "
    assert _refusal(path).startswith(asked)
    with pytest.raises(CheckpointError, match=re.escape(asked)):
        load_pretrained(VHeat(MINI, img_size=64, num_classes=5), path)
    # a state dict's own attribute is read as torch.save wrote it
    torch.save({'model': classifier_state}, path)
    assert read_checkpoint(path)['model']._metadata == classifier_state._metadata


# ----------------------------------------------------------------------------- mmengine's
@pytest.fixture(scope='module')
def runner_checkpoint(tmp_path_factory):
    pytest.importorskip('mmengine')
    return write_runner_checkpoint(tmp_path_factory.mktemp('runner'))


def test_an_mmengine_runner_checkpoint_is_read_as_it_was(runner_checkpoint):
    from mmengine.logging import HistoryBuffer

    checkpoint = read_checkpoint(runner_checkpoint)
    assert_same(checkpoint, torch.load(runner_checkpoint, weights_only=False))  # our own file
    loss = checkpoint['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer) and len(loss.data[0]) == 2
    assert {'meta', 'state_dict', 'optimizer', 'param_schedulers', 'message_hub'} <= checkpoint.keys()


def test_an_mmengine_checkpoint_in_pickle_protocol_4_is_read(runner_checkpoint, tmp_path):
    """Protocol 4 names a HistoryBuffer's methods 'HistoryBuffer.mean', not getattr(...)."""
    path = tmp_path / 'protocol4.pth'
    torch.save(torch.load(runner_checkpoint, weights_only=False), path, pickle_protocol=4)
    assert_same(read_checkpoint(path), read_checkpoint(runner_checkpoint))


def _history_buffer_naming(methods: dict):
    """A HistoryBuffer that pickles ``methods`` as its statistics methods."""
    from mmengine.logging import HistoryBuffer

    history_buffer = HistoryBuffer()
    history_buffer._statistics_methods = methods  # its __getstate__ pickles this dict
    return history_buffer


def _history_buffer_payloads():
    """What a pickle may ask of mmengine's HistoryBuffer that no checkpoint asks for."""
    from mmengine.logging import HistoryBuffer

    class Lookalike:
        """A HistoryBuffer of another module."""
    Lookalike.__module__, Lookalike.__qualname__ = 'history_buffer_elsewhere', 'HistoryBuffer'
    return [
        (_Reduces(getattr, HistoryBuffer, '__init__'), "getattr(HistoryBuffer, '__init__')"),
        (_Reduces(getattr, HistoryBuffer, 'register_statistics'),
         "getattr(HistoryBuffer, 'register_statistics')"),
        (_history_buffer_naming({'mean': collections.OrderedDict}),
         "HistoryBuffer statistics method 'mean': the class collections.OrderedDict"),
        (_history_buffer_naming({'mean': HistoryBuffer.max}),
         "HistoryBuffer statistics method 'mean': the function "
         "mmengine.logging.history_buffer.HistoryBuffer.max"),
        (Lookalike, 'history_buffer_elsewhere.HistoryBuffer'),
    ]


def test_what_no_mmengine_checkpoint_asks_of_a_history_buffer_is_refused(tmp_path, monkeypatch):
    pytest.importorskip('mmengine')
    from mmengine.logging import HistoryBuffer

    HistoryBuffer()  # mmengine's defaults in its class-wide registry of statistics methods
    registered = dict(HistoryBuffer._statistics_methods)
    path = tmp_path / 'crafted.pth'
    for payload, asked in _history_buffer_payloads():
        if isinstance(payload, type):  # pickled by its name: a module of that name must exist
            module = type(sys)(payload.__module__)
            module.HistoryBuffer = payload
            monkeypatch.setitem(sys.modules, payload.__module__, module)
        torch.save({'x': payload}, path)
        refusal = _refusal(path)
        assert refusal.startswith(f'{asked}, which '), refusal
    write_pickle_archive(path, b'\x80\x02cmmengine.logging\nHistoryBuffer\n)\x81.')
    assert _refusal(path).startswith('mmengine.logging.HistoryBuffer, which ')  # not its name
    assert dict(HistoryBuffer._statistics_methods) == registered
    torch.save({'x': _Reduces(getattr, HistoryBuffer, '__init__')}, path)
    with pytest.raises(CheckpointError, match='only public HistoryBuffer methods are allowed'):
        read_checkpoint(path)


def assert_same(loaded, saved, where='checkpoint') -> None:
    """``loaded`` equals ``saved``: the same types, keys, tensors, arrays and values, at any
    depth."""
    import numpy as np

    assert type(loaded) is type(saved), f'{where}: {type(loaded)} vs {type(saved)}'
    if isinstance(saved, dict):
        assert list(loaded) == list(saved), where
        assert getattr(loaded, '__dict__', {}).keys() == getattr(saved, '__dict__', {}).keys()
        for key in saved:
            assert_same(loaded[key], saved[key], f'{where}[{key!r}]')
    elif isinstance(saved, (list, tuple)):
        assert len(loaded) == len(saved), where
        for index, (a, b) in enumerate(zip(loaded, saved)):
            assert_same(a, b, f'{where}[{index}]')
    elif isinstance(saved, torch.Tensor):
        assert loaded.dtype == saved.dtype and loaded.shape == saved.shape, where
        assert loaded.stride() == saved.stride() and torch.equal(loaded, saved), where
    elif isinstance(saved, np.ndarray):
        assert loaded.dtype == saved.dtype and np.array_equal(loaded, saved), where
    elif hasattr(saved, '__dict__') and not isinstance(saved, type):
        assert_same(vars(loaded), vars(saved), f'{where}.__dict__')
    else:
        assert loaded == saved, f'{where}: {loaded!r} vs {saved!r}'


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server for files in ``tmp_path/served``; yields its base URL."""
    served = tmp_path / 'served'
    served.mkdir()
    with CountingServer(served) as server:
        yield server.url(''), served


def test_url_is_downloaded_once_into_the_hub_cache(tmp_path, http_server, classifier_state,
                                                   monkeypatch):
    base, served = http_server
    torch.save(dict(model=classifier_state), served / 'vheat_mini.pth')
    hub = tmp_path / 'hub'
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(hub))
    model = VHeat(MINI, img_size=96, num_classes=5)
    report = load_pretrained(model, base + 'vheat_mini.pth')
    assert len(list((hub / 'checkpoints').glob('vheat_mini.*.pth'))) == 1  # named per URL
    assert not report.missing and len(report.resized) == 4
    (served / 'vheat_mini.pth').unlink()  # the second read uses the cache
    assert torch.equal(read_checkpoint(base + 'vheat_mini.pth')['model']['freq_embed.0'],
                       classifier_state['freq_embed.0'])


def test_url_that_cannot_be_downloaded_is_named(tmp_path, http_server, monkeypatch):
    base, _ = http_server
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    with pytest.raises(CheckpointError, match='cannot download .*absent.pth'):
        read_checkpoint(base + 'absent.pth')
    assert list((tmp_path / 'hub/checkpoints').iterdir()) == []
