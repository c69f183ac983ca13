"""The plain-PyTorch model: official equivalence, shapes, deploy form, training contract."""
import ast
import inspect
import re

import pytest
import torch

from helpers import DATA, MINI, MINI_POST, mini_arch
from vheat_mm.models import ARCH_SETTINGS, VHeat, VHeatFeatures, VHeatTrunk
from vheat_mm.variants import ARCHS


def official_keys():
    keys = {}
    for line in (DATA / 'official_state_dict_tiny.txt').read_text().splitlines():
        if line and not line.startswith('#'):
            name, shape = line.split(' ', 1)
            keys[name] = tuple(ast.literal_eval(shape))
    return keys


def build_official(case):
    cfg = case['config']
    model = VHeat(mini_arch(cfg), img_size=cfg['img_size'], num_classes=cfg['num_classes'])
    model.load_state_dict(case['state_dict'], strict=True)
    return model.eval()


@pytest.mark.parametrize('case', ['prenorm', 'postnorm_layerscale'])
def test_logits_equal_official(official_mini, case):
    ref = official_mini[case]
    model = build_official(ref)
    with torch.no_grad():
        logits = model(ref['input'])
    torch.testing.assert_close(logits, ref['logits'], rtol=1e-4, atol=1e-5)
    model.switch_to_deploy()
    with torch.no_grad():
        deployed = model(ref['input'])
    torch.testing.assert_close(deployed, ref['logits_deploy'], rtol=1e-4, atol=1e-5)


def test_wrong_weights_change_logits(official_mini):
    """The equivalence test can fail: one perturbed conductivity moves the logits."""
    ref = official_mini['prenorm']
    model = build_official(ref)
    with torch.no_grad():
        model.layers[0][0].op.to_k[0].bias.add_(1.0)
        assert not torch.allclose(model(ref['input']), ref['logits'], rtol=1e-4, atol=1e-5)


