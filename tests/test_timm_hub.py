"""vHeat through timm (``timm.create_model('vheat_tiny', ...)``) and torch.hub (``hubconf.py``).

Nothing is downloaded from the internet: the official weights come from the official reference
fixture, given to timm as a local file (``pretrained_cfg_overlay=dict(file=...)``), and the
hub's and timm's URL cases read from a server on 127.0.0.1. ``pretrained=True`` reads the file
with vheat_mm's reader (an official training checkpoint as it is, without yacs; a crafted pickle
refused), then timm adapts ``in_chans``, ``num_classes`` and ``features_only`` as for its own
models.
"""
import sys

import pytest
import torch

timm = pytest.importorskip('timm')

import vheat_mm  # noqa: E402
import vheat_mm.timm_models  # noqa: E402  (registers the timm models)
from checkpoint_files import write_official_training_checkpoint  # noqa: E402
from helpers import (ROOT, CountingServer, load_script, mini_arch, remove_checkpoints,  # noqa: E402
                     write_crafted_checkpoint)
from vheat_mm.checkpoint import PRETRAINED_URLS, CheckpointError  # noqa: E402

NAMES = ['vheat_tiny', 'vheat_small', 'vheat_base']


def test_import_registers_the_timm_models():
    assert NAMES == [f'vheat_{arch}' for arch in PRETRAINED_URLS]  # one per released arch
    assert vheat_mm.timm_models.MODEL_NAMES == tuple(NAMES)
    assert set(NAMES) <= set(timm.list_models('vheat_*'))
    cfg = timm.models.get_pretrained_cfg('vheat_small')
    assert cfg.url == PRETRAINED_URLS['small']
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225)
    assert cfg.classifier == 'classifier.3' and cfg.num_classes == 1000


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_each_name_builds_with_its_features(name):
    model = timm.create_model(name, num_classes=7).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
    assert logits.shape == (1, 7)
    assert features.shape == (1, model.num_features, 3, 4) and pooled.shape == (1, model.num_features)
    assert [f['reduction'] for f in model.feature_info] == [4, 8, 16, 32]
    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3


@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (1, 3), (-1,)])
def test_features_only_shapes_match_feature_info(out_indices):
    model = timm.create_model('vheat_tiny', features_only=True, out_indices=out_indices,
                              img_size=64).eval()
    with torch.no_grad():
        maps = model(torch.randn(2, 3, 96, 64))
    channels = model.feature_info.channels()
    reductions = model.feature_info.reduction()
    assert len(maps) == len(channels) == len(out_indices)
    for fmap, chans, reduction in zip(maps, channels, reductions):
        assert fmap.shape == (2, chans, 96 // reduction, 64 // reduction)
    assert channels[-1] == 768


def test_pretrained_official_fixture_gives_the_official_logits(official_mini, tmp_path):
    case = official_mini['prenorm']
    path = tmp_path / 'vheat_official_mini.pth'
    torch.save(dict(model=case['state_dict']), path)  # the official release layout
    config = case['config']
    model = timm.create_model('vheat_tiny', pretrained=True, arch=mini_arch(config),
                              img_size=config['img_size'], num_classes=config['num_classes'],
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=10)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(case['input']), case['logits'], rtol=1e-4, atol=1e-5)


def _official(official_mini, **kwargs):
    """``timm.create_model('vheat_tiny', ...)`` of the official mini model's arch and size."""
    config = official_mini['prenorm']['config']
    kwargs.setdefault('num_classes', config['num_classes'])
    return timm.create_model('vheat_tiny', arch=mini_arch(config), img_size=config['img_size'],
                             **kwargs)


def test_pretrained_reads_an_official_training_checkpoint_without_yacs(official_mini, tmp_path,
                                                                       monkeypatch):
    """timm takes ``model_ema`` (the official weights here); ``model`` holds moved weights."""
    pytest.importorskip('yacs.config')
    case = official_mini['prenorm']
    path = tmp_path / 'ckpt_epoch_299.pth'
    write_official_training_checkpoint(path, case['state_dict'])
    monkeypatch.setitem(sys.modules, 'yacs', None)
    monkeypatch.setitem(sys.modules, 'yacs.config', None)
    overlay = dict(file=str(path), num_classes=10)
    model = _official(official_mini, pretrained=True, pretrained_cfg_overlay=overlay).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(case['input']), case['logits'], rtol=1e-4, atol=1e-5)
    assert 'state_dict' not in model.pretrained_cfg  # the weights are in the model, not kept
    assert overlay == dict(file=str(path), num_classes=10)  # the caller's dict is left alone


