"""benchmark.py's cases, ``PART:MODE:SIZE:BATCH[:OPTION...]`` (its docstring has the grammar),
and the vHeat archs they name."""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import torch
from torch import nn

from .import_order import vheat_models

PARTS = ('classifier', 'backbone')
MODES = ('deploy', 'eval', 'train')
MODELS = ('vheat_mm', 'official', 'swin')
PRECISIONS = {'f32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
BACKBONE_IMG_SIZE = 512  # img_size of the detection and segmentation configs


def arch_names() -> list[str]:
    """The vHeat archs by name (vheat_mm's ARCH_SETTINGS)."""
    return sorted(vheat_models().ARCH_SETTINGS)


def arch_name(text: str) -> str | None:
    """The ARCH_SETTINGS name of the arch that vheat_mm's ``resolve_arch`` takes ``text`` for
    (a name or its initial), or None where it is none."""
    models = vheat_models()
    try:
        arch = models.resolve_arch(text)
    except ValueError:
        return None
    return next(name for name in models.ARCH_SETTINGS if models.resolve_arch(name) == arch)


def parse_arch(text: str) -> str:
    """``--arch``: an ARCH_SETTINGS name (or its initial), or an arch dict as JSON, which is
    kept as compact JSON text; ValueError for anything else."""
    if not text.lstrip().startswith('{'):
        name = arch_name(text)
        if name is None:
            raise ValueError(f'an arch is one of {arch_names()}, its initial, or a JSON dict, '
                             f'got {text!r}')
        return name
    try:
        arch = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f'arch {text!r} is not valid JSON: {error}') from None
    try:
        vheat_models().resolve_arch(arch)
    except TypeError as error:
        raise ValueError(str(error)) from None
    return json.dumps(arch, separators=(',', ':'))


@dataclass(frozen=True)
class Case:
    part: str
    mode: str
    height: int
    width: int
    batch: int
    arch: str = 'tiny'
    precision: str = 'f32'
    compile: bool = False
    models: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, text: str, *, arch: str = 'tiny', precision: str = 'f32') -> Case:
        fields = text.split(':')
        try:
            part, mode, size, batch = fields[:4]
            height, _, width = size.partition('x')
            height, width, batch = int(height), int(width or height), int(batch)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f'a case is PART:MODE:SIZE:BATCH[:OPTION...], e.g. classifier:deploy:224:16 or '
                f'classifier:train:224:128:small:bf16:compile, got {text!r}')
        if part not in PARTS or mode not in MODES:
            raise argparse.ArgumentTypeError(
                f'PART is one of {PARTS} and MODE one of {MODES}, got {text!r}')
        compiled, models = False, None
        for option in fields[4:]:
            if (name := arch_name(option)) is not None:
                arch = name
            elif option in PRECISIONS:
                precision = option
            elif option == 'compile':
                compiled = True
            elif option.startswith('models='):
                models = tuple(option[len('models='):].split(','))
                if not models or set(models) - set(MODELS):
                    raise argparse.ArgumentTypeError(
                        f'models= takes names among {MODELS}, got {option!r} in {text!r}')
            else:
                raise argparse.ArgumentTypeError(
                    f'unknown case option {option!r} in {text!r}; options are an arch '
                    f'({arch_names()}), a precision ({sorted(PRECISIONS)}), '
                    f"'compile' and 'models=NAME,NAME'")
        return cls(part, mode, height, width, batch, arch, precision, compiled, models)

    @property
    def name(self) -> str:
        return (f'{self.arch} {self.part} {self.mode} {self.height}x{self.width} '
                f'batch {self.batch} {self.precision}' + (' compiled' if self.compile else ''))

    @property
    def amp(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]

    @property
    def arch_argument(self) -> str | dict:
        """The case's arch as vheat_mm's models take it: a name, or the dict."""
        return json.loads(self.arch) if self.arch.startswith('{') else self.arch

    @property
    def spec(self):
        """The vheat_mm ``Arch`` of the case (depths, widths, block form)."""
        return vheat_models().resolve_arch(self.arch_argument)

    @property
    def img_size(self) -> int:
        """The models' img_size: a backbone's is the configs'; a classifier's the input size
        when square (the official deploy form needs it), else 224."""
        if self.part == 'backbone':
            return BACKBONE_IMG_SIZE
        return self.height if self.height == self.width else 224


def set_mode(model: nn.Module, case: Case) -> nn.Module:
    """Training mode for a training case, else eval mode without gradients."""
    if case.mode == 'train':
        model.train()
    else:
        model.eval()
        model.requires_grad_(False)
    return model
