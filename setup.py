"""vheat_mm: the vHeat backbone as an OpenMMLab plugin (mmpretrain, mmdet, mmseg)."""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / 'vheat_mm' / 'version.py').read_text(), version)

setup(
    name='vheat_mm',
    version=version['__version__'],
    description='vHeat (heat-conduction vision backbone) for mmpretrain, mmdet and mmsegmentation',
    long_description=(here / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['vheat_mm', 'vheat_mm.*']),
    install_requires=['torch>=2.0'],
    extras_require={
        'mm': ['mmengine>=0.10,<0.11', 'mmcv>=2.0,<2.2', 'mmdet>=3.3,<3.4',
               'mmsegmentation>=1.2,<1.3', 'mmpretrain>=1.2,<1.3'],
        'tests': ['pytest', 'hypothesis', 'scipy'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
