# UperNet with vHeat-T, ADE20K, 160k iterations on 512x512 crops (8 GPUs x 2 images): the
# official vHeat segmentation settings on mmseg's Swin recipe (AdamW lr 6e-5, poly schedule).
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['vheat_mm'], allow_failed_imports=False)
# mmengine's Runner, reading checkpoints (load_from, --resume) through vheat_mm's safe reader
runner_type = 'VHeatRunner'

crop_size = (512, 512)
pretrained = 'https://github.com/MzeroMiko/vHeat/releases/download/vheatcls/vHeat_tiny.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='vHeat',
        arch='tiny',
        img_size=512,
        freq_embed_resize='pad',  # 224 -> 512 zero-padded on load, as interpolate4downstream.py
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
