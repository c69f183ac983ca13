"""Checkpoints as the official vHeat training code writes them load on every path.

The official ``save_checkpoint_ema`` writes ``{'model', 'optimizer', 'lr_scheduler',
'max_accuracy', 'scaler', 'epoch', 'config' (a yacs CfgNode), 'model_ema', 'max_accuray_ema'}``.
One file is written by that very function from a checkout of the official repository named by
``VHEAT_OFFICIAL_CHECKOUT`` (skipped without it); its twin, with the same entries and types, is
built here. Both hold the official mini model's weights (tests/data/vheat_official_mini.pt) as
``model_ema`` and moved weights as ``model``, and every path must give the official logits with
yacs unimportable.
"""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint as mmengine_load_checkpoint
from mmpretrain.registry import MODELS as CLASSIFIERS

from helpers import CONFIGS, DATA, ROOT, load_script, mini_arch
from vheat_mm.checkpoint import CheckpointError, load_pretrained, read_checkpoint
from vheat_mm.mm import cpu_launch, tool_config
from vheat_mm.mm.backbone import VHeatBackbone
from vheat_mm.mm.runner import load_checkpoint
from vheat_mm.models import VHeat
import vheat_mm.timm_models  # noqa: F401  registers vheat_tiny/small/base with timm

CHECKOUT = Path(os.environ.get('VHEAT_OFFICIAL_CHECKOUT', '/nonexistent'))
FIXTURE = torch.load(DATA / 'vheat_official_mini.pt', weights_only=True)['prenorm']
CONFIG = FIXTURE['config']
DIMS = [CONFIG['dims'] * 2**i for i in range(4)]
ENTRIES = {'model', 'optimizer', 'lr_scheduler', 'max_accuracy', 'scaler', 'epoch', 'config',
           'model_ema', 'max_accuray_ema'}

# Run with the official classification/ folder first on sys.path: writes ckpt_epoch_299.pth.
OFFICIAL_WRITER = r'''
import logging, math, sys, types
import torch
checkout, fixture_path, out = sys.argv[1:]
sys.path.insert(0, checkout + '/classification')
sys.modules['torch._six'] = types.SimpleNamespace(inf=math.inf)  # utils.py predates torch 2
from timm.utils import ModelEma
from models.vHeat import vHeat
from utils.config import _C
from utils.lr_scheduler import build_scheduler
from utils.optimizer import build_optimizer
from utils.utils import NativeScalerWithGradNormCount
from utils.utils_ema import save_checkpoint_ema
fixture = torch.load(fixture_path, weights_only=True)['prenorm']
model = vHeat(**fixture['config'])
model.load_state_dict(fixture['state_dict'])
model_ema = ModelEma(model, decay=0.9999)  # a copy: the fixture's weights
with torch.no_grad():
    for p in model.parameters():
        p.add_(0.5)  # the raw weights have moved on
config = _C.clone()
config.defrost()
config.OUTPUT = out
config.MODEL.TYPE = 'vHeat'
config.freeze()
optimizer = build_optimizer(config, model)
scheduler = build_scheduler(config, optimizer, 10)
save_checkpoint_ema(config, 299, model, 82.0, optimizer, scheduler,
                    NativeScalerWithGradNormCount(), logging.getLogger('official'), model_ema, 82.2)
'''


def write_twin(path: Path) -> None:
    """The official layout and types, without the official code."""
    from timm.scheduler import CosineLRScheduler
    from yacs.config import CfgNode

    model = VHeat(mini_arch(CONFIG), img_size=CONFIG['img_size'], num_classes=CONFIG['num_classes'])
    model.load_state_dict(FIXTURE['state_dict'])
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    model(FIXTURE['input']).sum().backward()
    optimizer.step()  # moves the raw weights, fills the optimizer state
    scheduler = CosineLRScheduler(optimizer, t_initial=300, lr_min=5e-6, warmup_t=20)
    # what the official NativeScalerWithGradNormCount's GradScaler.state_dict() holds (torch 2.1
    # has no torch.amp.GradScaler to make it on the CPU)
    scaler = dict(scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                  _growth_tracker=0)
    config = CfgNode(dict(MODEL=CfgNode(dict(TYPE='vHeat', NAME='vheat_mini')),
                          TRAIN=CfgNode(dict(EPOCHS=300, BASE_LR=5e-4, WARMUP_LR=5e-7,
                                             MIN_LR=5e-6, BETAS=(0.9, 0.999))),
                          AMP_ENABLE=True, TAG=None))
    config.freeze()
    torch.save(dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                    lr_scheduler=scheduler.state_dict(), max_accuracy=82.0,
                    scaler=scaler, epoch=299, config=config, model_ema=ema,
                    max_accuray_ema=82.2), path)


