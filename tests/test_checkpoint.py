"""Reading and converting checkpoints: layouts, prefixes, freq_embed resizing, clear errors."""
import os

import pytest
import torch

from conftest import DAMAGED_FILES, MINI, write_crafted_checkpoint, write_damaged_checkpoint
from vheat_mm.checkpoint import (CheckpointError, checkpoint_filter_fn, load_pretrained,
                                 read_checkpoint)
from vheat_mm.models import VHeat, VHeatFeatures
from vheat_mm.models.heat import resize_freq_embed


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


def test_filter_fn_is_pure(classifier_state):
    before = {k: v.clone() for k, v in classifier_state.items()}
    out = checkpoint_filter_fn(classifier_state, VHeat(MINI, img_size=128, num_classes=5))
    assert out['freq_embed.0'].shape == (32, 32, 8)
    assert all(torch.equal(before[k], classifier_state[k]) for k in before)


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


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server for files in ``tmp_path/served``; yields its base URL."""
    from helpers import CountingServer
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
    assert (hub / 'checkpoints/vheat_mini.pth').is_file()
    assert not report.missing and len(report.resized) == 4
    (served / 'vheat_mini.pth').unlink()  # the second read uses the cache
    assert torch.equal(read_checkpoint(base + 'vheat_mini.pth')['model']['freq_embed.0'],
                       classifier_state['freq_embed.0'])


def test_url_that_cannot_be_downloaded_is_named(tmp_path, http_server, monkeypatch):
    base, _ = http_server
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    with pytest.raises(CheckpointError, match='cannot download .*absent.pth'):
        read_checkpoint(base + 'absent.pth')
    assert not (tmp_path / 'hub/checkpoints/absent.pth').exists()
