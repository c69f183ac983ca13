"""A checkpoint that fits badly warns on every load path and fails under strict loading; NaN or
inf weights are refused, naming the tensor."""
import logging

import pytest
import timm
import torch
from vheat_mm.mm.runner import load_checkpoint  # the reading VHeatRunner does

from helpers import MINI, python_tool
from vheat_mm.checkpoint import CheckpointError, load_pretrained, strict_loading
from vheat_mm.mm.backbone import VHeatBackbone
from vheat_mm.models import VHeat, VHeatFeatures
import vheat_mm.timm_models  # noqa: F401  registers vheat_tiny/small/base with timm

DEEPER = dict(MINI, depths=(1, 1, 6, 1))  # as vHeat-S is to vHeat-T


@pytest.fixture(scope='module')
def swin_checkpoint(tmp_path_factory):
    """A Swin-T checkpoint in the layout of the Swin release ({'model': ...})."""
    path = tmp_path_factory.mktemp('swin') / 'swin_tiny_patch4_window7_224.pth'
    torch.save(dict(model=timm.create_model('swin_tiny_patch4_window7_224').state_dict()), path)
    return path


def fit_warnings(caplog):
    return [r for r in caplog.records
            if r.levelno == logging.WARNING and 'fits the model badly' in r.getMessage()]


def test_swin_into_vheat_warns_and_fails_under_strict(swin_checkpoint, caplog):
    model = VHeat('tiny')
    with caplog.at_level(logging.WARNING):
        report = load_pretrained(model, swin_checkpoint)
    assert report.loaded == 0
    [warning] = fit_warnings(caplog)
    assert warning.getMessage().startswith(
        f"checkpoint {swin_checkpoint} fits the model badly: 0 of the model's {report.total} "
        f'tensors loaded from it')
    with pytest.raises(CheckpointError) as error:
        load_pretrained(model, swin_checkpoint, strict=True)
    assert str(error.value).startswith(f'checkpoint {swin_checkpoint} fits the model badly')
    with strict_loading(), pytest.raises(CheckpointError, match='fits the model badly'):
        load_pretrained(model, swin_checkpoint)


def test_init_cfg_and_mmengine_paths_warn_and_fail_under_strict(swin_checkpoint, caplog):
    backbone = VHeatBackbone('tiny', init_cfg=dict(type='Pretrained',
                                                   checkpoint=str(swin_checkpoint)))
    with caplog.at_level(logging.WARNING):
        backbone.init_weights()
        load_checkpoint(VHeatFeatures('tiny'), str(swin_checkpoint))
    assert len(fit_warnings(caplog)) == 2
    strict = VHeatBackbone('tiny', init_cfg=dict(type='Pretrained', strict=True,
                                                 checkpoint=str(swin_checkpoint)))
    with pytest.raises(CheckpointError, match='fits the model badly'):
        strict.init_weights()
    with strict_loading(), pytest.raises(CheckpointError, match='fits the model badly'):
        load_checkpoint(VHeatFeatures('tiny'), str(swin_checkpoint))


def test_a_deeper_arch_and_an_empty_state_dict_warn(tmp_path, caplog):
    deeper, empty = tmp_path / 'deeper.pth', tmp_path / 'empty.pth'
    torch.save(dict(model=VHeat(DEEPER, img_size=64).state_dict()), deeper)
    torch.save(dict(model={}), empty)
    with caplog.at_level(logging.WARNING):
        report = load_pretrained(VHeat(MINI, img_size=64), deeper)
        assert report.loaded > 0.9 * report.total  # nearly every tensor of the model: a mix
        load_checkpoint(VHeat(MINI, img_size=64), str(empty))
    deeper_warning, empty_warning = (r.getMessage() for r in fit_warnings(caplog))
    assert f"{report.loaded} of the model's {report.total} tensors loaded from it, " \
           f'{len(report.unexpected)} of its' in deeper_warning
    assert "0 of the model's" in empty_warning and 'empty.pth' in empty_warning


