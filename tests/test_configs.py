"""The shipped configs build in their toolbox with the official architectures' parameter counts."""
from pathlib import Path

import pytest
import yaml
from mmengine.config import Config
from mmengine.registry import DefaultScope

from helpers import CONFIGS, ROOT
from vheat_mm.mm.toolbox import registry as toolbox_registry
from vheat_mm.variants import RELEASES

# The parameter count of the model each paper config builds, as its record states it
# (vheat_mm/variants.py); the tiny 3x detector keeps img_size 224, as the official config does.
EXPECTED = {f'{release.family.folder}/{release.name}.py': release.params for release in RELEASES}


@pytest.mark.slow
@pytest.mark.parametrize('name,params', EXPECTED.items())
def test_config_builds_with_official_parameter_count(name, params):
    cfg = Config.fromfile(str(CONFIGS / name))
    assert cfg.custom_imports['imports'] == ['vheat_mm']
    assert cfg.model.backbone.type == 'vHeat'
    registry = toolbox_registry(cfg.default_scope).MODELS
    with DefaultScope.overwrite_default_scope(cfg.default_scope):  # leaves no global scope
        model = registry.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == params



def indexed_models() -> list[dict]:
    """The models of model-index.yml (what ``mim search`` reads), in its metafiles' order."""
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    return [model for path in index['Import']
            for model in yaml.safe_load((ROOT / path).read_text())['Models']]


def test_model_index_lists_every_paper_config_once_with_its_figures():
    models = indexed_models()
    assert sorted(m['Config'] for m in models) == sorted(f'configs/{name}' for name in EXPECTED)
    for model in models:
        assert model['Name'] == Path(model['Config']).stem
        assert model['Metadata']['FLOPs'] > 1e9 and model['Metadata']['Parameters'] > 1e7
        metrics = {k: v for result in model['Results'] for k, v in result['Metrics'].items()}
        assert set(metrics) in ({'Top 1 Accuracy'}, {'box AP', 'mask AP'}, {'mIoU'}), model
        assert all(30 < value < 90 for value in metrics.values()), model


def test_model_index_weights_are_the_official_releases():
    from vheat_mm.checkpoint import PRETRAINED_URLS
    weights = {m['Name']: m.get('Weights') for m in indexed_models()}
    assert weights.pop('upernet_vheat-s_8xb2-160k_ade20k-512x512') is None  # none released
    for arch in PRETRAINED_URLS:
        assert weights[f'vheat-{arch[0]}_16xb128_in1k'] == PRETRAINED_URLS[arch]
    release = 'https://github.com/MzeroMiko/vHeat/releases/download/'
    assert all(url.startswith(release) and url.endswith('.pth') for url in weights.values())


def test_mim_folder_links_the_repository_configs_tools_and_index():
    for name in ('configs', 'tools', 'model-index.yml'):
        assert (ROOT / 'vheat_mm' / '.mim' / name).resolve() == ROOT / name
