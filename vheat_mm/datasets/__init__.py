"""Synthetic datasets in the toolboxes' layouts (demo and tests)."""
from .synthetic import (SHAPE_CLASSES, draw_scene, make_shapes_ade20k, make_shapes_coco,
                        make_shapes_imagenet)

__all__ = ['SHAPE_CLASSES', 'draw_scene', 'make_shapes_ade20k', 'make_shapes_coco',
           'make_shapes_imagenet']