@pytest.fixture(scope='module', params=['twin', 'official'])
def training_checkpoint(request, tmp_path_factory):
    """A checkpoint of the official layout: the twin, or one the official code wrote."""
    directory = tmp_path_factory.mktemp(request.param)
    if request.param == 'twin':
        path = directory / 'ckpt_epoch_299.pth'
        write_twin(path)
        return path
    if not (CHECKOUT / 'classification/utils/utils_ema.py').is_file():
        pytest.skip('set VHEAT_OFFICIAL_CHECKOUT to a checkout of github MzeroMiko/vHeat')
    subprocess.run([sys.executable, '-c', OFFICIAL_WRITER, str(CHECKOUT),
                    str(DATA / 'vheat_official_mini.pt'), str(directory)], check=True,
                   cwd=directory, timeout=300)
    return directory / 'ckpt_epoch_299.pth'


@pytest.fixture(autouse=True)
def no_yacs(monkeypatch):
    """yacs cannot be imported while the files are read."""
    monkeypatch.setitem(sys.modules, 'yacs', None)
    monkeypatch.setitem(sys.modules, 'yacs.config', None)


def official_logits(model, mode=None):
    model.eval()
    with torch.no_grad():
        return model(FIXTURE['input']) if mode is None else model(FIXTURE['input'], mode=mode)


def assert_official_logits(logits):
    torch.testing.assert_close(logits, FIXTURE['logits'], rtol=1e-4, atol=1e-4)


def plain_model():
    return VHeat(mini_arch(CONFIG), img_size=CONFIG['img_size'], num_classes=CONFIG['num_classes'])


def mmpretrain_classifier(**kwargs):
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return CLASSIFIERS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='vHeat', arch=mini_arch(CONFIG), img_size=CONFIG['img_size'],
                          out_indices=(3,)),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=CONFIG['num_classes'],
                      in_channels=DIMS[-1]), **kwargs))


def test_the_file_has_the_official_entries_and_reads_without_yacs(training_checkpoint):
    checkpoint = read_checkpoint(training_checkpoint)
    assert set(checkpoint) == ENTRIES
    assert checkpoint['config']['MODEL']['TYPE'] == 'vHeat'  # a plain mapping of its values
    assert type(checkpoint['config']).__module__ == 'collections'
    assert isinstance(checkpoint['lr_scheduler'], dict) and checkpoint['epoch'] == 299


def test_load_pretrained_reads_the_ema_by_default_and_model_on_request(training_checkpoint):
    model = plain_model()
    report = load_pretrained(model, training_checkpoint, strict=True)
    assert report.loaded == report.total
    assert_official_logits(official_logits(model))
    load_pretrained(model, training_checkpoint, entry='model')
    assert (official_logits(model) - FIXTURE['logits']).abs().max() > 1e-2


def test_interpolate4downstream(training_checkpoint, tmp_path):
    tool = load_script(ROOT / 'interpolate4downstream.py')
    out = tmp_path / 'same_size.pth'
    tool.main(['--pt_pth', str(training_checkpoint), '--pt_size', '64', '--tg_pth', str(out),
               '--tg_size', '64'])
    model = plain_model()
    load_pretrained(model, out, strict=True)
    assert_official_logits(official_logits(model))
    tool.main(['--pt_pth', str(training_checkpoint), '--pt_size', '64',
               '--tg_pth', str(tmp_path / 'larger.pth'), '--tg_size', '128'])
    converted = read_checkpoint(tmp_path / 'larger.pth')
    assert converted['model_ema']['freq_embed.0'].shape[:2] == (32, 32)


def test_converter_to_mmpretrain(training_checkpoint, tmp_path):
    converter = load_script(ROOT / 'tools/model_converters/vheat_to_mmpretrain.py')
    dst = tmp_path / 'mmpretrain.pth'
    assert converter.main([str(training_checkpoint), str(dst)]) == 0
    classifier = mmpretrain_classifier()
    mmengine_load_checkpoint(classifier, str(dst), strict=True)  # no vheat_mm needed to load it
    assert_official_logits(official_logits(classifier, 'tensor'))


def test_vheat_runners_load_checkpoint_and_init_cfg(training_checkpoint, caplog):
    classifier = mmpretrain_classifier()
    with caplog.at_level(logging.INFO, logger='vheat_mm'):
        load_checkpoint(classifier, str(training_checkpoint))
    assert_official_logits(official_logits(classifier, 'tensor'))
    assert f"{training_checkpoint} (official checkpoint, its 'model_ema' entry" in caplog.text
    assert "official vHeat keys loaded as the model's" in caplog.text
    assert 'fits the model badly' not in caplog.text

    # the backbone's init_cfg
    backbone = VHeatBackbone(mini_arch(CONFIG), img_size=CONFIG['img_size'], init_cfg=dict(
        type='Pretrained', checkpoint=str(training_checkpoint)))
    backbone.init_weights()
    torch.testing.assert_close(backbone.freq_embed[0].detach(),
                               FIXTURE['state_dict']['freq_embed.0'])