def test_tiny_state_dict_is_official():
    expected = official_keys()
    state = VHeat('tiny').state_dict()
    assert list(state) == list(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


# The parameter count of every arch of ARCH_SETTINGS (the released weights' counts), as the
# arch records (vheat_mm/variants.py) state them.
PARAMETER_COUNTS = {arch.name: arch.params for arch in ARCHS}


@pytest.mark.slow
@pytest.mark.parametrize('arch', sorted(ARCH_SETTINGS))
def test_parameter_counts(arch):
    assert arch in PARAMETER_COUNTS, f'add the parameter count of arch {arch!r}'
    model = VHeat(arch)
    assert sum(p.numel() for p in model.parameters()) == PARAMETER_COUNTS[arch]
    settings = ARCH_SETTINGS[arch]
    assert model.arch.post_norm == settings['post_norm']
    assert (model.layers[2][0].gamma1 is not None) == (settings['layer_scale'] is not None)


def test_unknown_arch_lists_choices():
    with pytest.raises(ValueError, match=re.escape(f"unknown vHeat arch 'huge'; choose one of "
                                                   f"{sorted(ARCH_SETTINGS)}")):
        VHeat('huge')
    with pytest.raises(ValueError, match=r"unknown keys \['depth'\]"):
        VHeat(dict(depth=(2, 2, 6, 2), dims=96))
    with pytest.raises(TypeError, match=re.escape(
            "VHeat: unknown keyword 'drop_rate' (did you mean 'drop_path_rate'?); allowed "
            "keywords are arch, num_classes, global_pool, img_size, ")):
        VHeat('tiny', drop_rate=0.1)


@pytest.mark.parametrize('cls', [VHeat, VHeatFeatures])
def test_the_trunks_keywords_are_declared_once(cls):
    """The models take the trunk's keywords from its signature (their own list only theirs):
    same names, defaults and annotations, shown in their signatures."""
    trunk = [p for p in inspect.signature(VHeatTrunk.__init__).parameters.values()
             if p.kind is p.KEYWORD_ONLY]
    params = inspect.signature(cls.__init__).parameters
    assert trunk and all(params[p.name] == p for p in trunk)
    source = inspect.getsource(cls.__init__)
    assert not any(f'{p.name}:' in source for p in trunk), 'declared again'


SHAPE = 'vHeat expects images of shape (B, 3, H, W), got '
SMALL = 'vHeat needs images of at least 32x32 pixels (the stride of its last stage), got '


@pytest.mark.parametrize('model_cls', [VHeat, VHeatFeatures])
@pytest.mark.parametrize('shape, message', [
    ((3, 64, 64), SHAPE + '(3, 64, 64)'),
    ((1, 1, 64, 64), SHAPE + '(1, 1, 64, 64)'),
    ((1, 3, 8, 8, 1), SHAPE + '(1, 3, 8, 8, 1)'),
    ((1, 3, 31, 64), SMALL + 'H=31, W=64'),
    ((2, 3, 64, 20), SMALL + 'H=64, W=20'),
    ((1, 3, 1, 1), SMALL + 'H=1, W=1'),
])
def test_bad_input_is_a_clear_error(model_cls, shape, message):
    model = model_cls(MINI, img_size=64).eval()
    with pytest.raises(ValueError, match=re.escape(message)):
        model(torch.zeros(shape))


def test_smallest_input_is_the_stride_of_the_last_stage():
    four = VHeatFeatures(MINI, img_size=64).eval()
    three = VHeatFeatures(dict(depths=(1, 1, 1), dims=8), img_size=64, out_indices=(2,)).eval()
    with torch.no_grad():
        assert [f.shape[-2:] for f in four(torch.randn(1, 3, 32, 33))][-1] == (1, 2)
        assert three(torch.randn(1, 3, 16, 16))[0].shape == (1, 32, 1, 1)
    with pytest.raises(ValueError, match=re.escape('at least 16x16 pixels (the stride of its '
                                                   'last stage), got H=16, W=15')):
        three(torch.randn(1, 3, 16, 15))


def _poison_stage(model, stage: int) -> None:
    """Make every output value of ``stage`` NaN: the residual adds a NaN MLP bias."""
    with torch.no_grad():
        model.layers[stage][0].mlp.fc2.bias.fill_(float('nan'))


@pytest.mark.parametrize('model_cls', [VHeat, VHeatFeatures])
def test_check_finite_names_the_input(model_cls):
    model = model_cls(MINI, img_size=64, check_finite=True).eval()
    x = torch.randn(2, 3, 64, 64)
    x[0, 0, 0, :3] = float('nan')
    x[1, 2, 5, 5] = float('-inf')
    with pytest.raises(ValueError, match=re.escape(
            'check_finite: the input holds 4 non-finite values of 24576 (3 NaN, 1 inf); every '
            'value must be finite')):
        model(x)


@pytest.mark.parametrize('deploy', [False, True])
@pytest.mark.parametrize('stage', [0, 1, 2, 3])
def test_check_finite_names_the_first_stage_with_non_finite_values(stage, deploy):
    model = VHeatFeatures(MINI, img_size=64, check_finite=True).eval()
    _poison_stage(model, stage)
    if deploy:
        model.switch_to_deploy()
    values = (16 >> stage) ** 2 * (8 << stage)  # one image: (64 / 4 / 2^i)^2 x 8 * 2^i
    with pytest.raises(ValueError, match=re.escape(
            f'check_finite: the output of stage {stage} holds {values} non-finite values of '
            f'{values} ({values} NaN, 0 inf)')):
        model(torch.randn(1, 3, 64, 64))


def test_check_finite_is_off_by_default():
    model = VHeatFeatures(MINI, img_size=64).eval()
    assert not model.check_finite
    _poison_stage(model, 1)
    x = torch.randn(1, 3, 64, 64)
    x[0, 0, 0, 0] = float('nan')
    with torch.no_grad():
        assert all(torch.isnan(f).any() for f in model(x))


@pytest.mark.parametrize('size', [(224, 224), (512, 512), (511, 511), (112, 137)])
def test_feature_shapes_at_any_size(size):
    model = VHeatFeatures(MINI_POST, img_size=224).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, *size))
    h, w = size
    for i, feat in enumerate(feats):
        for _ in range(i + 2):
            h, w = (h + 1) // 2, (w + 1) // 2
        assert feat.shape == (1, 8 * 2**i, h, w)
        assert feat.is_contiguous() and torch.isfinite(feat).all()
        h, w = size


def test_tiny_classifier_runs_at_other_sizes():
    model = VHeat('tiny').eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 112, 137)).shape == (1, 1000)


