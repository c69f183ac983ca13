"""The toolbox adapters: registries, official config names, init_cfg loading, official features."""
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MMLogger

import vheat_mm
import vheat_mm.mm
from helpers import (DAMAGED_FILES, DATA, MINI, ROOT, load_script, mini_arch,
                     write_crafted_checkpoint, write_damaged_checkpoint)
from vheat_mm.checkpoint import CheckpointError, read_checkpoint
from vheat_mm.mm.backbone import VHeatBackbone
from vheat_mm.mm.toolbox import registry as toolbox_registry
from vheat_mm.models import ARCH_SETTINGS, VHeat


NAMES = [('mmpretrain', 'vHeat'), ('mmdet', 'vHeat'), ('mmseg', 'vHeat'),
         ('mmdet', 'MMDET_VHEAT'), ('mmseg', 'MMSEG_VHEAT')]
OFFICIAL_KW = dict(depths=(1, 1, 2, 1), dims=8, post_norm=True, layer_scale=1e-5)


def registry(toolbox):
    return toolbox_registry(toolbox).MODELS


def config(name, **extra):
    """A config dict for ``name``: our keywords for vHeat, the official ones otherwise."""
    if name == 'vHeat':
        arch = {k: v for k, v in OFFICIAL_KW.items()}
        return dict(type=name, arch=arch, **extra)
    return dict(type=name, **OFFICIAL_KW, **extra)


def smooth_input(h, w):
    """The deterministic input the downstream fixture was made with."""
    y = torch.linspace(-1, 1, h)[:, None]
    x = torch.linspace(-1, 1, w)[None, :]
    chans = [torch.sin(3 * x + 2 * y + c) * torch.cos(5 * y - x * c) for c in range(3)]
    return torch.stack(chans)[None].float()


def test_import_registers_into_mmengines_root_registries():
    assert vheat_mm.mm.REGISTERED == {'model': ('vHeat', 'MMDET_VHEAT', 'MMSEG_VHEAT'),
                                      'runner': ('VHeatRunner',),
                                      'hook': ('AtomicCheckpointHook', 'RawAndEMAHook')}
    for toolbox in ('mmpretrain', 'mmdet', 'mmseg'):  # found through their parent registries
        assert registry(toolbox).get('vHeat') is VHeatBackbone
        assert 'vHeat' not in registry(toolbox)._module_dict


@pytest.mark.parametrize('toolbox,name', NAMES)
def test_registries_build_from_config(toolbox, name):
    model = registry(toolbox).build(config(name, img_size=64, out_indices=(1, 3)))
    assert isinstance(model, VHeatBackbone)
    feats = model(torch.randn(1, 3, 96, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 16, 12, 8), (1, 64, 3, 2)]


@pytest.mark.parametrize('toolbox,name', [('mmdet', 'MMDET_VHEAT'), ('mmseg', 'MMSEG_VHEAT')])
def test_official_keywords(toolbox, name, tmp_path):
    model = registry(toolbox).build(dict(type=name, depths=(1, 1, 2, 1), dims=8, post_norm=False,
                                         layer_scale=None, drop_path_rate=0.2, use_checkpoint=True,
                                         out_indices=(0, 1, 2, 3), pretrained='some.pth'))
    assert model.with_cp and model.init_cfg == dict(type='Pretrained', checkpoint='some.pth',
                                                    entry='model')  # what the official code reads
    assert model.img_size == (224 if toolbox == 'mmdet' else 512)  # official defaults
    assert model.layers[3][0].drop_path == pytest.approx(0.2)
    with pytest.raises(TypeError, match='depth'):
        registry(toolbox).build(dict(type=name, depth=(2, 2, 6, 2)))


# What the official configs inherit from mmdet's and mmseg's Swin configs (their _base_)
SWIN_BACKBONE = dict(embed_dims=96, num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4,
                     qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
                     patch_norm=True, with_cp=False, convert_weights=True,
                     pretrain_img_size=224, patch_size=4, strides=(4, 2, 2, 2),
                     use_abs_pos_embed=False, act_cfg=dict(type='GELU'),
                     norm_cfg=dict(type='LN', requires_grad=True),
                     init_cfg=dict(type='Pretrained', checkpoint='swin_tiny.pth'))