def test_pretrained_refuses_a_crafted_file_naming_it(official_mini, tmp_path):
    path = tmp_path / 'crafted.pth'
    marker = write_crafted_checkpoint(path, {'model': official_mini['prenorm']['state_dict']})
    with pytest.raises(CheckpointError, match=rf'^refusing to load {path}: its pickle asks for '):
        _official(official_mini, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert not marker.exists()


def test_pretrained_with_timms_adaptations(official_mini, tmp_path, monkeypatch):
    """A URL (downloaded once), in_chans=1 (timm sums the first conv over its input channels), a
    new num_classes (timm drops the classifier) and features_only (the stages' maps)."""
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    case = official_mini['prenorm']
    state = case['state_dict']
    (tmp_path / 'www').mkdir()
    torch.save({'model': state}, tmp_path / 'www' / 'mini.pth')
    with CountingServer(tmp_path / 'www') as server:
        overlay = dict(url=server.url('mini.pth'), num_classes=10)
        gray = _official(official_mini, pretrained=True, in_chans=1, num_classes=3,
                         pretrained_cfg_overlay=overlay)
        features = _official(official_mini, pretrained=True, features_only=True,
                             pretrained_cfg_overlay=overlay)
        assert server.counts['/mini.pth'] == 1
    loaded = gray.state_dict()
    torch.testing.assert_close(loaded['patch_embed.conv1.weight'],
                               state['patch_embed.conv1.weight'].sum(1, keepdim=True))
    assert loaded['classifier.3.weight'].shape == (3, state['classifier.3.weight'].shape[1])
    assert torch.equal(loaded['layers.2.1.op.to_k.0.weight'], state['layers.2.1.op.to_k.0.weight'])
    plain = vheat_mm.VHeat(mini_arch(case['config']), img_size=case['config']['img_size'],
                           num_classes=case['config']['num_classes'])
    plain.load_state_dict(state)
    with torch.no_grad():
        expected = plain.eval().forward_intermediates(case['input'], intermediates_only=True)
        for a, b in zip(features.eval()(case['input']), expected, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert 'state_dict' not in features.pretrained_cfg


def test_pretrained_from_a_state_dict_in_memory_and_from_the_hub_refused(official_mini):
    case = official_mini['prenorm']
    model = _official(official_mini, pretrained=True, pretrained_cfg_overlay=dict(
        state_dict={'model': case['state_dict']}, num_classes=10)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(case['input']), case['logits'], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"vheat_tiny's pretrained weights are read from a file "
                                         r"or an http\(s\) URL .*source 'hf-hub'"):
        _official(official_mini, pretrained=True, pretrained_cfg_overlay=dict(
            source='hf-hub', hf_hub_id='someone/vheat'))


def test_torch_hub_entry_points():
    model = torch.hub.load(str(ROOT), 'vheat_tiny', source='local', pretrained=False,
                           num_classes=5, img_size=64)
    assert isinstance(model, vheat_mm.VHeat) and model.num_classes == 5
    hubconf = load_script(ROOT / 'hubconf.py')
    assert hubconf.dependencies == ['torch']
    assert all(callable(getattr(hubconf, name)) for name in NAMES)


def test_torch_hub_pretrained_path_url_and_release(tmp_path, monkeypatch):
    """pretrained=PATH or URL loads that checkpoint; pretrained=True the release, here a file
    under its name in the hub cache that does not fit the model."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    release = tmp_path / 'torch' / 'hub' / 'checkpoints' / 'vHeat_tiny.pth'
    release.parent.mkdir(parents=True)
    torch.save(dict(model={'other': torch.zeros(1)}), release)
    (tmp_path / 'www').mkdir()
    weights = {k: v + 1 if v.is_floating_point() else v
               for k, v in vheat_mm.VHeat('tiny', num_classes=5, img_size=64).state_dict().items()}
    torch.save(dict(model=weights), tmp_path / 'www' / 'mine.pth')
    try:
        with CountingServer(tmp_path / 'www') as server:
            for pretrained in (str(tmp_path / 'www' / 'mine.pth'), server.url('mine.pth')):
                model = torch.hub.load(str(ROOT), 'vheat_tiny', source='local',
                                       pretrained=pretrained, num_classes=5, img_size=64)
                loaded = model.state_dict()
                assert loaded.keys() == weights.keys()
                assert all(torch.equal(loaded[k], v) for k, v in weights.items())
            assert server.counts['/mine.pth'] == 1
        with pytest.raises(CheckpointError, match='fits the model badly') as error:
            torch.hub.load(str(ROOT), 'vheat_tiny', source='local', pretrained=True, img_size=64)
        assert PRETRAINED_URLS['tiny'] in str(error.value)
    finally:
        remove_checkpoints(tmp_path)
