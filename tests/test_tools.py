"""The config steps of tools/train.py and tools/test.py (vheat_mm.mm.tool_config), running them
without CUDA (vheat_mm.mm.cpu_launch), the toolbox profiles (vheat_mm.mm.toolbox); launch scripts.

Nothing here trains: the config transforms are checked on config dicts, the CPU process-group
set-up with a one-process group, and the shell scripts with stand-ins for python and srun.
"""
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.registry import MODEL_WRAPPERS

from helpers import ROOT, free_port, load_script, python_tool
from vheat_mm.mm import cpu_launch, tool_config, toolbox
from vheat_mm.mm.tool_config import ToolConfigError


UPERNET_MODEL = dict(
    type='EncoderDecoder',
    backbone=dict(type='vHeat', arch='tiny'),
    decode_head=dict(type='UPerHead', norm_cfg=dict(type='SyncBN', requires_grad=True)),
    auxiliary_head=[dict(type='FCNHead', norm_cfg=dict(type='SyncBN', requires_grad=True)),
                    dict(type='FCNHead', norm_cfg=dict(type='BN'))],
    neck=dict(type='FPN', norm_cfg=dict(type='mmcv.MMSyncBN')))


def config(**fields) -> Config:
    return Config(dict(fields))


@pytest.fixture
def logged(monkeypatch):
    messages = []
    for module in (tool_config, cpu_launch):
        monkeypatch.setattr(module, 'print_log',
                            lambda message, logger, level: messages.append(message))
    return messages


# ----------------------------------------------------------------------------- toolbox, config
@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_toolbox_is_the_default_scope(scope):
    assert tool_config.select_toolbox(config(default_scope=scope)) == scope


@pytest.mark.parametrize('scope', [None, 'mmengine', 'mmocr'])
def test_missing_or_unknown_scope_lists_the_toolboxes(scope):
    cfg = config() if scope is None else config(default_scope=scope)
    with pytest.raises(ToolConfigError, match=r"default_scope to one of \['mmpretrain', 'mmdet', "
                                              rf"'mmseg'\] to choose the toolbox; it is "
                                              rf"{scope!r}"):
        tool_config.select_toolbox(cfg)


def test_load_config_sets_launcher_work_dir_and_options(tmp_path):
    path = tmp_path / 'upernet_vheat_tiny.py'
    path.write_text("default_scope = 'mmseg'\nmodel = dict(type='EncoderDecoder')\n")
    cfg, toolbox = tool_config.load_config(str(path), work_dir=None, launcher='pytorch',
                                           cfg_options={'model.type': 'Other'})
    assert toolbox == 'mmseg' and cfg.launcher == 'pytorch' and cfg.model.type == 'Other'
    assert cfg.work_dir == os.path.join('./work_dirs', 'upernet_vheat_tiny')
    cfg, _ = tool_config.load_config(str(path), work_dir='/tmp/wd', launcher='none',
                                     cfg_options=None)
    assert cfg.work_dir == '/tmp/wd'
    cfg, toolbox = tool_config.load_config(str(path), work_dir=None, launcher='none',
                                           cfg_options={'work_dir': 'from_options',
                                                        'default_scope': 'mmdet'})
    assert cfg.work_dir == 'from_options' and toolbox == 'mmdet'


def test_amp_resume_and_auto_scale_lr(logged):
    cfg = config(optim_wrapper=dict(optimizer=dict(type='SGD')))
    tool_config.enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    tool_config.enable_amp(cfg)
    assert logged == ['AMP training is already enabled in the config.']
    with pytest.raises(ToolConfigError, match="OptimWrapper, the config has 'ApexOptimWrapper'"):
        tool_config.enable_amp(config(optim_wrapper=dict(type='ApexOptimWrapper')))

    cfg = config(resume=False, load_from='pretrained.pth')
    tool_config.set_resume(cfg, resume=None)
    assert (cfg.resume, cfg.load_from) == (False, 'pretrained.pth')
    tool_config.set_resume(cfg, resume='auto')
    assert (cfg.resume, cfg.load_from) == (True, None)
    tool_config.set_resume(cfg, resume='work_dirs/x/iter_4.pth')
    assert (cfg.resume, cfg.load_from) == (True, 'work_dirs/x/iter_4.pth')

    cfg = config(auto_scale_lr=dict(enable=False, base_batch_size=16))
    tool_config.enable_auto_scale_lr(cfg)
    assert cfg.auto_scale_lr.enable is True
    with pytest.raises(ToolConfigError, match='--auto-scale-lr needs auto_scale_lr'):
        tool_config.enable_auto_scale_lr(config())


