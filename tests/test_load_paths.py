"""Every way a checkpoint reaches the model resizes freq_embed of another resolution, logged once.

The resizing lives in one place, the trunk's load_state_dict pre-hook
(``resize_loaded_freq_embeds``), so a plain ``load_state_dict``, mmengine's ``load_checkpoint``
(what ``load_from`` and ``--resume`` use, also with a ``backbone.`` prefix inside a detector),
``init_cfg`` and ``load_pretrained`` all end with the same tensors: resized bicubically, or
zero-padded under
``freq_embed_resize='pad'``.
"""
import logging

import pytest
import torch
from mmengine.runner import load_checkpoint

from helpers import MINI_POST
from vheat_mm.checkpoint import CheckpointError, load_pretrained
from vheat_mm.mm.backbone import VHeatBackbone
from vheat_mm.models import FREQ_EMBED_RESIZE_MODES, VHeat, VHeatFeatures


@pytest.fixture
def source():
    """A trained-looking classifier at img_size 64 (freq_embed 16, 8, 4, 2)."""
    model = VHeat(MINI_POST, img_size=64, num_classes=5)
    with torch.no_grad():
        for p in model.freq_embed:
            p.normal_()
    return model


def expected(source, size, mode='bicubic'):
    return [FREQ_EMBED_RESIZE_MODES[mode](p.detach(), (size // 4 // 2**i,) * 2)
            for i, p in enumerate(source.freq_embed)]


def assert_resized(model, source, size, mode='bicubic'):
    for got, want in zip(model.freq_embed, expected(source, size, mode)):
        if mode == 'pad':  # exactly the tensors interpolate4downstream.py writes
            assert torch.equal(got.detach(), want)
        else:
            torch.testing.assert_close(got.detach(), want)


def resize_records(caplog, mode='bicubic'):
    return [r.getMessage() for r in caplog.records
            if f'freq_embed of another resolution resized ({mode})' in r.getMessage()]


@pytest.mark.parametrize('mode', list(FREQ_EMBED_RESIZE_MODES))
def test_plain_load_state_dict(source, caplog, mode):
    target = VHeat(MINI_POST, img_size=128, num_classes=5, freq_embed_resize=mode)
    with caplog.at_level(logging.INFO, logger='vheat_mm'):
        result = target.load_state_dict(source.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    assert_resized(target, source, 128, mode)
    lines = resize_records(caplog, mode)
    assert len(lines) == 4  # once per tensor
    assert lines[0].endswith('freq_embed.0 (16, 16, 8) -> (32, 32, 8)')


@pytest.mark.parametrize('mode', list(FREQ_EMBED_RESIZE_MODES))
def test_mmengine_load_checkpoint_into_a_backbone_and_a_detector(source, tmp_path, caplog, mode):
    """``load_from`` and resume go through mmengine's load_checkpoint."""
    path = tmp_path / 'epoch_1.pth'
    state = {k: v for k, v in source.state_dict().items() if not k.startswith('classifier')}
    torch.save(dict(state_dict=state, meta=dict(epoch=1)), path)
    backbone = VHeatFeatures(MINI_POST, img_size=512, freq_embed_resize=mode)
    with caplog.at_level(logging.INFO, logger='vheat_mm'):
        load_checkpoint(backbone, str(path), map_location='cpu')
    assert_resized(backbone, source, 512, mode)
    assert len(resize_records(caplog, mode)) == 4

    detector = torch.nn.Module()
    detector.backbone = VHeatFeatures(MINI_POST, img_size=256, freq_embed_resize=mode)
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in state.items()}), path)
    load_checkpoint(detector, str(path), map_location='cpu')
    assert_resized(detector.backbone, source, 256, mode)


def test_init_cfg_and_load_pretrained(source, tmp_path, caplog):
    path = tmp_path / 'official.pth'
    torch.save(dict(model=source.state_dict()), path)
    backbone = VHeatBackbone(MINI_POST, img_size=128,
                             init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with caplog.at_level(logging.INFO, logger='vheat_mm'):
        backbone.init_weights()
    assert_resized(backbone, source, 128)
    lines = resize_records(caplog)  # the hook resizes, as on every path, once per tensor
    assert len(lines) == 4 and lines[0].endswith('freq_embed.0 (16, 16, 8) -> (32, 32, 8)')
    other = VHeatFeatures(MINI_POST, img_size=256)
    load_pretrained(other, path)
    assert_resized(other, source, 256)
    padded = VHeatFeatures(MINI_POST, img_size=256, freq_embed_resize='pad')
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='vheat_mm'):
        load_pretrained(padded, path)
    assert_resized(padded, source, 256, 'pad')
    assert resize_records(caplog, 'pad')[0].endswith('freq_embed.0 (16, 16, 8) -> (64, 64, 8)')


def test_pad_refuses_to_shrink_and_an_unknown_fit_is_named(source, tmp_path):
    target = VHeat(MINI_POST, img_size=32, num_classes=5, freq_embed_resize='pad')
    with pytest.raises(ValueError, match=r"'pad' cannot shrink freq_embed.0 of shape \(16, 16, 8\) "
                                         r"to the model's \(8, 8, 8\)"):
        target.load_state_dict(source.state_dict())
    path = tmp_path / 'larger.pth'
    torch.save(dict(model=source.state_dict()), path)
    with pytest.raises(CheckpointError, match=rf"^{path}: freq_embed_resize='pad' cannot shrink"):
        load_pretrained(target, path)
    with pytest.raises(ValueError, match=r"freq_embed_resize must be one of \['pad', 'bicubic'\], "
                                         r"got 'crop'"):
        VHeat(MINI_POST, freq_embed_resize='crop')


def test_a_freq_embed_of_other_channels_is_left_to_fail(source):
    target = VHeat(dict(MINI_POST, dims=16), img_size=64, num_classes=5)
    with pytest.raises(RuntimeError, match='freq_embed.0'):
        target.load_state_dict(source.state_dict())
