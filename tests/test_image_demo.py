"""demo/image_demo.py: each toolbox's inferencer on a real photograph (scikit-image's), with a
randomly initialised vheat model, draws its picture and returns a result of its structure."""
from pathlib import Path

import pytest

from helpers import ROOT, load_script, synthetic_shapes

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _scoped():
    """The inferencers and init_detector set mmengine's global default scope: restore it after,
    so that later tests build in the registries they name."""
    from mmengine.registry import DefaultScope
    saved = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)
CASES = {
    'configs/classification/vheat-t_16xb128_in1k.py':
        ('chelsea', {'pred_class', 'pred_label', 'pred_score', 'pred_scores'}),
    'configs/mask_rcnn/mask-rcnn_vheat-t_fpn_1x_coco.py': ('astronaut', {'predictions', 'visualization'}),
    'configs/upernet/upernet_vheat-t_8xb2-160k_ade20k-512x512.py': ('coffee', {'predictions', 'visualization'}),
}


@pytest.mark.parametrize('current_scope', [None, 'other'], ids=['no scope', 'another scope'])
@pytest.mark.parametrize('config', list(CASES))
def test_image_demo_draws_with_the_toolbox_inferencer(config, current_scope, tmp_path):
    """Also where another toolbox's scope is mmengine's current one (left by earlier work)."""
    from mmengine.registry import DefaultScope
    demo = load_script(ROOT / 'demo/image_demo.py')
    photo, keys = CASES[config]
    image = demo.resolve_image(f'skimage:{photo}', tmp_path)
    if current_scope == 'other':
        other = 'mmdet' if 'classification' in config else 'mmpretrain'
        DefaultScope.get_instance(f'left_by_{other}', scope_name=other)
    result = demo.infer(image, str(ROOT / config), weights=None, out_dir=str(tmp_path / 'out'),
                        device='cpu')
    assert keys <= set(result)
    (picture,) = (tmp_path / 'out' / 'vis').glob('*.png')
    assert picture.stat().st_size > 10_000
    if 'predictions' in result and 'mask_rcnn' in config:
        prediction = result['predictions'][0]
        assert {'labels', 'scores', 'bboxes', 'masks'} <= set(prediction)


def test_image_demo_refuses_what_it_cannot_read(tmp_path):
    demo = load_script(ROOT / 'demo/image_demo.py')
    with pytest.raises(SystemExit, match='no image file'):
        demo.resolve_image(str(tmp_path / 'absent.png'), tmp_path)
    with pytest.raises(SystemExit, match="bundles no photograph 'nothing'"):
        demo.resolve_image('skimage:nothing', tmp_path)


def test_shapes_demo_draws_through_mmdet_visualizer(tmp_path, monkeypatch):
    """The demo's picture: ground truth and predictions drawn by DetLocalVisualizer (here for an
    untrained detector with the demo's classes, every prediction shown)."""
    import cv2
    import numpy as np
    import torch
    from mmdet.apis import init_detector
    from mmdet.visualization import DetLocalVisualizer
    from mmengine.logging import HistoryBuffer

    demo = load_script(ROOT / 'tools/shapes_demo.py')
    shapes = synthetic_shapes()
    data = shapes.make_shapes_coco(tmp_path / 'shapes', num_train=1, num_val=2, size=(64, 64))
    model = init_detector(str(demo.CONFIG), None, device='cpu')
    meta = dict(classes=shapes.SHAPE_CLASSES, palette=[(220, 20, 60)] * 3)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=meta),  # as a runner
                    message_hub=dict(log_scalars={'loss': HistoryBuffer([1.0], [1])})),
               tmp_path / 'ckpt.pth')
    drawn = []
    real = DetLocalVisualizer.add_datasample

    visualizer_classes = []

    def spy(self, *args, **kwargs):
        drawn.append(kwargs)
        visualizer_classes[:] = [tuple(self.dataset_meta['classes'])]
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DetLocalVisualizer, 'add_datasample', spy)
    demo.save_predictions(tmp_path / 'ckpt.pth', Path(data), tmp_path / 'predictions.png',
                          num_images=2, score_thr=0.0)
    assert len(drawn) == 2 and all(k['draw_gt'] and k['draw_pred'] for k in drawn)
    assert visualizer_classes == [shapes.SHAPE_CLASSES]
    picture = cv2.imread(str(tmp_path / 'predictions.png'))
    assert picture.shape == (2 * 64 * 2, 2 * 64 * 2, 3) and np.ptp(picture) > 0