@pytest.mark.parametrize('toolbox,name', [('mmdet', 'MMDET_VHEAT'), ('mmseg', 'MMSEG_VHEAT')])
def test_official_names_ignore_the_inherited_swin_keywords(toolbox, name, caplog):
    """As the official classes: Swin's keywords are ignored, and so is Swin's init_cfg (its
    weights must never reach vHeat); the weights come from ``pretrained``, each logged."""
    with caplog.at_level(logging.INFO, logger='vheat_mm'):
        model = registry(toolbox).build(dict(type=name, **OFFICIAL_KW, **SWIN_BACKBONE,
                                             pretrained='vheat.pth'))
    assert model.init_cfg == dict(type='Pretrained', checkpoint='vheat.pth', entry='model')
    assert model.arch.mlp_ratio == 4  # a keyword both take
    logged = caplog.text
    assert (f'{name}: ignoring the Swin keywords the config inherits, as the official code '
            f'does: act_cfg, attn_drop_rate, convert_weights, drop_rate, embed_dims, ') in logged
    assert f"{name}: ignoring init_cfg={SWIN_BACKBONE['init_cfg']!r}" in logged
    model = registry(toolbox).build(dict(type=name, **OFFICIAL_KW,
                                         init_cfg=SWIN_BACKBONE['init_cfg']))
    assert model.init_cfg is None
    with pytest.raises(TypeError, match=re.escape("unknown keyword 'window_sizes' (did you mean "
                                                  "'window_size'?)")):
        registry(toolbox).build(dict(type=name, **OFFICIAL_KW, window_sizes=7))


# case: (keywords, error, what the message must contain), for every registered name
BAD_CONFIGS = {
    'typo': (dict(out_indice=(1,)), TypeError,
             "unknown keyword 'out_indice' (did you mean 'out_indices'?); allowed keywords are "),
    'unknown_keyword': (dict(heads=3), TypeError, "unknown keyword 'heads'"),
    'out_indices': (dict(out_indices=(0, 4)), ValueError,
                    'out_indices must be distinct stage indices in [0, 4) (or [-4, 0) '
                    'counting from the last), got (0, 4)'),
    'frozen_stages_above': (dict(frozen_stages=5), ValueError,
                            'frozen_stages must be in [-1, 4], got 5'),
    'frozen_stages_below': (dict(frozen_stages=-2), ValueError,
                            'frozen_stages must be in [-1, 4], got -2'),
    'img_size': (dict(img_size=100), ValueError,
                 'img_size must be a positive multiple of 32 (the stride of the last stage), '
                 'got 100'),
}


@pytest.mark.parametrize('case', list(BAD_CONFIGS))
@pytest.mark.parametrize('toolbox,name', NAMES)
def test_bad_config_is_a_clear_error(toolbox, name, case):
    keywords, error, message = BAD_CONFIGS[case]
    with pytest.raises(error, match=re.escape(message)):
        registry(toolbox).build(config(name, **keywords))


@pytest.mark.parametrize('toolbox,name', NAMES)
def test_unknown_keyword_lists_every_allowed_keyword(toolbox, name):
    allowed = (['depths', 'dims', 'post_norm', 'layer_scale', 'img_size', 'drop_path_rate',
                'out_indices', 'use_checkpoint', 'pretrained', 'frozen_stages', 'in_chans',
                'mlp_ratio', 'check_finite', 'freq_embed_resize'] if name != 'vHeat' else
               # its own keywords, then VHeatFeatures', then the trunk's (takes_keywords_of)
               ['arch', 'init_cfg', 'out_indices', 'frozen_stages', 'img_size', 'freq_embed_resize',
                'in_channels', 'drop_path_rate', 'with_cp', 'check_finite'])
    with pytest.raises(TypeError) as error:
        registry(toolbox).build(config(name, out_indice=(1,)))
    message = str(error.value)
    if name != 'vHeat':  # the Swin leftovers the official names ignore are listed last
        message, ignored = message.split(' (ignored, as Swin leftovers: ')
        assert 'embed_dims' in ignored and 'init_cfg' in ignored
    assert message.endswith('allowed keywords are ' + ', '.join(allowed))


