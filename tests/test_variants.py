"""One record per variant (vheat_mm/variants.py), and everything that states a variant's facts
agrees with it: ARCH_SETTINGS, PRETRAINED_URLS, the metafiles and model-index.yml, the README's
tables, timm's configs and hubconf.py's entry points with their docstrings. The parameter counts
of the built models are checked against the records by tests/test_vheat.py (each arch's
classifier) and tests/test_configs.py (each config).
"""
import dataclasses

import pytest
import yaml

from helpers import ROOT, load_script
from vheat_mm.checkpoint import PRETRAINED_URLS
from vheat_mm.models import ARCH_SETTINGS
from vheat_mm.variants import (ARCHS, CLASSIFICATION, FAMILIES, RELEASES, arch_record,
                               classifiers)

MODEL_ZOO = ROOT / 'tools' / 'misc' / 'model_zoo.py'


def test_arch_settings_and_pretrained_urls_are_read_from_the_records():
    assert ARCH_SETTINGS == {arch.name: dict(depths=arch.depths, dims=arch.dims,
                                             post_norm=arch.post_norm,
                                             layer_scale=arch.layer_scale) for arch in ARCHS}
    assert list(ARCH_SETTINGS) == [arch.name for arch in ARCHS]
    assert PRETRAINED_URLS == {release.arch: release.url for release in RELEASES
                               if release.family is CLASSIFICATION and release.url}


def test_the_records_are_complete_and_consistent():
    names = [release.name for release in RELEASES]
    assert len(set(names)) == len(names) and len({a.name for a in ARCHS}) == len(ARCHS)
    for release in RELEASES:
        arch = arch_record(release.arch)  # every release names a recorded arch
        assert release.family in FAMILIES
        assert all(isinstance(value, float) for value in release.metric_values()), release
        other = {'top1', 'box_map', 'mask_map', 'miou'} - {m.field for m in release.family.metrics}
        assert all(getattr(release, field) is None for field in other), release
        assert release.url is None or release.url.startswith(
            'https://github.com/MzeroMiko/vHeat/releases/download/'), release
        assert release.sha256 is None or len(release.sha256) == 64, release
        if release.family is CLASSIFICATION:
            assert release.params == arch.params, release
    assert [release.arch for release in classifiers()] == list(PRETRAINED_URLS)


def test_every_config_of_the_paper_has_one_record():
    on_disk = {path.relative_to(ROOT).as_posix() for family in FAMILIES
               for path in (ROOT / 'configs' / family.folder).glob('*.py')}
    assert on_disk == {release.config for release in RELEASES}


@pytest.mark.parametrize('release', RELEASES, ids=lambda release: release.name)
def test_each_config_builds_its_records_arch(release):
    mmengine_config = pytest.importorskip('mmengine.config')
    cfg = mmengine_config.Config.fromfile(str(ROOT / release.config))
    assert cfg.model.backbone.arch == release.arch


def test_model_index_metafiles_and_readme_tables_are_written_from_the_records():
    model_zoo = load_script(MODEL_ZOO)
    stale = [path.relative_to(ROOT).as_posix() for path in model_zoo.stale(model_zoo.generated())]
    assert not stale, f'{stale} differ from vheat_mm/variants.py: python tools/misc/model_zoo.py'


def test_a_changed_record_makes_its_metafile_and_readme_stale(monkeypatch):
    model_zoo = load_script(MODEL_ZOO)
    changed = tuple(dataclasses.replace(release, top1=99.9) if release.name.startswith('vheat-b')
                    else release for release in RELEASES)
    monkeypatch.setattr(model_zoo, 'RELEASES', changed)
    stale = {path.relative_to(ROOT).as_posix() for path in model_zoo.stale(model_zoo.generated())}
    assert stale == {'README.md', 'configs/classification/metafile.yml'}


def test_the_metafiles_read_back_as_the_records():
    """What ``mim search`` reads, parsed as YAML, against the records."""
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    assert index['Import'] == [f'configs/{family.folder}/metafile.yml' for family in FAMILIES]
    for family, path in zip(FAMILIES, index['Import']):
        models = yaml.safe_load((ROOT / path).read_text())['Models']
        releases = [release for release in RELEASES if release.family is family]
        assert [model['Name'] for model in models] == [release.name for release in releases]
        for model, release in zip(models, releases):
            assert model['Config'] == release.config
            assert model['In Collection'] == family.collection
            assert model['Metadata']['FLOPs'] == release.paper_flops
            assert model['Metadata']['Parameters'] == release.paper_params
            assert model['Metadata'].get('Epochs') == release.epochs
            assert model['Metadata'].get('Iterations') == release.iterations
            metrics = {name: value for result in model['Results']
                       for name, value in result['Metrics'].items()}
            assert metrics == {metric.name: getattr(release, metric.field)
                               for metric in family.metrics}
            assert model.get('Weights') == release.url


def test_timm_configs_and_model_functions_are_the_released_classifiers():
    timm = pytest.importorskip('timm')
    import vheat_mm.timm_models as timm_models
    names = [f'vheat_{release.arch}' for release in classifiers()]
    assert timm_models.MODEL_NAMES == tuple(names)
    assert set(timm.list_models('vheat_*')) == set(names)
    for release, name in zip(classifiers(), names):
        cfg = timm.models.get_pretrained_cfg(name)
        assert (cfg.tag, cfg.url, cfg.num_classes) == ('in1k', release.url, 1000)
        assert getattr(timm_models, name).__doc__ == \
            f'{arch_record(release.arch).title} (arXiv 2405.16555), ImageNet-1k.'


def test_hub_entry_points_and_their_docstrings_are_the_released_classifiers():
    hubconf = load_script(ROOT / 'hubconf.py')
    entry_points = sorted(name for name in dir(hubconf) if name.startswith('vheat_')
                          and callable(getattr(hubconf, name)))
    assert entry_points == sorted(f'vheat_{release.arch}' for release in classifiers())
    for release in classifiers():
        assert getattr(hubconf, f'vheat_{release.arch}').__doc__ == (
            f'{arch_record(release.arch).title} (arXiv 2405.16555), ImageNet-1k top-1 '
            f'{release.top1}.')
