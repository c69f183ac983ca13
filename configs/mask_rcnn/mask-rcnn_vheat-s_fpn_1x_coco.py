_base_ = './mask-rcnn_vheat-t_fpn_1x_coco.py'

pretrained = 'https://github.com/MzeroMiko/vHeat/releases/download/vheatcls/vHeat_small.pth'
model = dict(
    backbone=dict(
        arch='small',  # post-norm blocks, layer scale 1e-5
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
