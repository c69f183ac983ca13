"""timm's model contract on the vHeat models, checked here without timm's test suite (which
tests/test_timm_suite.py runs from a checkout): the default config, the classifier reset with
and without pooling, forward_features / forward_head, forward_intermediates with ``norm`` and
``stop_early``, features_only, and FX tracing with timm's own tracer settings.
"""
import pytest
import torch
from torch import nn

timm = pytest.importorskip('timm')

import vheat_mm.timm_models  # noqa: E402,F401  (registers the timm models)
from helpers import MINI, MINI_POST  # noqa: E402
from vheat_mm.models import VHeat  # noqa: E402

CFG_KEYS = ('url', 'num_classes', 'input_size', 'pool_size', 'crop_pct', 'interpolation',
            'mean', 'std', 'first_conv', 'classifier')


def stages_run(model: VHeat) -> list[int]:
    """Records, in the returned list, the index of every stage that runs from now on."""
    ran = []
    for i, stage in enumerate(model.layers):
        stage.register_forward_pre_hook(lambda m, args, i=i: ran.append(i))
    return ran


@pytest.mark.parametrize('arch', [MINI, MINI_POST], ids=['prenorm', 'postnorm'])
def test_default_cfg_and_the_classifier_with_and_without_pooling(arch):
    model = timm.create_model('vheat_tiny', arch=arch).eval()
    cfg = model.pretrained_cfg
    assert all(cfg.get(key) is not None for key in CFG_KEYS)
    state = model.state_dict()
    assert {f'{cfg["classifier"]}.weight', f'{cfg["first_conv"]}.weight'} <= state.keys()
    assert model.num_classes == 1000 and model.num_features == model.head_hidden_size == 64
    x = torch.randn(1, *cfg['input_size'])
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        assert features.shape == (1, model.num_features, *cfg['pool_size'])
        assert pooled.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0 and isinstance(model.get_classifier(), nn.Identity)
        torch.testing.assert_close(model(x), pooled, rtol=0, atol=0)
        model.reset_classifier(0, '')  # no pooling: the normalised map, NCHW as pool_size says
        normed = model.classifier[0](features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(model(x), normed, rtol=0, atol=0)
        unpooled = timm.create_model('vheat_tiny', arch=arch, num_classes=0, global_pool='')
        assert unpooled.eval()(x).shape == (1, 64, *cfg['pool_size'])
        model.reset_classifier(5, 'avg')
        assert model.get_classifier() is model.get_submodule(cfg['classifier'])
        assert model(x).shape == (1, 5) and model.num_classes == 5
    with pytest.raises(ValueError, match="global_pool must be one of"):
        model.reset_classifier(0, 'max')


def test_a_new_linear_layer_follows_the_model_and_is_initialised_as_its_layers():
    model = VHeat(MINI, img_size=64, num_classes=0, global_pool='').double()
    model.reset_classifier(500, 'avg')
    linear = model.get_classifier()
    assert linear.weight.dtype == torch.float64 and linear.weight.shape == (500, 64)
    # trunc-normal std .02 (nn.Linear's own init would have std 0.07 here) and bias 0
    assert torch.all(linear.bias == 0) and 0.018 < linear.weight.std() < 0.022
    assert model(torch.randn(2, 3, 64, 64, dtype=torch.float64)).shape == (2, 500)


def test_forward_intermediates_norm_stop_early_and_formats():
    model = timm.create_model('vheat_tiny', arch=MINI_POST).eval()
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        assert [m.shape[1:] for m in maps] == [(8, 24, 16), (16, 12, 8), (32, 6, 4), (64, 3, 2)]
        _, normed = model.forward_intermediates(x, norm=True)  # the head's norm, last stage
        for a, b in zip(normed[:3], maps[:3]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        head_norm = model.classifier[0]
        torch.testing.assert_close(
            normed[3], head_norm(maps[3].permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        assert not torch.allclose(normed[3], maps[3])

        ran = stages_run(model)
        final, (map1,) = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert ran == [0, 1]
        torch.testing.assert_close(final, maps[1], rtol=0, atol=0)
        torch.testing.assert_close(map1, maps[1], rtol=0, atol=0)
        ran.clear()
        last_two = model.forward_intermediates(x, indices=2, output_fmt='NHWC',
                                               intermediates_only=True)
        assert ran == [0, 1, 2, 3]
        for a, b in zip(last_two, maps[2:]):
            torch.testing.assert_close(a, b.permute(0, 2, 3, 1), rtol=0, atol=0)
        ran.clear()
        (first,) = model.forward_intermediates(x, indices=[-4], intermediates_only=True)
        assert ran == [0]
        torch.testing.assert_close(first, maps[0], rtol=0, atol=0)
    for bad in (5, [4], []):
        with pytest.raises(ValueError, match='indices'):
            model.forward_intermediates(x, indices=bad)


def test_features_only_runs_the_stages_it_returns():
    model = timm.create_model('vheat_tiny', arch=MINI, features_only=True, out_indices=(0, 1))
    plain = VHeat(MINI)
    plain.load_state_dict(model.model.state_dict(), strict=False)
    ran = stages_run(model.model)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        maps = model.eval()(x)
        assert ran == [0, 1]
        expected = plain.eval().forward_intermediates(x, indices=(0, 1), intermediates_only=True)
    for a, b in zip(maps, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not any(key.startswith('classifier.') for key in model.state_dict())  # pruned head
    with pytest.raises(ValueError, match="feature_cls must be 'getter'"):
        timm.create_model('vheat_tiny', arch=MINI, features_only=True, feature_cls='fx')


@pytest.mark.parametrize('arch', [MINI, MINI_POST], ids=['prenorm', 'postnorm'])
def test_timm_fx_feature_extractor_matches_eager_and_trains(arch):
    """timm's own create_feature_extractor (its tracer with its registered leaves)."""
    model = timm.create_model('vheat_tiny', arch=arch, num_classes=42).eval()
    extractor = timm.models.create_feature_extractor(model, return_nodes={'classifier.3': 'out'})
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(extractor(x)['out'], model(x), rtol=0, atol=0)
    model.train()
    extractor = timm.models.create_feature_extractor(model, return_nodes={'classifier.3': 'out'})
    extractor.train()(x)['out'].mean().backward()
    assert all(p.grad is not None for p in model.parameters())
