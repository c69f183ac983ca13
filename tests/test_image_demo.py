"""demo/image_demo.py: each toolbox's inferencer on a real photograph (scikit-image's), with a
randomly initialised vheat model, draws its picture and returns a result of its structure."""
from pathlib import Path

import pytest

from conftest import load_script

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
CASES = {
    'configs/classification/vheat-t_16xb128_in1k.py':
        ('chelsea', {'pred_class', 'pred_label', 'pred_score', 'pred_scores'}),
    'configs/mask_rcnn/mask-rcnn_vheat-t_fpn_1x_coco.py': ('astronaut', {'predictions', 'visualization'}),
    'configs/upernet/upernet_vheat-t_8xb2-160k_ade20k-512x512.py': ('coffee', {'predictions', 'visualization'}),
}


@pytest.mark.parametrize('config', list(CASES))
def test_image_demo_draws_with_the_toolbox_inferencer(config, tmp_path):
    demo = load_script(ROOT / 'demo/image_demo.py')
    photo, keys = CASES[config]
    image = demo.resolve_image(f'skimage:{photo}', tmp_path)
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
