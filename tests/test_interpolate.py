"""interpolate4downstream.py and vheat_mm.checkpoint.convert_freq_embeds.

The expected padding is computed here from its definition (the official tool's): stage i's
(s, s, C) freq_embed is zero-padded at the bottom and right by n = (tg - pt) // 2**(i + 2).
"""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from helpers import (DAMAGED_FILES, MINI, ROOT, load_script, write_crafted_checkpoint,
                      write_damaged_checkpoint)
from vheat_mm import load_pretrained
from vheat_mm.checkpoint import convert_freq_embeds, write_checkpoint
from vheat_mm.models import VHeat, VHeatFeatures
from vheat_mm.models.heat import resize_freq_embed

SCRIPT = ROOT / 'interpolate4downstream.py'
PT, TG = 64, 128


script = load_script(SCRIPT)


def documented_pad(freq_embed, stage, pt=PT, tg=TG):
    n = (tg - pt) // 2**(stage + 2)
    return F.pad(freq_embed.permute(2, 0, 1), (0, n, 0, n), 'constant', 0).permute(1, 2, 0)


@pytest.fixture(scope='module')
def states():
    torch.manual_seed(1)
    first = VHeat(MINI, img_size=PT, num_classes=5).state_dict()
    second = VHeat(MINI, img_size=PT, num_classes=5).state_dict()
    return first, second


def layouts(states):
    model, ema = states
    return {
        'official': ({'model': model, 'epoch': 3}, {'model': ''}),
        'official_ema': ({'model': model, 'model_ema': ema, 'max_accuracy': 80.5},
                         {'model': '', 'model_ema': ''}),
        'mmengine': ({'meta': {'epoch': 1}, 'state_dict': {f'backbone.{k}': v
                                                          for k, v in model.items()}},
                     {'state_dict': 'backbone.'}),
        'mmengine_bare': ({'state_dict': model, 'meta': {'iter': 7}}, {'state_dict': ''}),
    }


def run(*args):
    script.main([str(a) for a in args])


def save(tmp_path, checkpoint, name='pt.pth'):
    path = tmp_path / name
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize('layout', ['official', 'official_ema', 'mmengine', 'mmengine_bare'])
def test_pad_is_the_documented_padding_in_every_layout(tmp_path, states, layout, capsys):
    checkpoint, entries = layouts(states)[layout]
    src, dst = save(tmp_path, checkpoint), tmp_path / 'tg.pth'
    run('--pt_pth', src, '--pt_size', PT, '--tg_pth', dst, '--tg_size', TG)
    out = torch.load(dst, weights_only=True)
    assert sorted(out) == sorted(checkpoint)
    for key in set(checkpoint) - set(entries):
        assert out[key] == checkpoint[key]
    for entry, prefix in entries.items():
        assert list(out[entry]) == list(checkpoint[entry])
        for key, value in checkpoint[entry].items():
            stage = int(key[-1]) if key.startswith(f'{prefix}freq_embed.') else None
            expected = value if stage is None else documented_pad(value, stage)
            assert out[entry][key].dtype == value.dtype
            assert torch.equal(out[entry][key], expected), key
        assert out[entry][f'{prefix}freq_embed.3'].shape == (4, 4, 64)
    printed = capsys.readouterr().out
    assert 'Shape before interpolation: torch.Size([16, 16, 8])' in printed
    assert 'Shape after interpolation (pad): torch.Size([32, 32, 8])' in printed
    assert printed.count('Layer ') == 4 * len(entries)


def test_bicubic_is_resize_freq_embed(tmp_path, states):
    model, _ = states
    src, dst = save(tmp_path, {'model': model}), tmp_path / 'tg.pth'
    run('--pt_pth', src, '--pt_size', PT, '--tg_pth', dst, '--tg_size', 96, '--mode', 'bicubic')
    out = torch.load(dst, weights_only=True)['model']
    for stage in range(4):
        size = 96 // 4 // 2**stage
        expected = resize_freq_embed(model[f'freq_embed.{stage}'], (size, size))
        assert torch.equal(out[f'freq_embed.{stage}'], expected)
        assert not torch.equal(out[f'freq_embed.{stage}'][:4, :4],
                               documented_pad(model[f'freq_embed.{stage}'], stage, tg=96)[:4, :4])


def test_input_file_and_dict_are_left_unchanged(tmp_path, states):
    model, _ = states
    src = save(tmp_path, {'model': model, 'epoch': 3})
    before = src.read_bytes()
    run('--pt_pth', src, '--pt_size', PT, '--tg_pth', tmp_path / 'tg.pth', '--tg_size', TG)
    assert src.read_bytes() == before
    checkpoint = {'model': dict(model)}
    converted = convert_freq_embeds(checkpoint, pt_size=PT, tg_size=TG)
    assert checkpoint['model']['freq_embed.0'] is model['freq_embed.0']
    assert converted['model']['freq_embed.0'].shape == (32, 32, 8)
    assert converted['model']['layers.0.0.norm1.weight'] is model['layers.0.0.norm1.weight']


def test_equal_sizes_change_nothing(tmp_path, states):
    model, _ = states
    converted = convert_freq_embeds({'model': model}, pt_size=PT, tg_size=PT)
    assert all(torch.equal(converted['model'][k], v) for k, v in model.items())


