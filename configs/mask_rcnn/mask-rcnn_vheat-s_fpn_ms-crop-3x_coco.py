_base_ = './mask-rcnn_vheat-t_fpn_ms-crop-3x_coco.py'

pretrained = 'https://github.com/MzeroMiko/vHeat/releases/download/vheatcls/vHeat_small.pth'
model = dict(
    backbone=dict(
        arch='small',  # post-norm blocks, layer scale 1e-5
        img_size=512,
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint=pretrained)))