def test_checkpoint_hook_becomes_the_atomic_one(logged):
    from mmengine.registry import HOOKS

    from vheat_mm.mm.checkpoint_hook import AtomicCheckpointHook

    cfg = config(default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2)))
    assert tool_config.use_atomic_checkpoints(cfg) == [
        'default_hooks.checkpoint: CheckpointHook -> AtomicCheckpointHook']
    assert cfg.default_hooks.checkpoint == dict(type='AtomicCheckpointHook', interval=2)
    assert logged == ['checkpoints are written atomically: default_hooks.checkpoint: '
                      'CheckpointHook -> AtomicCheckpointHook']
    assert HOOKS.get('AtomicCheckpointHook') is AtomicCheckpointHook
    for cfg in (config(), config(default_hooks=dict(checkpoint=None)),
                config(default_hooks=dict(checkpoint=dict(type='mmengine.CheckpointHook')))):
        assert tool_config.use_atomic_checkpoints(cfg) == []


def test_mmpretrain_dataloader_defaults():
    cfg = config(train_dataloader=dict(num_workers=2, batch_size=4),
                 val_dataloader=dict(num_workers=0, collate_fn=dict(type='pseudo_collate')),
                 test_dataloader=None)
    tool_config.set_dataloader_defaults(
        cfg, toolbox='mmpretrain', persistent_workers=True,
        fields=('train_dataloader', 'val_dataloader', 'test_dataloader'))
    assert cfg.train_dataloader == dict(pin_memory=torch.cuda.is_available(), batch_size=4,
                                        collate_fn=dict(type='default_collate'), num_workers=2,
                                        persistent_workers=True)
    assert cfg.val_dataloader.collate_fn.type == 'pseudo_collate'
    assert 'persistent_workers' not in cfg.val_dataloader and cfg.test_dataloader is None
    other = config(train_dataloader=dict(num_workers=2))
    tool_config.set_dataloader_defaults(other, toolbox='mmdet', persistent_workers=True,
                                        fields=('train_dataloader',))
    assert other.train_dataloader == dict(num_workers=2)


def test_show_dir_and_out_per_toolbox():
    hooks = dict(visualization=dict(type='VisualizationHook'))
    det = config(default_hooks=hooks)
    tool_config.enable_visualization(det, toolbox='mmdet', show_dir='shows')
    assert det.default_hooks.visualization == dict(type='VisualizationHook', draw=True,
                                                   test_out_dir='shows')
    seg = config(default_hooks=hooks, visualizer=dict(type='SegLocalVisualizer'))
    tool_config.enable_visualization(seg, toolbox='mmseg', show_dir='shows')
    assert seg.default_hooks.visualization.draw and seg.visualizer.save_dir == 'shows'
    cls = config(default_hooks=hooks)
    tool_config.enable_visualization(cls, toolbox='mmpretrain', show_dir='shows')
    assert cls.default_hooks.visualization.enable and cls.default_hooks.visualization.out_dir \
        == 'shows'
    with pytest.raises(ToolConfigError, match='--show-dir needs default_hooks.visualization'):
        tool_config.enable_visualization(config(default_hooks={}), toolbox='mmdet', show_dir='s')

    seg = config(test_evaluator=dict(type='IoUMetric'))
    tool_config.set_test_output(seg, toolbox='mmseg', out='preds')
    assert seg.test_evaluator == dict(type='IoUMetric', output_dir='preds', keep_results=True)
    tool_config.set_test_output(config(), toolbox='mmdet', out='results.pkl')
    with pytest.raises(ToolConfigError, match="--out must name a .pkl or .pickle file for "
                                              "mmpretrain, got 'results.json'"):
        tool_config.set_test_output(config(), toolbox='mmpretrain', out='results.json')


