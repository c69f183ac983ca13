"""Write what the repository states about its variants from their records (vheat_mm/variants.py).

    python tools/misc/model_zoo.py           # rewrite the files that differ from the records
    python tools/misc/model_zoo.py --check   # name them and exit 1, writing nothing

Written from :data:`~vheat_mm.variants.ARCHS` and :data:`~vheat_mm.variants.RELEASES`:
``model-index.yml`` (one metafile per family), the ``Models`` of each ``configs/*/metafile.yml``
(what comes before them, the collection, is the family's own text), and the README's tables
between ``<!-- variants: NAME -->`` and ``<!-- /variants: NAME -->`` (``archs``, and one per
family folder). ``tests/test_variants.py`` runs the check.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from vheat_mm.variants import ARCHS, FAMILIES, RELEASES, ArchRecord, Family, Release

ROOT = Path(__file__).resolve().parents[2]
MODELS = 'Models:\n'


def model_index() -> str:
    """``model-index.yml``: the metafile of each family."""
    return 'Import:\n' + ''.join(f'  - configs/{family.folder}/metafile.yml\n'
                                 for family in FAMILIES)


def metafile_model(release: Release) -> str:
    """One entry of a metafile's ``Models``, as OpenMMLab's metafiles write it."""
    metadata = [('Epochs', release.epochs), ('Iterations', release.iterations),
                ('Batch Size', release.batch_size), ('FLOPs', release.paper_flops),
                ('Parameters', release.paper_params)]
    lines = [f'  - Name: {release.name}', f'    In Collection: {release.family.collection}',
             f'    Config: {release.config}', '    Metadata:']
    lines += [f'      {key}: {value}' for key, value in metadata if value is not None]
    lines.append('    Results:')
    for metric, value in zip(release.family.metrics, release.metric_values()):
        lines += [f'      - Task: {metric.task}', f'        Dataset: {metric.dataset}',
                  '        Metrics:', f'          {metric.name}: {value}']
    if release.url is not None:
        lines.append(f'    Weights: {release.url}')
    return '\n'.join(lines) + '\n'


def metafile_models(family: Family) -> str:
    """A family's ``Models:`` section, its releases in the records' order."""
    return MODELS + '\n'.join(metafile_model(release) for release in RELEASES
                                   if release.family is family)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [f"| {' | '.join(header)} |", '|' + '---|' * len(header)]
    return '\n'.join(lines + [f"| {' | '.join(row)} |" for row in rows]) + '\n'


def _arch_row(arch: ArchRecord) -> list[str]:
    scale = 'none' if arch.layer_scale is None else f'{arch.layer_scale:g}'.replace('e-0', 'e-')
    return [arch.name, ', '.join(map(str, arch.depths)), str(arch.dims),
            'post-norm' if arch.post_norm else 'pre-norm', scale, f'{arch.params:,}']


def _release_row(release: Release) -> list[str]:
    row = [f'[{release.name}]({release.config})']
    row += [release.schedule] if release.schedule is not None else []
    row += [f'{value:.1f}' for value in release.metric_values()]
    return row + [f'{release.paper_params / 1e6:g}M', f'{release.params / 1e6:.2f}M',
                  f'{release.paper_flops / 1e9:g}G']


def readme_tables() -> dict[str, str]:
    """The README's tables by marker name: ``archs`` and each family's folder."""
    tables = {'archs': _table(['arch', 'depths', 'dims', 'blocks', 'layer scale',
                               'params (classifier)'], [_arch_row(arch) for arch in ARCHS])}
    for family in FAMILIES:
        releases = [release for release in RELEASES if release.family is family]
        schedule = ['schedule'] if any(r.schedule is not None for r in releases) else []
        header = ['config', *schedule, *(metric.label for metric in family.metrics),
                  'params (paper)', 'params (built)', 'FLOPs (paper)']
        tables[family.folder] = _table(header, [_release_row(r) for r in releases])
    return tables


def _with_readme_tables(text: str) -> str:
    for name, table in readme_tables().items():
        pattern = re.compile(rf'(<!-- variants: {name} -->\n).*?(<!-- /variants: {name} -->)',
                             re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f'README.md has no <!-- variants: {name} --> ... '
                             f'<!-- /variants: {name} --> section')
        text = pattern.sub(lambda match: match.group(1) + table + match.group(2), text)
    return text


def _with_models(text: str, family: Family) -> str:
    head, found, _ = text.partition(MODELS)
    if not found:
        raise ValueError(f'configs/{family.folder}/metafile.yml has no {MODELS.strip()} section')
    return head + metafile_models(family)


def generated(root: Path = ROOT) -> dict[Path, str]:
    """Each file the records write, with the text it should have."""
    files = {root / 'model-index.yml': model_index(),
             root / 'README.md': _with_readme_tables((root / 'README.md').read_text())}
    for family in FAMILIES:
        path = root / 'configs' / family.folder / 'metafile.yml'
        files[path] = _with_models(path.read_text(), family)
    return files


def stale(files: dict[Path, str]) -> list[Path]:
    """Those of ``files`` (:func:`generated`) whose text differs from what the records write."""
    return [path for path, text in files.items()
            if not path.is_file() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true',
                        help='name the files that differ from the records and exit 1; write '
                             'nothing')
    args = parser.parse_args(argv)
    files = generated()
    differ = stale(files)
    for path in differ:
        if args.check:
            print(f'{path.relative_to(ROOT)} differs from vheat_mm/variants.py', file=sys.stderr)
        else:
            path.write_text(files[path])
            print(f'wrote {path.relative_to(ROOT)}')
    return 1 if args.check and differ else 0


if __name__ == '__main__':
    sys.exit(main())