def test_deploy_equals_train_form_at_other_sizes(official_mini):
    ref = official_mini['postnorm_layerscale']
    model = build_official(ref)
    x = torch.randn(2, 3, 90, 77)
    with torch.no_grad():
        expected = model(x)
        model.switch_to_deploy()
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)  # cached path
    assert not any(p.requires_grad for p in model.parameters())


def test_checkpointing_gives_same_outputs_and_gradients():
    torch.manual_seed(1)
    plain = VHeatFeatures(MINI_POST, img_size=64, drop_path_rate=0.0)
    ckpt = VHeatFeatures(MINI_POST, img_size=64, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 80)
    outs = [sum(f.square().mean() for f in m(x)) for m in (plain, ckpt)]
    for out in outs:
        out.backward()
    torch.testing.assert_close(outs[0], outs[1])
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.parametrize('model_cls', [VHeat, VHeatFeatures])
def test_every_parameter_gets_a_gradient(model_cls):
    model = model_cls(MINI_POST, img_size=64).train()
    out = model(torch.randn(2, 3, 64, 64))
    outs = [out] if isinstance(out, torch.Tensor) else out
    loss = sum((o * torch.randn_like(o)).sum() for o in outs)  # a plain sum cancels after LN
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 2, 4])
def test_frozen_stages(frozen_stages):
    model = VHeatFeatures(MINI, img_size=64, frozen_stages=frozen_stages)
    model.train()
    frozen_prefixes = []
    if frozen_stages >= 0:
        frozen_prefixes.append('patch_embed.')
    for i in range(max(frozen_stages, 0)):
        frozen_prefixes += [f'layers.{i}.', f'freq_embed.{i}', f'outnorm{i}.']
    for name, param in model.named_parameters():
        assert param.requires_grad != name.startswith(tuple(frozen_prefixes)), name
    for name, module in model.named_modules():
        if name.startswith(tuple(frozen_prefixes)):
            assert not module.training, name
    assert model.layers[-1].training == (frozen_stages < 4)


OUT_INDICES_RULE = ('out_indices must be distinct stage indices in [0, 4) (or [-4, 0) counting '
                    'from the last)')


