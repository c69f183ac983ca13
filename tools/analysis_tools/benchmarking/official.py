"""The official vHeat code (github MzeroMiko/vHeat), imported from a checkout, never copied.

Its files import each other by package names that the official repository expects its user to
set up; here those packages are made to point at the checkout's folders.
"""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

CLASSIFICATION_FILE = 'classification/models/vHeat.py'


def is_checkout(path: Path | None) -> bool:
    """Whether ``path`` is a checkout of the official repository."""
    return path is not None and (path / CLASSIFICATION_FILE).is_file()


def _package(name: str, folder: Path) -> None:
    """Make ``name`` a package whose modules are the files of ``folder`` (unless it is one)."""
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package


def classification_module(checkout: Path):
    """The official classification/models/vHeat.py, imported as ``vHeat.vHeat``.

    That is the name detection/model.py imports it by: the official repository expects its user
    to link classification/models to ``vHeat``; here the package ``vHeat`` is that folder.
    """
    _package('vHeat', checkout / 'classification/models')
    return importlib.import_module('vHeat.vHeat')


def detection_module(checkout: Path):
    """The official detection/model.py (it registers MMDET_VHEAT and MMSEG_VHEAT on import)."""
    classification_module(checkout)
    _package('official_vheat_detection', checkout / 'detection')
    return importlib.import_module('official_vheat_detection.model')