@pytest.mark.parametrize('toolbox', ['mmpretrain', 'mmdet', 'mmseg'])
@pytest.mark.parametrize('arch, message', [
    ('huge', f"unknown vHeat arch 'huge'; choose one of {sorted(ARCH_SETTINGS)} (or their "
             "initials), or pass a dict with keys ['depths', 'dims', 'layer_scale', "
             "'mlp_ratio', 'post_norm']"),
    (dict(depth=(1, 1, 1, 1), dims=8), "arch dict: unknown keys ['depth'], missing keys "
                                       "['depths']; allowed keys are ['depths', 'dims', "
                                       "'layer_scale', 'mlp_ratio', 'post_norm']"),
])
def test_unknown_arch_lists_the_choices(toolbox, arch, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        registry(toolbox).build(dict(type='vHeat', arch=arch))


@pytest.mark.parametrize('toolbox,name', NAMES)
def test_check_finite_from_the_config(toolbox, name):
    model = registry(toolbox).build(config(name, img_size=64, check_finite=True)).eval()
    assert model.check_finite
    x = torch.randn(1, 3, 64, 64)
    x[0, 1, 2, 3] = float('inf')
    with pytest.raises(ValueError, match=re.escape('check_finite: the input holds 1 non-finite '
                                                   'values of 12288 (0 NaN, 1 inf)')):
        model(x)
    assert not registry(toolbox).build(config(name, img_size=64)).check_finite


@pytest.fixture(scope='module')
def downstream():
    return torch.load(DATA / 'vheat_official_downstream.pt', weights_only=True)


@pytest.mark.parametrize('toolbox,name', NAMES)
def test_official_downstream_features(downstream, toolbox, name):
    """Official downstream state dicts load strictly and give the official wrapper's features."""
    cfg = downstream['config']
    model = registry(toolbox).build(config(name, img_size=cfg['img_size'])).eval()
    model.load_state_dict(downstream['state_dict'], strict=True)
    for size, expected in downstream['features'].items():
        h, w = map(int, size.split('x'))
        with torch.no_grad():
            feats = model(smooth_input(h, w))
        assert len(feats) == len(expected) == 4
        for got, ref in zip(feats, expected):
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5, msg=f'{name} at {size}')