def test_the_objects_the_toolbox_profiles_name_import():
    for name, profile in toolbox.TOOLBOX_PROFILES.items():
        assert hasattr(toolbox.registry(name), 'MODELS'), name
        assert callable(profile.infer_image), name
        for dotted in (profile.dump_metric, profile.runner_setup, profile.data_sample):
            if dotted is not None:
                assert callable(toolbox.import_object(dotted)), (name, dotted)


# ----------------------------------------------------------------------------- --tta
def test_tta_for_mmseg_swaps_in_the_config_s_model_and_pipeline():
    tta_pipeline = [dict(type='LoadImageFromFile'), dict(type='TestTimeAug', transforms=[])]
    cfg = config(model=dict(type='EncoderDecoder', backbone=dict(type='vHeat')),
                 tta_model=dict(type='SegTTAModel'), tta_pipeline=tta_pipeline,
                 test_dataloader=dict(dataset=dict(pipeline=[dict(type='LoadImageFromFile')])))
    tool_config.enable_tta(cfg, toolbox='mmseg')
    assert cfg.model == dict(type='SegTTAModel',
                             module=dict(type='EncoderDecoder', backbone=dict(type='vHeat')))
    assert cfg.test_dataloader.dataset.pipeline == tta_pipeline


@pytest.mark.parametrize('missing', [('tta_model', 'tta_pipeline'), ('tta_pipeline',)])
def test_tta_for_mmseg_without_it_in_the_config_is_an_error(missing):
    cfg = config(model=dict(type='EncoderDecoder'), tta_model=dict(type='SegTTAModel'),
                 tta_pipeline=[], test_dataloader=dict(dataset=dict(pipeline=[])))
    for key in missing:
        cfg.pop(key)
    with pytest.raises(ToolConfigError, match=f'--tta needs {" and ".join(missing)} in the '
                                              f'config \\(mmseg has no default'):
        tool_config.enable_tta(cfg, toolbox='mmseg')
    assert cfg.model == dict(type='EncoderDecoder')


def test_tta_for_mmdet_uses_mmdet_defaults_from_the_innermost_dataset(logged):
    pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(1333, 800)),
                dict(type='PackDetInputs')]
    cfg = config(model=dict(type='MaskRCNN'),
                 test_dataloader=dict(dataset=dict(type='RepeatDataset',
                                                   dataset=dict(type='CocoDataset',
                                                                pipeline=pipeline))))
    tool_config.enable_tta(cfg, toolbox='mmdet')
    assert cfg.model.type == 'DetTTAModel' and cfg.model.module == dict(type='MaskRCNN')
    assert cfg.model.tta_cfg == dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)
    tta = cfg.test_dataloader.dataset.pipeline
    assert tta[:2] == pipeline[:2] and tta[2].type == 'TestTimeAug'
    assert tta[2].transforms[0] == [dict(type='RandomFlip', prob=1.),
                                    dict(type='RandomFlip', prob=0.)]
    assert tta[2].transforms[1][0].type == 'PackDetInputs'
    assert 'flip_direction' in tta[2].transforms[1][0].meta_keys
    assert len(logged) == 2 and 'no tta_model' in logged[0] and 'no tta_pipeline' in logged[1]


def test_tta_for_mmpretrain_flips_and_averages():
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    cfg = config(model=dict(type='ImageClassifier'),
                 test_dataloader=dict(dataset=dict(type='CustomDataset', pipeline=pipeline)))
    tool_config.enable_tta(cfg, toolbox='mmpretrain')
    assert cfg.model == dict(type='mmpretrain.AverageClsScoreTTA',
                             module=dict(type='ImageClassifier'))
    assert cfg.test_dataloader.dataset.pipeline[1].transforms[1] == [dict(type='PackInputs')]


