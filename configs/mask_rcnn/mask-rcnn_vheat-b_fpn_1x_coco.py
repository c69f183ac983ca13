_base_ = './mask-rcnn_vheat-t_fpn_1x_coco.py'

pretrained = 'https://github.com/MzeroMiko/vHeat/releases/download/vheatcls/vHeat_base.pth'
model = dict(
    backbone=dict(
        arch='base',  # dims 128, post-norm blocks, layer scale 1e-5
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