def mmengine_checkpoint(state):
    """What mmengine's runner writes: meta, message hub with HistoryBuffers and numpy values."""
    hub = {'log_scalars': {'train/loss': HistoryBuffer([1.0, 0.5], [1, 1])},
           'runtime_info': {'epoch': 1, 'iter': np.int64(10), 'lr': np.float64(1e-4),
                            'arr': np.arange(3)}}
    return {'meta': {'epoch': 1, 'iter': 10, 'seed': 0}, 'message_hub': hub,
            'state_dict': {f'backbone.{k}': v for k, v in state.items()},
            'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-4, 'params': [0]}]}}


@pytest.mark.parametrize('layout', ['official', 'mmengine', 'plain'])
def test_init_cfg_forms_load_with_resize_logged(tmp_path, layout):
    source = VHeat(MINI, img_size=64, num_classes=5)
    state = source.state_dict()
    ckpt = {'official': {'model': state}, 'mmengine': mmengine_checkpoint(state),
            'plain': state}[layout]
    path = tmp_path / f'{layout}.pth'
    torch.save(ckpt, path)
    log_file = tmp_path / 'log.txt'
    MMLogger.get_instance(f'vheat_test_{layout}', log_file=str(log_file))
    model = registry('mmdet').build(dict(type='vHeat', arch=MINI, img_size=96,
                                         init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    model.init_weights()
    log = log_file.read_text()
    assert 'freq_embed.0 (16, 16, 8) -> (24, 24, 8)' in log
    assert 'ignored (4): classifier.0.bias' in log
    assert 'left as initialised (8): outnorm0.bias' in log
    torch.testing.assert_close(model.state_dict()['layers.1.0.op.linear.weight'],
                               state['layers.1.0.op.linear.weight'])


def test_init_cfg_with_prefix_and_other_init_types(tmp_path):
    path = tmp_path / 'det.pth'
    state = VHeat(MINI, img_size=64).state_dict()
    torch.save({'state_dict': {f'encoder.{k}': v for k, v in state.items()}}, path)
    model = registry('mmseg').build(dict(
        type='vHeat', arch=MINI, img_size=64,
        init_cfg=[dict(type='Constant', layer='LayerNorm', val=2.0, bias=0.0),
                  dict(type='Pretrained', checkpoint=str(path), prefix='encoder')]))
    model.init_weights()
    torch.testing.assert_close(model.layers[0][0].norm1.weight, state['layers.0.0.norm1.weight'])
    assert torch.all(model.outnorm0.weight == 2.0)  # Constant init, not in the checkpoint


def test_init_cfg_missing_checkpoint_names_path(tmp_path):
    model = registry('mmdet').build(dict(type='vHeat', arch=MINI, img_size=64, init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'absent.pth'))))
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        model.init_weights()


@pytest.mark.parametrize('toolbox', ['mmdet', 'mmseg', 'mmpretrain'])
def test_init_cfg_refuses_a_pickled_payload_without_running_it(tmp_path, toolbox):
    crafted = tmp_path / 'crafted.pth'
    marker = write_crafted_checkpoint(crafted, {'model': VHeat(MINI, img_size=64).state_dict()})
    model = registry(toolbox).build(dict(type='vHeat', arch=MINI, img_size=64, init_cfg=dict(
        type='Pretrained', checkpoint=str(crafted))))
    with pytest.raises(CheckpointError, match=rf'refusing to load {re.escape(str(crafted))}: '
                       r'its pickle asks for \S*open, .*could run code'):
        model.init_weights()
    assert not marker.exists()


def test_mmengine_checkpoint_types_are_read_and_torchs_allowlist_is_left_alone(tmp_path):
    """vheat_mm's reader takes mmengine's runner types; torch.load's own weights_only reading
    is as without vheat_mm (torch >= 2.6 refuses them), and anything else is refused."""
    path = tmp_path / 'runner.pth'
    torch.save(mmengine_checkpoint({'w': torch.ones(2)}), path)
    loaded = read_checkpoint(path)
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == 0.5
    if hasattr(torch.serialization, 'get_safe_globals'):
        assert HistoryBuffer not in torch.serialization.get_safe_globals()
        with pytest.raises(Exception, match='weights_only|Unsupported global'):
            torch.load(path, weights_only=True)
    torch.save({'bad': Path('/tmp')}, tmp_path / 'bad.pth')
    with pytest.raises(CheckpointError, match='pathlib'):
        read_checkpoint(tmp_path / 'bad.pth')


class _GetattrPayload:
    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


def test_getattr_only_reaches_history_buffer_methods(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'x': _GetattrPayload()}, path)
    with pytest.raises(CheckpointError, match='only public HistoryBuffer methods are allowed'):
        read_checkpoint(path)