def test_timm_pretrained_file(training_checkpoint):
    model = timm.create_model('vheat_tiny', pretrained=True, arch=mini_arch(CONFIG),
                              img_size=CONFIG['img_size'], num_classes=CONFIG['num_classes'],
                              pretrained_cfg_overlay=dict(file=str(training_checkpoint),
                                                          num_classes=CONFIG['num_classes']))
    assert_official_logits(official_logits(model))


def runner_for(config: Path, work_dir: Path, **backbone):
    """The runner tools/test.py builds for ``config``, with the mini backbone."""
    cfg, toolbox = tool_config.load_config(str(config), work_dir=str(work_dir), cfg_options=None,
                                           launcher='none')
    cfg.model.backbone.update(arch=mini_arch(CONFIG), img_size=CONFIG['img_size'], **backbone)
    cpu_launch.prepare_cpu_launch(cfg)  # as the tools do
    return cfg, toolbox


def test_tools_test_runner_with_the_classification_config(training_checkpoint, tmp_path):
    """tools/test.py sets load_from and runs runner.test(), which loads it first."""
    cfg, toolbox = runner_for(CONFIGS / 'classification/vheat-t_16xb128_in1k.py', tmp_path,
                              out_indices=(3,))
    cfg.model.head.update(num_classes=CONFIG['num_classes'], in_channels=DIMS[-1])
    cfg.load_from = str(training_checkpoint)
    runner = tool_config.build_runner(cfg, toolbox=toolbox)
    runner.call_hook('before_run')  # as runner.test() does (EMAHook builds its copy here)
    runner.load_or_resume()
    assert_official_logits(official_logits(runner.model, 'tensor'))


def test_load_from_into_the_detection_config(training_checkpoint, tmp_path, caplog):
    cfg, toolbox = runner_for(CONFIGS / 'mask_rcnn/mask-rcnn_vheat-t_fpn_1x_coco.py', tmp_path)
    cfg.model.backbone.pop('init_cfg', None)
    cfg.model.neck.in_channels = DIMS
    cfg.load_from = str(training_checkpoint)
    runner = tool_config.build_runner(cfg, toolbox=toolbox)
    with caplog.at_level(logging.INFO):
        runner.load_or_resume()
    backbone = runner.model.backbone
    for key in ('freq_embed.0', 'layers.2.1.op.linear.weight', 'patch_embed.conv1.weight'):
        torch.testing.assert_close(backbone.state_dict()[key], FIXTURE['state_dict'][key])
    assert "official vHeat keys loaded as the model's (official keys -> the trunk under " \
           "'backbone.'" in caplog.text
    assert 'fits the model badly' in caplog.text  # the neck and heads keep their initial values


def test_resume_from_an_official_file_is_refused(training_checkpoint, tmp_path):
    cfg, toolbox = runner_for(CONFIGS / 'mask_rcnn/mask-rcnn_vheat-t_fpn_1x_coco.py', tmp_path)
    cfg.model.backbone.pop('init_cfg', None)
    cfg.model.neck.in_channels = DIMS
    tool_config.set_resume(cfg, resume=str(training_checkpoint))
    runner = tool_config.build_runner(cfg, toolbox=toolbox)
    runner.call_hook('before_run')
    with pytest.raises(CheckpointError, match=r"cannot resume from .*: it holds an official "
                                              r"checkpoint, its 'model_ema' entry .*not a "
                                              r"checkpoint of mmengine's runner"):
        runner.load_or_resume()


def test_an_unknown_layout_is_an_error_on_mmengine_paths(tmp_path):
    path = tmp_path / 'odd.pth'
    torch.save(dict(weights=plain_model().state_dict(), epoch=3), path)
    with pytest.raises(CheckpointError, match=r"cannot load checkpoint .*odd.pth: it is neither "
                                              r"a runner checkpoint .*top-level keys: "
                                              r"\['epoch', 'weights'\]"):
        load_checkpoint(mmpretrain_classifier(), str(path))


def test_the_classification_inferencer_takes_the_converted_file(training_checkpoint, tmp_path):
    """The inferencers load with mmengine's own loading: an official file is converted first
    (demo/image_demo.py reads it as it is, through VHeatRunner's reading)."""
    from mmengine.config import Config
    from mmpretrain.apis import ImageClassificationInferencer

    converter = load_script(ROOT / 'tools/model_converters/vheat_to_mmpretrain.py')
    converted = tmp_path / 'mmpretrain.pth'
    assert converter.main([str(training_checkpoint), str(converted)]) == 0
    cfg = Config.fromfile(str(CONFIGS / 'classification/vheat-t_16xb128_in1k.py'))
    cfg.model.backbone.update(arch=mini_arch(CONFIG), img_size=CONFIG['img_size'])
    cfg.model.head.update(num_classes=CONFIG['num_classes'], in_channels=DIMS[-1])
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # earlier tests ran mmdet's
        inferencer = ImageClassificationInferencer(model=cfg, pretrained=str(converted),
                                                   device='cpu')
    assert_official_logits(official_logits(inferencer.model, 'tensor'))