# ----------------------------------------------------------------------------- CPU
def test_sync_bn_becomes_bn_with_every_change_logged(logged):
    cfg = config(model=UPERNET_MODEL, sync_bn='torch', launcher='none')
    changes = cpu_launch.adapt_to_cpu(cfg)
    assert cfg.model.decode_head.norm_cfg == dict(type='BN', requires_grad=True)
    assert [head.norm_cfg.type for head in cfg.model.auxiliary_head] == ['BN', 'BN']
    assert cfg.model.neck.norm_cfg.type == 'BN' and cfg.sync_bn is None
    assert changes == ['model.decode_head.norm_cfg: SyncBN -> BN',
                       'model.auxiliary_head[0].norm_cfg: SyncBN -> BN',
                       'model.neck.norm_cfg: mmcv.MMSyncBN -> BN',
                       "sync_bn: 'torch' -> None (no BN to SyncBN conversion)"]
    assert logged == [f'no CUDA, config changed to run on CPU: {c}' for c in changes]
    assert cpu_launch.replace_sync_bn(cfg) == []
    assert 'env_cfg' not in cfg and 'model_wrapper_cfg' not in cfg  # one process: no group


def test_mixed_precision_falls_back_to_float32_on_cpu(logged):
    cfg = Config.fromfile(str(ROOT / 'configs/classification/vheat-t_16xb128_in1k.py'))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'  # the paper configs' default
    change = ('optim_wrapper: AmpOptimWrapper -> OptimWrapper (float32: mixed precision with a '
              'loss scaler needs CUDA)')
    assert cpu_launch.adapt_to_cpu(cfg) == [change]
    assert logged == [f'no CUDA, config changed to run on CPU: {change}']
    assert cfg.optim_wrapper.type == 'OptimWrapper' and 'loss_scale' not in cfg.optim_wrapper
    assert 'dtype' not in cfg.optim_wrapper and cfg.optim_wrapper.clip_grad == dict(max_norm=5.0)
    assert cpu_launch.train_in_float32(cfg) == []


def test_distributed_cpu_runs_get_gloo_and_ddp_without_device_ids(logged):
    cfg = config(model=UPERNET_MODEL, launcher='pytorch', find_unused_parameters=True,
                 env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=60)))
    changes = cpu_launch.adapt_to_cpu(cfg)
    assert changes[-2:] == ['env_cfg.dist_cfg.backend: nccl -> gloo',
                            'model_wrapper_cfg: MMDistributedDataParallel with device_ids=None']
    assert cfg.env_cfg.dist_cfg == dict(backend='gloo', timeout=60)
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', device_ids=None,
                                         broadcast_buffers=False, find_unused_parameters=True)
    assert len(logged) == len(changes) == 5


@pytest.mark.parametrize('env_cfg, backend, changed', [
    (None, 'gloo', True),
    (dict(cudnn_benchmark=True), 'gloo', True),
    (dict(dist_cfg=dict(backend='nccl', timeout=60)), 'gloo', True),
    (dict(dist_cfg=dict(backend='gloo')), 'gloo', False),
    (dict(dist_cfg=dict(backend='mpi')), 'mpi', False),
])
def test_gloo_replaces_nccl(env_cfg, backend, changed):
    cfg = config() if env_cfg is None else config(env_cfg=env_cfg)
    assert bool(cpu_launch.use_gloo_backend(cfg)) is changed
    assert cfg.env_cfg.dist_cfg.backend == backend
    if env_cfg and 'dist_cfg' in env_cfg and 'timeout' in env_cfg['dist_cfg']:
        assert cfg.env_cfg.dist_cfg.timeout == 60


def test_ddp_subclasses_in_model_wrapper_cfg_get_no_device_ids():
    custom = config(model_wrapper_cfg=dict(type='MMSeparateDistributedDataParallel',
                                           broadcast_buffers=True))
    assert cpu_launch.ddp_without_device_ids(custom) == [
        'model_wrapper_cfg (MMSeparateDistributedDataParallel): device_ids=None']
    assert custom.model_wrapper_cfg.device_ids is None
    assert custom.model_wrapper_cfg.broadcast_buffers is True
    fsdp = config(model_wrapper_cfg=dict(type='MMFullyShardedDataParallel'))
    assert cpu_launch.ddp_without_device_ids(fsdp) == []
    assert 'device_ids' not in fsdp.model_wrapper_cfg