def test_backbone_initialises_inside_a_detector(tmp_path):
    """mmengine's init_weights reaches the backbone and loads its Pretrained checkpoint."""
    from mmdet.models.detectors import MaskRCNN  # noqa: F401  (registers the detector)
    from mmengine.config import Config

    path = tmp_path / 'cls.pth'
    state = VHeat(MINI, img_size=64).state_dict()
    torch.save({'model': state}, path)
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text("_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'\n"
                        "custom_imports = dict(imports=['vheat_mm'])\n")
    cfg = Config.fromfile(str(cfg_file))
    cfg.model.backbone = dict(type='vHeat', arch=MINI, img_size=96,
                              init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    cfg.model.neck.in_channels = [8, 16, 32, 64]
    detector = registry('mmdet').build(cfg.model)
    detector.init_weights()
    torch.testing.assert_close(detector.backbone.layers[2][1].op.to_k[0].weight,
                               state['layers.2.1.op.to_k.0.weight'])


def test_a_name_taken_by_another_package_is_left_with_a_warning(monkeypatch):
    class Other(torch.nn.Module):
        pass

    from mmengine.registry import MODELS
    monkeypatch.setitem(MODELS._module_dict, 'MMDET_VHEAT', Other)
    with pytest.warns(UserWarning, match="registry already has 'MMDET_VHEAT'"):
        assert vheat_mm.mm.register()['model'] == ('vHeat', 'MMSEG_VHEAT')
    assert registry('mmdet').get('MMDET_VHEAT') is Other


def convert(src, dst):
    return subprocess.run([sys.executable, 'tools/model_converters/vheat_to_mmpretrain.py',
                           str(src), str(dst)], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize('case', ['prenorm', 'postnorm_layerscale'])
def test_official_classifier_converted_gives_official_logits(official_mini, case, tmp_path):
    """tools/model_converters/vheat_to_mmpretrain.py -> ImageClassifier: the official logits."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS

    fixture = official_mini[case]
    cfg = fixture['config']
    src, dst = tmp_path / 'official.pth', tmp_path / 'mmpretrain.pth'
    torch.save(dict(model=fixture['state_dict']), src)
    assert convert(src, dst).returncode == 0
    dims = cfg['dims'] * 2 ** 3 if isinstance(cfg['dims'], int) else cfg['dims'][-1]
    # in mmpretrain's scope, whichever toolbox an earlier test left as the current one
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='vHeat', arch=mini_arch(cfg), img_size=cfg['img_size'],
                          out_indices=(3,)),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=cfg['num_classes'], in_channels=dims)))
    load_checkpoint(classifier, str(dst), strict=True)
    classifier.eval()
    with torch.no_grad():
        logits = classifier(fixture['input'], mode='tensor')
    torch.testing.assert_close(logits, fixture['logits'], rtol=1e-5, atol=1e-5)


converter = load_script(ROOT / 'tools/model_converters/vheat_to_mmpretrain.py')

# case: what the one-line message must contain
CONVERTER_BAD_INPUTS = {
    'no_freq_embed': 'not an official vHeat classifier state dict (it needs freq_embed.0 and '
                     "classifier.3.weight); keys found: ['fc.weight']",
    'unknown_layout': "has no 'model_ema' or 'model' entry, so it is not an official vHeat "
                      "checkpoint (expected {'model': state_dict, ...}, and 'model_ema' with EMA); "
                      "top-level keys found: ['meta', 'state_dict']",
    'unsafe': 'refusing to load',
    'missing': 'checkpoint not found',
    **DAMAGED_FILES,
}


def write_converter_source(path, case):
    """The input checkpoint of a :data:`CONVERTER_BAD_INPUTS` case (none for 'missing')."""
    state = VHeat(MINI, img_size=64).state_dict()
    if case in DAMAGED_FILES:
        write_damaged_checkpoint(path, case, {'model': state})
    elif case == 'no_freq_embed':
        torch.save(dict(model={'fc.weight': torch.zeros(2, 2)}), path)
    elif case == 'unknown_layout':
        torch.save(dict(state_dict={f'backbone.{k}': v for k, v in state.items()}, meta={}), path)
    elif case == 'unsafe':
        write_crafted_checkpoint(path, dict(model=state))


@pytest.mark.parametrize('case', list(CONVERTER_BAD_INPUTS))
def test_converter_bad_inputs_exit_with_a_clear_message(tmp_path, capsys, case):
    src, dst = tmp_path / 'official.pth', tmp_path / 'out.pth'
    write_converter_source(src, case)
    assert converter.main([str(src), str(dst)]) == 1
    printed = capsys.readouterr().err.strip()
    assert printed.startswith('vheat_to_mmpretrain.py: error: ')
    assert CONVERTER_BAD_INPUTS[case] in printed and '\n' not in printed
    assert not dst.exists() and all(p.name == 'official.pth' for p in tmp_path.iterdir())


def test_converter_missing_source_leaves_an_existing_target(tmp_path):
    dst = tmp_path / 'out.pth'
    dst.write_bytes(b'previous')
    result = convert(tmp_path / 'absent.pth', dst)
    assert result.returncode == 1
    assert result.stderr.strip() == ('vheat_to_mmpretrain.py: error: checkpoint not found: '
                                     f'{tmp_path / "absent.pth"}')
    assert dst.read_bytes() == b'previous'