def test_refuses_to_write_over_its_input(tmp_path, states):
    src = save(tmp_path, {'model': states[0]})
    before = src.read_bytes()
    link, hard = tmp_path / 'link.pth', tmp_path / 'hard.pth'
    link.symlink_to(src)
    os.link(src, hard)
    for target in (src, link, hard, os.path.join(tmp_path, '.', 'pt.pth')):
        with pytest.raises(SystemExit, match='is the input checkpoint itself'):
            run('--pt_pth', src, '--pt_size', PT, '--tg_pth', target, '--tg_size', TG)
    assert src.read_bytes() == before


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path, states, monkeypatch):
    target = tmp_path / 'tg.pth'
    target.write_bytes(b'previous')

    def broken_save(obj, file):
        file.write(b'partial')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(OSError, match='disk full'):
        write_checkpoint({'model': states[0]}, target)
    assert target.read_bytes() == b'previous'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['tg.pth']


SIZES = 'image sizes must be positive multiples of 32 (the stride of the last stage), got '
# case: (pt_size, tg_size, what the one-line message must contain)
BAD_INPUTS = {
    'pt_not_32': (100, 128, SIZES + 'pt_size=100'),
    'tg_not_32': (64, 500, SIZES + 'tg_size=500'),
    'neither_32': (100, 500, SIZES + 'pt_size=100, tg_size=500'),
    'pt_zero': (0, 128, SIZES + 'pt_size=0'),
    'tg_smaller': (64, 32, 'tg_size (32) is smaller than pt_size (64): the conversion only '
                           'enlarges freq_embed, so tg_size must be at least pt_size'),
    'no_freq_embed': (PT, TG, "no freq_embed in the checkpoint entry 'model' (is it a vHeat "
                              'checkpoint?): expected keys freq_embed.<stage> or '
                              'backbone.freq_embed.<stage>; keys found: a.weight, b.bias'),
    'unknown_layout': (PT, TG, 'unknown checkpoint layout: expected an official entry (model_ema, '
                               'model) or an mmengine entry (state_dict), found top-level '
                               "keys ['epoch', 'weights']"),
    'wrong_pt_size': (96, 128, "model['freq_embed.0'] has shape (16, 16, 8), but pt_size=96 "
                               'gives stage 0 a (24, 24, C) freq_embed'),
    # an index read from a key never drives a loop: it is refused at once
    'huge_stage_index': (PT, TG, "model['freq_embed.100000000'] is not the freq_embed of a "
                                 'stage: the entry holds freq_embeds of 5 stages, numbered from 0'),
    'long_stage_index': (PT, TG, "model['freq_embed.99999999999999999999"),
    'unsafe': (PT, TG, 'refusing to load'),
    'missing': (PT, TG, 'checkpoint not found'),
    **{kind: (PT, TG, message) for kind, message in DAMAGED_FILES.items()},
}


def write_bad_source(path, case, states):
    """The input checkpoint of a :data:`BAD_INPUTS` case (none for 'missing')."""
    if case in DAMAGED_FILES:
        write_damaged_checkpoint(path, case, {'model': states[0]})
    elif case == 'no_freq_embed':
        torch.save({'model': {'a.weight': torch.ones(1), 'b.bias': torch.ones(1)}}, path)
    elif case == 'unknown_layout':
        torch.save({'weights': states[0], 'epoch': 1}, path)
    elif case in ('huge_stage_index', 'long_stage_index'):
        index = '100000000' if case == 'huge_stage_index' else '9' * 5000
        torch.save({'model': {**states[0], f'freq_embed.{index}': torch.zeros(1, 1, 8)}}, path)
    elif case == 'unsafe':
        write_crafted_checkpoint(path, {'model': states[0]})
    elif case != 'missing':
        torch.save({'model': states[0]}, path)


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_inputs_exit_with_a_clear_message(tmp_path, states, case):
    src, dst = tmp_path / 'pt.pth', tmp_path / 'tg.pth'
    pt, tg, message = BAD_INPUTS[case]
    write_bad_source(src, case, states)
    with pytest.raises(SystemExit) as exit_info:
        run('--pt_pth', src, '--pt_size', pt, '--tg_pth', dst, '--tg_size', tg)
    printed = exit_info.value.code  # sys.exit(message): printed to stderr, exit status 1
    assert isinstance(printed, str) and printed.startswith('interpolate4downstream.py: error: ')
    assert message in printed and '\n' not in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if case == 'missing' else ['pt.pth'])


def test_padded_checkpoint_loads_into_the_target_size_without_resizing(tmp_path, states):
    src, dst = save(tmp_path, {'model': states[0]}), tmp_path / 'tg.pth'
    run('--pt_pth', src, '--pt_size', PT, '--tg_pth', dst, '--tg_size', TG)
    model = VHeatFeatures(MINI, img_size=TG)
    report = load_pretrained(model, dst)
    assert report.resized == []
    assert report.missing == [f'outnorm{i}.{p}' for i in range(4) for p in ('bias', 'weight')]
    for stage in range(4):
        assert torch.equal(model.state_dict()[f'freq_embed.{stage}'],
                           documented_pad(states[0][f'freq_embed.{stage}'], stage))


def test_command_line(tmp_path, states):
    src, dst = save(tmp_path, {'model': states[0]}), tmp_path / 'tg.pth'
    ok = subprocess.run([sys.executable, str(SCRIPT), '--pt_pth', str(src), '--pt_size', str(PT),
                         '--tg_pth', str(dst), '--tg_size', str(TG)],
                        capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert f'Finished! Saved to {dst}.' in ok.stdout and dst.is_file()
    bad = subprocess.run([sys.executable, str(SCRIPT), '--pt_pth', str(src), '--pt_size', '60',
                          '--tg_pth', str(tmp_path / 'x.pth')],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1
    assert 'interpolate4downstream.py: error: image sizes must be positive multiples of 32' \
        in bad.stderr
