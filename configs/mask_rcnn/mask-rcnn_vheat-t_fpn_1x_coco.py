# Mask R-CNN + FPN with vHeat-T, COCO, 12 epochs: the official vHeat detection settings
# (img_size 512, AdamW lr 1e-4, weight decay 0.05 without decay on norms, 8 GPUs x 2 images).
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
custom_imports = dict(imports=['vheat_mm'], allow_failed_imports=False)
# mmengine's Runner, reading checkpoints (load_from, --resume) through vheat_mm's safe reader
runner_type = 'VHeatRunner'

# ImageNet-1k vHeat-T of the official release. Its freq_embed (224) is zero-padded to img_size
# on load (freq_embed_resize='pad'): the tensors interpolate4downstream.py writes, where the
# paper's runs started. freq_embed_resize='bicubic' interpolates instead.
pretrained = 'https://github.com/MzeroMiko/vHeat/releases/download/vheatcls/vHeat_tiny.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='vHeat',
        arch='tiny',
        img_size=512,
        freq_embed_resize='pad',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))

train_dataloader = dict(batch_size=2)  # 8 GPUs x 2 images
val_dataloader = dict(batch_size=2)
