# Step 1 of the demo's pipeline (tools/shapes_demo.py), the paper's classification pretraining
# in miniature: the project's ImageNet recipe (../classification/vheat-t_16xb128_in1k.py:
# AdamW, label smoothing, gradient clipping, an EMA of the weights with the raw and the EMA
# weights both validated every epoch and the best checkpoint of each kept, float16 mixed
# precision, which tools/train.py turns into float32 on a machine without CUDA) on 64x64 crops
# of the generated shapes and of their background (4 classes, data/shapes/classification,
# written by tools/synthetic_shapes.py's make_crops_from_coco: about 4800 crops of the demo's
# 1500 training images). Shortened for the CPU: 3 epochs (450 iterations), no Mixup/CutMix, an
# EMA of a few dozen iterations, a learning rate that is not scaled with the batch.
_base_ = '../classification/vheat-t_16xb128_in1k.py'

data_root = 'data/shapes/classification/'
metainfo = dict(classes=('square', 'circle', 'triangle', 'background'))
image_size = 64

data_preprocessor = dict(num_classes=4)
model = dict(
    backbone=dict(img_size=image_size, drop_path_rate=0.0),
    head=dict(num_classes=4),
    train_cfg=None)  # no Mixup / CutMix

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=image_size, crop_ratio_range=(0.6, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=image_size, edge='short'),
    dict(type='CenterCrop', crop_size=image_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1,))  # top-5 of 4 classes says nothing
test_evaluator = val_evaluator

max_epochs = 3
# per 32 images; vHeat from scratch diverges to the class prior at 5e-4 here
# (warm-up 40 iterations, then a cosine over the 3 epochs)
optim_wrapper = dict(optimizer=dict(lr=2.5e-4, weight_decay=0.05))
auto_scale_lr = dict(enable=False)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=40),
    dict(type='CosineAnnealingLR', eta_min_ratio=0.01, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
custom_hooks = [dict(type='RawAndEMAHook', momentum=0.05)]
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