@pytest.mark.parametrize('keywords, message', [
    (dict(out_indices=(4,)), f'{OUT_INDICES_RULE}, got (4,)'),
    (dict(out_indices=(-5,)), f'{OUT_INDICES_RULE}, got (-5,)'),
    (dict(out_indices=(0, -4)), f'{OUT_INDICES_RULE}, got (0, -4)'),
    (dict(out_indices=()), f'{OUT_INDICES_RULE}, got ()'),
    (dict(frozen_stages=5), 'frozen_stages must be in [-1, 4], got 5'),
    (dict(frozen_stages=-2), 'frozen_stages must be in [-1, 4], got -2'),
    (dict(img_size=100), 'img_size must be a positive multiple of 32 (the stride of the last '
                         'stage), got 100'),
    (dict(img_size=0), 'img_size must be a positive multiple of 32'),
    (dict(drop_path_rate=1.5), 'drop_path_rate must be in [0, 1), got 1.5'),
])
def test_invalid_backbone_arguments(keywords, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        VHeatFeatures(MINI, **{'img_size': 64, **keywords})


MLP_RULE = ('arch mlp_ratio must be a number that gives every MLP at least one hidden channel '
            '(int(width * mlp_ratio) >= 1 for widths (8, 16, 32, 64)), got ')


@pytest.mark.parametrize('keywords, error, message', [
    (dict(img_size=224.0), TypeError, 'img_size must be an int, got 224.0 (float)'),
    (dict(in_channels=0), ValueError, 'in_channels must be at least 1, got 0'),
    (dict(in_channels=True), TypeError, 'in_channels must be an int, got True (bool)'),
    (dict(num_classes=2.5), TypeError, 'num_classes must be an int, got 2.5 (float)'),
    (dict(num_classes=-1), ValueError, 'num_classes must be at least 0, got -1'),
    (dict(drop_path_rate='0.1'), TypeError, "drop_path_rate must be a number, got '0.1'"),
    (dict(arch=dict(MINI, dims=8.5)), TypeError,
     'arch needs depths as a sequence of ints and dims as an int or a sequence of ints, got '
     'depths=(1, 1, 2, 1), dims=8.5'),
    (dict(arch=dict(MINI, mlp_ratio=-1)), ValueError, MLP_RULE + '-1'),
    (dict(arch=dict(MINI, mlp_ratio=0)), ValueError, MLP_RULE + '0'),
    (dict(arch=dict(MINI, mlp_ratio=float('nan'))), ValueError, MLP_RULE + 'nan'),
    (dict(arch=dict(MINI, layer_scale='1e-5')), TypeError,
     "arch layer_scale must be None or a number, got '1e-5'"),
])
def test_constructor_arguments_are_checked_where_they_are_read(keywords, error, message):
    with pytest.raises(error) as raised:
        VHeat(**{'arch': MINI, 'img_size': 64, **keywords})
    assert str(raised.value) == message


def test_a_numpy_array_is_named_as_what_it_is():
    import numpy as np

    with pytest.raises(TypeError) as raised:
        VHeat(MINI, img_size=64)(np.zeros((1, 3, 64, 64), np.float32))
    assert str(raised.value) == ('vHeat expects a torch.Tensor of images (B, 3, H, W), got a '
                                 'numpy.ndarray (torch.as_tensor converts a numpy array)')


def test_drop_path_is_stochastic_in_training_only():
    model = VHeat(MINI, img_size=64, num_classes=4, drop_path_rate=0.5)
    x = torch.randn(4, 3, 64, 64)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def _folded_buffers(model):
    return {name: buf for name, buf in model.named_buffers() if '.cache_attenuation' in name}


def test_evaluation_follows_the_weights_and_the_deploy_form_folds_per_size():
    """In evaluation decay**k and the resized freq_embed are computed on every forward (no
    cached copy to compare with the weights: tests/test_host_syncs.py), so the outputs follow an
    optimizer step and a load_state_dict; the deploy form folds them once per size into
    non-persistent buffers."""
    model = VHeatFeatures(MINI, img_size=64).eval()
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        first = model(x)
        again = model(x)
    assert not _folded_buffers(model)
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    model.train()
    sum(f.sum() for f in model(x)).backward()
    assert not _folded_buffers(model)  # training computes decay ** k anew: nothing cached
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    model.eval()
    fresh = VHeatFeatures(MINI, img_size=64).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        for a, b in zip(model(x), fresh(x)):
            torch.testing.assert_close(a, b)
        model.load_state_dict(VHeatFeatures(MINI, img_size=64).state_dict())
        reference = VHeatFeatures(MINI, img_size=64).eval()
        reference.load_state_dict(model.state_dict())
        for a, b in zip(model(x), reference(x)):
            torch.testing.assert_close(a, b)

    model.switch_to_deploy()
    with torch.no_grad():
        deployed = model(x)
        cached = _folded_buffers(model)
        deployed_again = model(x)
    sizes = ['{}x{}'.format(*f.shape[-2:]) for f in deployed]
    assert sorted(cached) == sorted(f'heat_cache.cache_attenuation{i}_{j}_{size}'
                                    for i, stage in enumerate(model.layers)
                                    for j in range(len(stage.blocks))
                                    for size in {sizes[i], '{}x{}'.format(*model.freq_embed[i].shape[:2])})
    assert all(buf is _folded_buffers(model)[k] for k, buf in cached.items())  # not rebuilt
    for a, b, c in zip(deployed, deployed_again, reference(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c)
    assert not any('cache_' in k for k in model.state_dict())


def test_training_recomputes_attenuation_with_gradients():
    model = VHeatFeatures(MINI, img_size=64).train()
    # squares: the gradient of a plain sum through the output LayerNorms is zero up to rounding
    sum(f.square().sum() for f in model(torch.randn(2, 3, 64, 64))).backward()
    assert not _folded_buffers(model)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.freq_embed)
    assert all(block.op.to_k[0].weight.grad is not None
               for stage in model.layers for block in stage.blocks)


def test_cache_built_in_inference_mode_serves_later_autograd():
    model = VHeatFeatures(MINI, img_size=64).eval()
    model.switch_to_deploy()
    x = torch.randn(1, 3, 96, 80)  # another size than the one folded by switch_to_deploy
    with torch.inference_mode():
        expected = model(x)
    x.requires_grad_(True)
    out = model(x)  # deploy form with gradients to the input, using the cached tensors
    sum(o.sum() for o in out).backward()
    assert x.grad is not None
    for a, b in zip(out, expected):
        torch.testing.assert_close(a.detach(), b)
