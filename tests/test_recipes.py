"""The paper configs are the paper's recipe.

Every hyperparameter that decides the result, for each of the 11 paper configs, equals the
official config's (``tools/analysis_tools/recipes.py`` reads both; the official ones from a
checkout named by ``VHEAT_OFFICIAL_CHECKOUT``, skipped without one), and ``docs/recipes.md``
shows those tables. Without a checkout: each downstream config starts from the freq_embed that
``interpolate4downstream.py`` writes for its img_size (zero-padded from 224).
"""
import os
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from helpers import CONFIGS, MINI, MINI_POST, ROOT, load_script
from vheat_mm.checkpoint import convert_freq_embeds
from vheat_mm.mm.toolbox import registry as toolbox_registry
from vheat_mm.models import VHeat

recipes = load_script(ROOT / 'tools/analysis_tools/recipes.py')
CHECKOUT = Path(os.environ.get('VHEAT_OFFICIAL_CHECKOUT', '/nonexistent'))
needs_checkout = pytest.mark.skipif(not CHECKOUT.is_dir(), reason='set VHEAT_OFFICIAL_CHECKOUT '
                                                                  'to a checkout of github '
                                                                  'MzeroMiko/vHeat')
DOWNSTREAM = [name for name in recipes.PAPER_CONFIGS if not name.startswith('classification/')]


@needs_checkout
@pytest.mark.parametrize('name', list(recipes.PAPER_CONFIGS))
def test_paper_config_has_the_official_recipe(name):
    rows = recipes.recipe_rows(name, CHECKOUT)
    assert len(rows) >= 20
    assert not recipes.differences(name, rows)


@needs_checkout
def test_docs_recipes_shows_every_paper_config():
    text = (ROOT / 'docs/recipes.md').read_text()
    for name in recipes.PAPER_CONFIGS:
        table = recipes.markdown(name, recipes.recipe_rows(name, CHECKOUT))
        assert table in text, f'docs/recipes.md does not show the table of {name}:\n{table}'


def test_a_difference_is_named():
    rows = [recipes.row('drop_path_rate', 0.3, 0.4), recipes.row('lr', 6e-5, 6e-5)]
    assert recipes.differences('upernet/x.py', rows) == [
        'upernet/x.py: drop_path_rate: vheat_mm 0.3 != official 0.4']
    assert '| drop_path_rate **(differs)** | 0.3 | 0.4 |' in recipes.markdown(DOWNSTREAM[0], rows)


@pytest.fixture(scope='module')
def classifiers(tmp_path_factory):
    """Official-layout 224-pixel classification checkpoints of small dims, one per block kind,
    their freq_embed filled with values (not zeros)."""
    directory = tmp_path_factory.mktemp('classifiers')
    paths = {}
    for post_norm, arch in ((False, MINI), (True, MINI_POST)):
        state = VHeat(arch, img_size=224).state_dict()
        for key in [k for k in state if k.startswith('freq_embed.')]:
            state[key] = torch.randn_like(state[key])
        paths[post_norm] = directory / f'vHeat_{"post" if post_norm else "pre"}.pth'
        torch.save(dict(model=state), paths[post_norm])
    return paths


def built_backbone(backbone: dict, toolbox: str) -> torch.nn.Module:
    registry = toolbox_registry(toolbox).MODELS
    with DefaultScope.overwrite_default_scope(toolbox):
        model = registry.build(backbone)
    model.init_weights()
    return model


def assert_starts_as_interpolate4downstream(model, checkpoint_path):
    """The backbone's freq_embeds are what interpolate4downstream.py (default mode) writes from
    the checkpoint for the backbone's img_size."""
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    written = convert_freq_embeds(checkpoint, pt_size=224, tg_size=model.img_size,
                                  mode='pad')['model']
    for i, got in enumerate(model.freq_embed):
        assert torch.equal(got.detach(), written[f'freq_embed.{i}']), f'freq_embed.{i}'


@pytest.mark.parametrize('name', DOWNSTREAM)
def test_downstream_config_starts_from_the_zero_padded_freq_embed(name, classifiers):
    cfg = Config.fromfile(str(CONFIGS / name))
    backbone = cfg.model.backbone
    post_norm = recipes._arch_tuple(backbone.arch)[2]
    backbone.arch = MINI_POST if post_norm else MINI  # the config's block kind, small dims
    backbone.init_cfg.checkpoint = str(classifiers[post_norm])
    model = built_backbone(backbone, cfg.default_scope)
    assert model.freq_embed_resize == 'pad' and model.img_size in (224, 512)
    assert_starts_as_interpolate4downstream(model, classifiers[post_norm])


@pytest.mark.parametrize('toolbox,name,img_size', [('mmdet', 'MMDET_VHEAT', 512),
                                                   ('mmseg', 'MMSEG_VHEAT', 512)])
def test_official_names_pad_by_default(toolbox, name, img_size, classifiers):
    model = built_backbone(dict(type=name, img_size=img_size, pretrained=str(classifiers[True]),
                                depths=MINI_POST['depths'], dims=MINI_POST['dims'],
                                layer_scale=MINI_POST['layer_scale']), toolbox)
    assert_starts_as_interpolate4downstream(model, classifiers[True])