def test_prepare_cpu_launch_adapts_only_without_cuda(monkeypatch, logged):
    amp = dict(type='AmpOptimWrapper', loss_scale='dynamic', optimizer=dict(type='AdamW'))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = config(model=UPERNET_MODEL, optim_wrapper=amp, launcher='none')
    assert cpu_launch.prepare_cpu_launch(cfg) == [] and cfg.optim_wrapper == amp
    assert cfg.model.decode_head.norm_cfg.type == 'SyncBN' and logged == []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    changes = cpu_launch.prepare_cpu_launch(cfg)
    assert changes == cpu_launch.adapt_to_cpu(config(model=UPERNET_MODEL, optim_wrapper=amp,
                                                     launcher='none'))
    assert cfg.optim_wrapper.type == 'OptimWrapper' and not dist.is_initialized()


def test_build_runner_builds_the_config_as_it_is(monkeypatch):
    """Adapting to the CPU is the tools' explicit step: build_runner changes nothing."""
    built = []

    class Recorder:
        @staticmethod
        def from_cfg(cfg):
            built.append(cfg)
            return 'runner'

    monkeypatch.setattr(tool_config, 'VHeatRunner', Recorder)  # a config naming no runner
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = config(model=UPERNET_MODEL, launcher='pytorch', default_scope='mmseg',
                 optim_wrapper=dict(type='AmpOptimWrapper'))
    before = cfg.to_dict()
    assert tool_config.build_runner(cfg, toolbox='mmseg') == 'runner'
    assert built == [cfg] and cfg.to_dict() == before and not dist.is_initialized()


@pytest.fixture
def isolated_dist_env(monkeypatch):
    """Environment variables that the launchers write, restored afterwards."""
    for name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT',
                 'OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'SLURM_PROCID', 'SLURM_NTASKS',
                 'SLURM_NODELIST', 'SLURM_LOCALID', 'PATH'):
        monkeypatch.setenv(name, os.environ.get(name, 'unset'))
        if name != 'PATH':
            monkeypatch.delenv(name)
    yield monkeypatch
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the set-up without CUDA')
@pytest.mark.parametrize('launcher', ['pytorch', 'slurm'])
def test_cpu_process_group_with_mmengine_launchers(isolated_dist_env, tmp_path, launcher,
                                                   logged):
    env = isolated_dist_env
    port = str(free_port())
    if launcher == 'pytorch':
        for name, value in dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0',
                                MASTER_ADDR='127.0.0.1', MASTER_PORT=port).items():
            env.setenv(name, value)
    else:  # what srun sets, and an scontrol that names this host
        scontrol = tmp_path / 'scontrol'
        scontrol.write_text('#!/bin/sh\necho 127.0.0.1\n')
        scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
        env.setenv('PATH', f'{tmp_path}{os.pathsep}{os.environ["PATH"]}')
        for name, value in dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_NODELIST='node1',
                                SLURM_LOCALID='0', MASTER_PORT=port).items():
            env.setenv(name, value)
    with pytest.raises(RuntimeError):
        torch.cuda.set_device(0)  # what mmengine's launchers call: it fails without a GPU
    cfg = config(model=dict(type='M'), launcher=launcher,
                 env_cfg=dict(mp_cfg=dict(mp_start_method='fork'), dist_cfg=dict(backend='nccl')))
    cpu_launch.adapt_to_cpu(cfg)
    set_device = torch.cuda.set_device
    cpu_launch.init_distributed_without_cuda(cfg)
    assert torch.cuda.set_device is set_device
    assert dist.is_initialized() and dist.get_backend() == 'gloo' and dist.get_world_size() == 1
    if launcher == 'slurm':
        assert os.environ['MASTER_ADDR'] == '127.0.0.1' and os.environ['RANK'] == '0'
    # The runner wraps the model from model_wrapper_cfg, passing device_ids=[LOCAL_RANK] as a
    # default argument: the config's device_ids=None must win for a CPU module.
    wrapped = MODEL_WRAPPERS.build(cfg.model_wrapper_cfg,
                                   default_args=dict(module=torch.nn.Linear(2, 2), device_ids=[0]))
    assert wrapped.device_ids is None
    wrapped(torch.ones(1, 2)).sum().backward()
    cpu_launch.close_distributed()
    assert not dist.is_initialized()


