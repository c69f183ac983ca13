# Step 3 of the demo's pipeline (tools/shapes_demo.py): Mask R-CNN with vHeat-T on the
# generated "shapes" dataset (COCO format, 3 classes, 128x128), its backbone initialised from
# the classifier of step 1 through interpolate4downstream.py (step 2: freq_embed zero-padded
# from 64 to 128, as the paper's detectors start from the ImageNet classifier). Trained with
# tools/dist_train.sh on 2 CPU processes (2 images each an iteration), tested with
# tools/dist_test.sh and CocoMetric (a run's figures: docs/demo.md). Lightened for the CPU: an
# FPN and heads of 128 channels (COCO's have 256), fewer RoIs per image (32 sampled, 2x2
# RoIAlign samples per bin); the heads, from scratch, learn at 1e-3 and the backbone, from step
# 1, at a tenth of it.
_base_ = '../mask_rcnn/mask-rcnn_vheat-t_fpn_1x_coco.py'

data_root = 'data/shapes/'
metainfo = dict(classes=('square', 'circle', 'triangle'),
                palette=[(220, 20, 60), (0, 128, 255), (0, 200, 0)])
image_size = (128, 128)
pretrained = 'work_dirs/shapes_demo/2_interpolate/vheat-t_shapes-128.pth'

neck_channels = 128  # COCO's FPN has 256: the neck and heads cost a quarter at 128
model = dict(
    backbone=dict(img_size=128, drop_path_rate=0.1,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(out_channels=neck_channels),
    rpn_head=dict(in_channels=neck_channels, feat_channels=neck_channels,
                  anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=neck_channels, roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(in_channels=neck_channels, num_classes=3),
        mask_roi_extractor=dict(out_channels=neck_channels, roi_layer=dict(sampling_ratio=2)),
        mask_head=dict(in_channels=neck_channels, conv_out_channels=neck_channels,
                       num_classes=3)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300),
                   rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline,
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/')))
val_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline,
                 ann_file='annotations/instances_val.json', data_prefix=dict(img='val/')))
test_dataloader = val_dataloader
# classwise: each class's AP, logged as coco/<class>_precision; the metric evaluated last
# writes it, so bbox comes last (the demo's per-class bar is on box AP)
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json',
                     metric=['segm', 'bbox'], classwise=True)
test_evaluator = val_evaluator

max_iters = 480
# no validation while training: tools/test.py evaluates the final checkpoint
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_begin=max_iters + 1, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=40),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=40, end=max_iters, eta_min=1e-5),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=10.0),
                     paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=0.1))))
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False)
randomness = dict(seed=0)
