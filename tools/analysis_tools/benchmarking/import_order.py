"""Import-order workaround: the official detection code first, vheat_mm after it.

Where mmengine is imported already (OpenMMLab's Swin is built here), ``import vheat_mm``
imports ``vheat_mm.mm``, which registers MMDET_VHEAT and MMSEG_VHEAT into mmdet and mmseg; so
does the official detection module, which mmengine refuses where the name is taken (vheat_mm
leaves a taken name in place). So benchmark.py calls :func:`import_official_first` before
anything else, and the benchmarking code reaches vheat_mm only through :func:`vheat_models`,
on first use.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from .official import detection_module


def import_official_first(checkout: Path, backbone_cases: bool) -> None:
    """Import the official detection module now, if backbone cases will build it."""
    if backbone_cases and importlib.util.find_spec('mmdet') is not None:
        detection_module(checkout)


def vheat_models() -> ModuleType:
    """``vheat_mm.models``, imported on first call."""
    return importlib.import_module('vheat_mm.models')