def test_keys_of_other_shapes_count_as_not_loaded_on_mmengine_paths(tmp_path, caplog):
    """As vHeat-B is to vHeat-T: the same keys, other widths (mmengine skips those tensors)."""
    wider = tmp_path / 'wider.pth'
    torch.save(dict(model=VHeat(dict(MINI, dims=16), img_size=64).state_dict()), wider)
    with caplog.at_level(logging.WARNING):
        load_checkpoint(VHeat(MINI, img_size=64), str(wider))
    [warning] = fit_warnings(caplog)
    assert 'wider.pth' in warning.getMessage()
    with strict_loading(), pytest.raises(CheckpointError, match='fits the model badly'):
        load_checkpoint(VHeat(MINI, img_size=64), str(wider))
    # a freq_embed of another resolution, which the load hook resizes, does load
    caplog.clear()
    other_size = tmp_path / 'other_size.pth'
    torch.save(dict(model=VHeat(MINI, img_size=128).state_dict()), other_size)
    with caplog.at_level(logging.WARNING), strict_loading():
        load_checkpoint(VHeat(MINI, img_size=64), str(other_size))
        load_checkpoint(VHeat(MINI, img_size=256, freq_embed_resize='pad'), str(other_size))
    assert not fit_warnings(caplog)


def test_a_good_fit_is_quiet(tmp_path, caplog):
    path = tmp_path / 'same.pth'
    torch.save(dict(model=VHeat(MINI, img_size=64).state_dict()), path)
    with caplog.at_level(logging.WARNING):
        load_pretrained(VHeatFeatures(MINI, img_size=64), path, strict=False)
        load_checkpoint(VHeat(MINI, img_size=64), str(path), strict=True)
    assert not fit_warnings(caplog)


def test_strict_key_mismatch_message_starts_with_what_failed(tmp_path):
    path = tmp_path / 'classifier.pth'
    torch.save(dict(model=VHeat(MINI, img_size=64).state_dict()), path)
    with pytest.raises(CheckpointError) as error:
        load_pretrained(VHeatFeatures(MINI, img_size=64), path, strict=True)
    assert str(error.value).startswith(f'checkpoint {path} does not match the model exactly '
                                       f'(strict): missing in the checkpoint')


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_nan_or_inf_weights_are_refused_on_every_path(tmp_path, value):
    state = VHeat(MINI, img_size=64).state_dict()
    state['layers.2.1.op.linear.weight'][0, 0] = value
    path = tmp_path / 'diverged.pth'
    torch.save(dict(model=state), path)
    message = (f"refusing to load {path}: tensor 'layers.2.1.op.linear.weight' "
               f"{tuple(state['layers.2.1.op.linear.weight'].shape)} holds 1 NaN or inf value")
    with pytest.raises(CheckpointError, match=message.replace('(', r'\(').replace(')', r'\)')):
        load_pretrained(VHeat(MINI, img_size=64), path)
    with pytest.raises(CheckpointError, match='holds 1 NaN or inf value'):
        load_checkpoint(VHeat(MINI, img_size=64), str(path))
    with pytest.raises(CheckpointError, match='holds 1 NaN or inf value'):
        timm.create_model('vheat_tiny', pretrained=True, arch=MINI, img_size=64,
                          pretrained_cfg_overlay=dict(file=str(path)))
    done = python_tool('interpolate4downstream.py', '--pt_pth', path, '--pt_size', '64',
                       '--tg_pth', tmp_path / 'out.pth', '--tg_size', '128', returncode=1)
    assert done.stderr.strip().startswith('interpolate4downstream.py: error: refusing to load')
    assert not (tmp_path / 'out.pth').exists()


def test_visualize_heat_refuses_a_checkpoint_that_fits_badly(swin_checkpoint, tmp_path):
    done = python_tool('tools/analysis_tools/visualize_heat.py', '--weights',
                       swin_checkpoint, '--no-swin', '--out-dir', tmp_path, returncode=1)
    assert 'error: checkpoint' in done.stderr and 'fits the model badly' in done.stderr
    assert not list(tmp_path.iterdir())