# ----------------------------------------------------------------------------- launch scripts
@pytest.fixture
def fake_checkout(tmp_path):
    """A copy of the launch scripts whose .venv/bin/python (and srun) print their arguments."""
    (tmp_path / 'tools').mkdir()
    for name in ('_launch_env.sh', 'dist_train.sh', 'dist_test.sh', 'slurm_train.sh',
                 'slurm_test.sh'):
        shutil.copy(ROOT / 'tools' / name, tmp_path / 'tools' / name)
    bin_dir = tmp_path / '.venv' / 'bin'
    bin_dir.mkdir(parents=True)
    for name, path in (('python', bin_dir / 'python'), ('srun', tmp_path / 'srun')):
        path.write_text(f'#!/bin/sh\necho "{name} $* PYTHONPATH=$PYTHONPATH '
                        f'MASTER_PORT=${{MASTER_PORT:-}}"\n')
        path.chmod(0o755)
    return tmp_path


def run_script(checkout, script, *args, **env):
    environ = {k: v for k, v in os.environ.items() if k not in
               ('NNODES', 'NODE_RANK', 'PORT', 'MASTER_ADDR', 'MASTER_PORT', 'PYTHONPATH',
                'GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS')}
    environ.update(env, PATH=f'{checkout}{os.pathsep}{os.environ["PATH"]}')
    done = subprocess.run(['bash', str(checkout / 'tools' / script), *args], env=environ,
                          capture_output=True, text=True, cwd='/')
    return done.returncode, done.stdout.strip()


def test_dist_scripts_run_torchrun_with_the_repository_python(fake_checkout):
    root = fake_checkout
    code, out = run_script(root, 'dist_train.sh', 'cfg.py', '2', '--amp', '--resume')
    assert code == 0
    assert out == (f'python -m torch.distributed.run --nnodes=1 --node_rank=0 '
                   f'--master_addr=127.0.0.1 --nproc_per_node=2 --master_port=29500 '
                   f'{root}/tools/train.py cfg.py --launcher pytorch --amp --resume '
                   f'PYTHONPATH={root} MASTER_PORT=')
    code, out = run_script(root, 'dist_test.sh', 'cfg.py', 'ckpt.pth', '4', '--tta',
                           NNODES='2', NODE_RANK='1', PORT='29600', MASTER_ADDR='10.0.0.1',
                           PYTHONPATH='/extra')
    assert code == 0
    assert out == (f'python -m torch.distributed.run --nnodes=2 --node_rank=1 '
                   f'--master_addr=10.0.0.1 --nproc_per_node=4 --master_port=29600 '
                   f'{root}/tools/test.py cfg.py ckpt.pth --launcher pytorch --tta '
                   f'PYTHONPATH={root}:/extra MASTER_PORT=')
    code, _ = run_script(root, 'dist_train.sh', 'cfg.py')
    assert code == 2


def test_slurm_scripts_run_srun_with_the_slurm_launcher(fake_checkout):
    root = fake_checkout
    code, out = run_script(root, 'slurm_train.sh', 'part', 'job', 'cfg.py', 'wd', '--amp',
                           GPUS='4', GPUS_PER_NODE='2', SRUN_ARGS='--quotatype=auto -x n1',
                           PORT='29700')
    assert code == 0
    assert out == (f'srun -p part --job-name=job --gres=gpu:2 --ntasks=4 --ntasks-per-node=2 '
                   f'--cpus-per-task=5 --kill-on-bad-exit=1 --quotatype=auto -x n1 '
                   f'{root}/.venv/bin/python -u {root}/tools/train.py cfg.py --work-dir=wd '
                   f'--launcher=slurm --amp PYTHONPATH={root} MASTER_PORT=29700')
    code, out = run_script(root, 'slurm_test.sh', 'part', 'job', 'cfg.py', 'ckpt.pth',
                           '--out', 'r.pkl')
    assert code == 0
    assert out == (f'srun -p part --job-name=job --gres=gpu:8 --ntasks=8 --ntasks-per-node=8 '
                   f'--cpus-per-task=5 --kill-on-bad-exit=1 {root}/.venv/bin/python -u '
                   f'{root}/tools/test.py cfg.py ckpt.pth --launcher=slurm --out r.pkl '
                   f'PYTHONPATH={root} MASTER_PORT=')


