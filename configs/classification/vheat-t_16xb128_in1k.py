# vHeat-T on ImageNet-1k, 300 epochs: the official recipe (AdamW, base lr 5e-4 per 512 images,
# weight decay 0.08, 20 warm-up epochs, cosine to 5e-6 per 512, gradient clipping 5, EMA 0.9999,
# label smoothing 0.1, Mixup 0.8 / CutMix 1.0, RandAugment, random erasing 0.25, float16 mixed
# precision), 16 GPUs x 128; docs/recipes.md compares it with the official config.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['vheat_mm'], allow_failed_imports=False)
# mmengine's Runner, reading checkpoints (load_from, --resume) through vheat_mm's safe reader
runner_type = 'VHeatRunner'

model = dict(
    type='ImageClassifier',
    # The official classifier is LayerNorm -> average pool -> Linear: here outnorm3 -> neck -> head
    # (tools/model_converters/vheat_to_mmpretrain.py maps classifier.0 / classifier.3 to them).
    backbone=dict(type='vHeat', arch='tiny', img_size=224, drop_path_rate=0.1, out_indices=(3,)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        init_cfg=None,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
    ],
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

# The official recipe scales the learning rates with the real total batch B (GPUs x images per
# GPU): 5e-4 * B / 512, warm-up from 5e-7 * B / 512 and cosine to 5e-6 * B / 512, stepped every
# iteration. Here lr is given per 512 images and auto_scale_lr scales it (B = 2048 on 16 x 128);
# both schedules are ratios of it, so they scale with it.
# Mixed precision as the official AMP_ENABLE: float16 autocast with a dynamic loss scale (on a
# machine without CUDA, tools/train.py trains in float32 and says so).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    dtype='float16',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=5e-4, weight_decay=0.08, eps=1e-8, betas=(0.9, 0.999)),
    # as the official optimizer: no decay on 1-D tensors (norms, biases, layer scales)
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=5e-7 / 5e-4, by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=5e-6 / 5e-4, by_epoch=True, begin=20, end=300,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
auto_scale_lr = dict(enable=True, base_batch_size=512)
# Every epoch the raw weights and the EMA (decay 0.9999, every iteration) are both validated, and
# the best checkpoint of each is kept, as in the official training; of the epoch checkpoints the
# last 3 are kept.
custom_hooks = [dict(type='RawAndEMAHook', momentum=1e-4)]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best=['accuracy/top1', 'ema/accuracy/top1'], rule='greater'))
