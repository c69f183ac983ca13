"""torch.hub entry points: ``torch.hub.load('MzeroMiko/vHeat'-style REPO, 'vheat_tiny', ...)``.

``torch.hub.load(REPO, 'vheat_tiny', pretrained=False)`` builds the vHeat-T classifier of this
repository (plain PyTorch; OpenMMLab is not needed). ``pretrained=True`` loads the official
ImageNet-1k release (downloaded once into torch hub's cache and read with ``weights_only``),
then gives it a new linear layer (:meth:`~vheat_mm.models.VHeat.reset_classifier`) if
``num_classes`` is not 1000. ``pretrained=PATH`` (a file or an http(s) URL, in any layout
:func:`~vheat_mm.checkpoint.load_pretrained` reads) loads that checkpoint, strictly, into the
model built with ``num_classes``. Other keywords go to
:class:`vheat_mm.models.VHeat` (``img_size``, ``num_classes``, ...).
"""
from __future__ import annotations

dependencies = ['torch']

import os  # noqa: E402

from vheat_mm.checkpoint import PRETRAINED_URLS, load_pretrained  # noqa: E402
from vheat_mm.models import VHeat  # noqa: E402


def _vheat(arch: str, pretrained: bool | str | os.PathLike, num_classes: int = 1000,
           **kwargs) -> VHeat:
    if not pretrained or isinstance(pretrained, (str, os.PathLike)):
        model = VHeat(arch, num_classes=num_classes, **kwargs)
        if pretrained:
            load_pretrained(model, pretrained, strict=True)
        return model
    model = VHeat(arch, **kwargs)  # the release's 1000-class head, then a new one if asked
    load_pretrained(model, PRETRAINED_URLS[arch], strict=True)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


# One entry point per released classifier of vheat_mm/variants.py, its top-1 in its docstring
# (tests/test_variants.py checks both against the records).
def vheat_tiny(pretrained: bool | str | os.PathLike = False, **kwargs) -> VHeat:
    """vHeat-T (arXiv 2405.16555), ImageNet-1k top-1 82.2."""
    return _vheat('tiny', pretrained, **kwargs)


def vheat_small(pretrained: bool | str | os.PathLike = False, **kwargs) -> VHeat:
    """vHeat-S (arXiv 2405.16555), ImageNet-1k top-1 83.6."""
    return _vheat('small', pretrained, **kwargs)


def vheat_base(pretrained: bool | str | os.PathLike = False, **kwargs) -> VHeat:
    """vHeat-B (arXiv 2405.16555), ImageNet-1k top-1 83.9."""
    return _vheat('base', pretrained, **kwargs)
