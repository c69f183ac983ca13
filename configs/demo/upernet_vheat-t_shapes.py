# Step 4 of the demo's pipeline (tools/shapes_demo.py): UperNet with vHeat-T on the semantic
# masks of the generated shapes images (data/shapes/segmentation, the ADE20K layout written by
# tools/synthetic_shapes.py's make_semantic_from_coco: 3 shapes and the background), its
# backbone initialised from the classifier of step 1 through interpolate4downstream.py (step 2),
# as the paper's UperNet starts from the ImageNet classifier. Lightened for the CPU: 128x128
# images, narrower decode (128) and auxiliary (64) channels, 160 iterations; tested whole-image,
# and with --tta at 3 scales and flips.
_base_ = '../upernet/upernet_vheat-t_8xb2-160k_ade20k-512x512.py'

data_root = 'data/shapes/segmentation/'
metainfo = dict(classes=('square', 'circle', 'triangle', 'background'),
                palette=[[220, 20, 60], [0, 128, 255], [0, 200, 0], [90, 90, 90]])
crop_size = (128, 128)
pretrained = 'work_dirs/shapes_demo/2_interpolate/vheat-t_shapes-128.pth'

# The background covers 83% of the pixels, circles 9%, squares 5%, triangles 3.5%: without
# class weights the 160 iterations learn the background and the circles and never predict a
# square or a triangle (IoU 0 for both). These weights (about the inverse square root of each
# class's share, relative to the circles') find every class (2026-12-07: IoU 15.8 square, 28.4
# circle, 20.1 triangle, 90.7 background, mIoU 38.8; weights of the inverse share itself,
# 1.8 / 1.0 / 2.6 / 0.3, over-predicted triangles: mIoU 34.4).
class_weight = [1.3, 1.0, 1.6, 0.35]  # square, circle, triangle, background
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=128, drop_path_rate=0.1,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(channels=128, num_classes=4,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                      loss_weight=1.0, class_weight=class_weight)),
    auxiliary_head=dict(channels=64, num_classes=4,
                        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                         loss_weight=0.4, class_weight=class_weight)),
    test_cfg=dict(mode='whole'))

# ADE20K's, at this size (random scale, crop, flip), without its colour distortion: the class
# of a shape is its outline, never its colour, and in 160 iterations the distortion cost mIoU
# (31.3 with it, 34.4 without, 2026-12-07). Scales from 1.0 rather than 0.75, so that no
# training crop is padded: mmseg 1.2.2's CrossEntropyLoss with class weights fails with an
# IndexError on the padding's ignored label 255 (open-mmlab/mmsegmentation#3831).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=crop_size, ratio_range=(1.0, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
img_ratios = [0.75, 1.0, 1.25]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in img_ratios],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')],
    ]),
]
# ADE20K's layout and label convention (0 ignored, the rest one less), with these classes
seg_dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
               img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=True,
    dataset=dict(**seg_dataset, pipeline=train_pipeline,
                 data_prefix=dict(img_path='images/training',
                                  seg_map_path='annotations/training')))
val_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=True,
    dataset=dict(**seg_dataset, pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/validation',
                                  seg_map_path='annotations/validation')))
test_dataloader = val_dataloader

max_iters = 160
# the heads start from scratch, the backbone from step 1: a tenth of the rate for it
optim_wrapper = dict(optimizer=dict(lr=1e-3),
                     paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=0.1))))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=20, end=max_iters),
]
# no validation while training: tools/test.py evaluates the final checkpoint
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_begin=max_iters + 1,
                 val_interval=max_iters)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