# ----------------------------------------------------------------------------- the tools
def test_train_tool_reports_a_config_without_a_toolbox(tmp_path):
    path = tmp_path / 'no_scope.py'
    path.write_text("model = dict(type='ImageClassifier')\n")
    done = subprocess.run([sys.executable, str(ROOT / 'tools' / 'train.py'), str(path),
                           '--work-dir', str(tmp_path / 'wd')],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert "train.py: error: the config must set default_scope to one of ['mmpretrain', 'mmdet', " \
           "'mmseg'] to choose the toolbox; it is None" in done.stderr


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_a_config_that_is_not_python_is_named_with_its_line(tmp_path, tool):
    broken = tmp_path / 'broken.py'
    broken.write_text("model = dict(\n    type='ImageClassifier',\n")
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = [{str(broken)!r}]\n")
    for config, where in ((broken, str(broken)), (child, f'a config that {child} inherits')):
        args = [config] + (['checkpoint.pth'] if tool == 'test.py' else [])
        done = python_tool(f'tools/{tool}', *args, '--work-dir', tmp_path / 'wd', returncode=1)
        assert done.stderr.strip().splitlines()[-1] == (
            f"{tool}: error: {where} is not valid Python: line 1: '(' was never closed")


def test_cfg_options_without_an_equals_sign_is_named():
    done = python_tool('tools/train.py', 'configs/demo/mask-rcnn_vheat-t_fpn_shapes.py',
                       '--cfg-options', 'train_cfg.max_iters=2', 'foo', returncode=2)
    assert done.stderr.strip().splitlines()[-1] == (
        "train.py: error: --cfg-options takes key=value items (for example "
        "train_cfg.max_iters=10), got 'foo'")


def test_check_install_checks_mmcv_ops(capsys):
    check = load_script(ROOT / 'tools/check_install.py')
    assert check.check_mmcv_ops() is None  # on this machine: CPU ops, no GPU (or a working one)
    out = capsys.readouterr().out
    assert 'mmcv 2.1.0: compiled ops for the CPU' in out
    kept, pooled = check.run_mmcv_ops('cpu')
    assert 0 < len(kept) < 32 and pooled.shape == (32, 4, 7, 7) and pooled.abs().sum() > 0


def test_check_install_fails_loudly_for_a_gpu_without_mmcv_cuda_ops(monkeypatch, capsys):
    import mmcv.ops
    check = load_script(ROOT / 'tools/check_install.py')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a: 'NVIDIA H100')
    monkeypatch.setattr(mmcv.ops, 'get_compiling_cuda_version', lambda: 'not available')
    problem = check.check_mmcv_ops()
    assert problem.startswith('a GPU is visible (NVIDIA H100) but mmcv was built without CUDA '
                              'ops: RoIAlign and NMS would fail on CUDA tensors')
    assert check.main(['--size', '64', '64']) == 1
    assert capsys.readouterr().err.startswith('error: a GPU is visible')


def test_visualize_heat_writes_its_three_pictures(tmp_path):
    tool = load_script(ROOT / 'tools/analysis_tools/visualize_heat.py')
    assert tool.main(['--arch', 'tiny', '--size', '64', '--images', '2', '--stage', '2',
                      '--no-swin', '--out-dir', str(tmp_path)]) == 0
    for name in ('erf.png', 'decay.png', 'point_source.png'):
        assert (tmp_path / name).stat().st_size > 10_000, name
    model = tool.VHeatFeatures('tiny', img_size=64).eval()
    field = tool.effective_receptive_field(
        lambda x: model.forward_stages(x)[1].permute(0, 3, 1, 2),
        tool.photographs(['astronaut'], 64), 'test')
    assert field.shape == (64, 64) and field.max() == 1.0
    peak = np.unravel_index(field.argmax(), field.shape)
    assert all(abs(p - 32) <= 8 for p in peak)  # the central position's own neighbourhood
