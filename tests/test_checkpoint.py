"""Reading and converting checkpoints: layouts, prefixes, freq_embed resizing, clear errors."""
import argparse
import collections
import os
import re

import pytest
import torch

from helpers import (DAMAGED_FILES, MINI, CountingServer, write_crafted_checkpoint,
                     write_damaged_checkpoint)
from vheat_mm.checkpoint import (CheckpointError, RefusedCall, fit_state_dict, load_pretrained,
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


def test_fit_state_dict_is_pure(classifier_state):
    before = {k: v.clone() for k, v in classifier_state.items()}
    out, _ = fit_state_dict(classifier_state, VHeat(MINI, img_size=128, num_classes=5))
    assert out['freq_embed.0'].shape == (32, 32, 8)
    assert all(torch.equal(before[k], classifier_state[k]) for k in before)


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


def test_tensors_that_cannot_fit_are_named(tmp_path, classifier_state):
    path = tmp_path / 'other.pth'
    torch.save({'model': classifier_state}, path)
    with pytest.raises(CheckpointError, match=r'classifier\.3\.weight: checkpoint \(5, 64\) vs '
                                              r'model \(7, 64\)'):
        load_pretrained(VHeat(MINI, img_size=64, num_classes=7), path)


def test_unknown_layout_lists_keys(tmp_path):
    path = tmp_path / 'odd.pth'
    torch.save({'weights': [1, 2], 'step': 4}, path)
    with pytest.raises(CheckpointError, match=r"no state dict found.*\['step', 'weights'\]"):
        load_pretrained(VHeat(MINI, img_size=64), path)


def test_pickled_payload_is_refused_and_never_runs(tmp_path, classifier_state):
    path = tmp_path / 'evil.pth'
    marker = write_crafted_checkpoint(path, {'model': classifier_state})
    with pytest.raises(CheckpointError, match=r'refusing to load .*evil\.pth: its pickle asks for '
                       r'\S*open, which weights_only loading does not allow .*; allowed are '
                       r'tensors, containers') as error:
        load_pretrained(VHeat(MINI, img_size=64, num_classes=5), path)
    assert '\n' not in str(error.value)
    assert not os.path.exists(marker)


class _StateDict(collections.OrderedDict):
    """An OrderedDict subclass: a global that weights_only loading does not allow."""


@pytest.mark.parametrize('value, name', [
    (argparse.Namespace(lr=0.1), 'argparse.Namespace'),
    (_StateDict(w=torch.ones(1)), f'{__name__}._StateDict'),
])
def test_unsafe_global_is_refused_naming_it(tmp_path, classifier_state, value, name):
    path = tmp_path / 'unsafe.pth'
    torch.save({'model': classifier_state, 'extra': value}, path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert str(error.value).startswith(
        f'refusing to load {path}: its pickle asks for {name}, which weights_only loading does '
        f'not allow')


def test_unsafe_global_is_refused_where_torch_cannot_list_globals(tmp_path, monkeypatch):
    """torch < 2.6 has no get_unsafe_globals_in_checkpoint: still a refusal, naming no global."""
    path = tmp_path / 'unsafe.pth'
    torch.save({'args': argparse.Namespace(lr=0.1)}, path)
    monkeypatch.delattr(torch.serialization, 'get_unsafe_globals_in_checkpoint')
    with pytest.raises(CheckpointError, match=rf'^refusing to load {re.escape(str(path))}: its '
                                              r'pickle asks for a global or call \('):
        read_checkpoint(path)


def test_legacy_file_with_an_unsafe_global_is_named_legacy(tmp_path):
    path = tmp_path / 'legacy.pth'
    torch.save({'args': argparse.Namespace(lr=0.1)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r'a legacy torch file \(not a zip archive\) whose '
                                              r'pickle weights_only loading refuses'):
        read_checkpoint(path)


def _allowed_for_one(n):
    """An allowlisted global that refuses any argument but 1, and returns a function."""
    if n != 1:
        raise RefusedCall(f'_allowed_for_one({n})', 'only _allowed_for_one(1) is allowed')
    return print


class _Calls:
    """Pickles as ``_allowed_for_one(n)``, called with ``args`` where they are given."""

    def __init__(self, n, *args):
        self.n, self.args = n, args

    def __call__(self, *args):
        pass

    def __reduce__(self):
        return (_Calls(self.n), self.args) if self.args else (_allowed_for_one, (self.n,))


@pytest.mark.parametrize('payload, asked', [
    (_Calls(2), '_allowed_for_one(2)'),  # refused by the allowlisted global itself
    (_Calls(1, 'x'), 'a call of an object built while unpickling'),  # print, not allowlisted
])
def test_refused_call_is_named(tmp_path, payload, asked):
    path = tmp_path / 'calls.pth'
    torch.save({'x': payload}, path)
    with torch.serialization.safe_globals([_allowed_for_one]), \
            pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert str(error.value).startswith(f'refusing to load {path}: its pickle asks for {asked}, ')


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
