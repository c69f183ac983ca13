"""Every checkpoint address mmengine knows is read through the safe reader on the project's paths.

A crafted pickle (one that creates a file when loaded without weights_only) behind each prefix
of mmengine 0.10 (files in torch hub's cache for the names of its tables, a local HTTP(S)
server, stand-ins for the pavi and petrel packages) never runs through
:func:`~vheat_mm.mm.addresses.read_address`, and the error is one line naming the file; nor
through image_demo's ``--weights``, ``VHeatRunner``'s ``load_from`` and ``--resume``, and the
backbone's ``init_cfg``. A prefix another package registers with mmengine is refused on those
paths and left to work on mmengine's own.
"""
import json
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.runner import load_checkpoint
from mmengine.runner.checkpoint import (CheckpointLoader, get_external_models,
                                        get_mmcls_models, get_torchvision_models)

from helpers import (CONFIGS, MINI, CountingServer, mini_arch, one_line_message, python_tool,
                     write_crafted_checkpoint)
from vheat_mm.checkpoint import CheckpointError
from vheat_mm.mm import cpu_launch, tool_config
from vheat_mm.mm.addresses import read_address
from vheat_mm.models import VHeat


@pytest.fixture(autouse=True)
def _scoped():
    """Runners and registries set mmengine's default scope: restore it after, so that later
    tests build in the registries they name."""
    from mmengine.registry import DefaultScope
    saved = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)


@pytest.fixture
def state():
    return VHeat(MINI, img_size=64, num_classes=5).state_dict()


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """torch hub's and mmengine's folders under tmp_path: ``(hub checkpoints, mmengine home)``."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path / 'mmengine'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    hub = tmp_path / 'torch/hub/checkpoints'
    hub.mkdir(parents=True)
    (tmp_path / 'mmengine').mkdir()
    return hub, tmp_path / 'mmengine'



# ----------------------------------------------------------------------------- every address
def in_hub(table_url: str, hub: Path) -> Path:
    """Where mmengine's loaders find ``table_url``'s file: torch hub's cache, by its name."""
    return hub / os.path.basename(table_url)


class FakePavi:
    """Stands for the ``pavi`` package: its model cloud serves the files of ``folder``."""

    def __init__(self, folder: Path) -> None:
        def get(path):
            source = folder / os.path.basename(path)
            return SimpleNamespace(name=source.name,
                                   download=lambda dst: Path(dst).write_bytes(source.read_bytes()))
        self.modelcloud = SimpleNamespace(get=get)


def fake_petrel(folder: Path) -> type:
    """Stands for mmengine's petrel storage backend: serves the files of ``folder``."""
    class Backend:
        def __init__(self, **kwargs) -> None:
            pass

        def get(self, filepath):
            return (folder / os.path.basename(str(filepath))).read_bytes()
    return Backend


@pytest.fixture
def https_server(tmp_path, monkeypatch):
    """A folder served over https on 127.0.0.1 with a certificate trusted for this test;
    yields ``(folder, url of a name)``."""
    folder, cert, key = tmp_path / 'https', tmp_path / 'cert.pem', tmp_path / 'key.pem'
    folder.mkdir()
    try:
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
                        '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
                        '-keyout', str(key), '-out', str(cert)], check=True,
                       capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f'no openssl to make a certificate for the https server: {err}')
    monkeypatch.setenv('SSL_CERT_FILE', str(cert))
    server = CountingServer(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    with server:
        yield folder, lambda name: server.url(name).replace('http://', 'https://')


def place(case, tmp_path, hub, home, monkeypatch, http_url, https):
    """Where the crafted file of ``case`` goes, and the address that names it."""
    remote = tmp_path / 'remote'
    remote.mkdir(exist_ok=True)
    if case == 'local':
        return tmp_path / 'local.pth', str(tmp_path / 'local.pth')
    if case == 'http://':
        return remote / 'served.pth', http_url('served.pth')
    if case == 'https://':
        folder, url = https
        return folder / 'served.pth', url('served.pth')
    if case in ('torchvision://', 'modelzoo://'):
        return in_hub(get_torchvision_models()['resnet50'], hub), f'{case}resnet50'
    if case in ('open-mmlab://', 'openmmlab://'):
        return in_hub(get_external_models()['resnet50_v1c'], hub), f'{case}resnet50_v1c'
    if case == 'open-mmlab:// (deprecated name)':
        target = get_external_models()['detectron/resnet50_caffe']
        return in_hub(target, hub), 'open-mmlab://resnet50_caffe'
    if case == 'open-mmlab:// (file in mmengine home)':
        (home / 'open_mmlab.json').write_text(json.dumps({'vheat_local': 'local/vheat.pth'}))
        (home / 'local').mkdir()
        return home / 'local/vheat.pth', 'open-mmlab://vheat_local'
    if case == 'mmcls://':
        return in_hub(get_mmcls_models()['vgg11'], hub), 'mmcls://vgg11'
    if case == 'pavi://':
        monkeypatch.setitem(sys.modules, 'pavi', FakePavi(remote))
        return remote / 'model.pth', 'pavi://project/model.pth'
    from mmengine.fileio.backends import registry_utils
    monkeypatch.setitem(registry_utils.backends, 'petrel', fake_petrel(remote))
    return remote / 'model.pth', f'{case}bucket/model.pth'


ADDRESSES = ['local', 'http://', 'https://', 'torchvision://', 'modelzoo://', 'open-mmlab://',
             'openmmlab://', 'open-mmlab:// (deprecated name)',
             'open-mmlab:// (file in mmengine home)', 'mmcls://', 'pavi://', 's3://',
             'open-mmlab:s3://', 'petrel://']


@pytest.mark.parametrize('case', ADDRESSES)
def test_every_address_reads_through_the_safe_reader(case, tmp_path, homes, monkeypatch, state,
                                                     request):
    """The file behind the address loads, then a crafted one there is refused without running,
    even with weights_only loading switched off for torch.load's default."""
    hub, home = homes
    https = request.getfixturevalue('https_server') if case == 'https://' else None
    with CountingServer(tmp_path / 'remote') as server:
        path, address = place(case, tmp_path, hub, home, monkeypatch, server.url, https)
        torch.save({'state_dict': {f'backbone.{k}': v for k, v in state.items()}}, path)
        loaded = read_address(address)
        key = 'layers.0.0.op.linear.weight' if case == 'mmcls://' \
            else 'backbone.layers.0.0.op.linear.weight'
        torch.testing.assert_close(loaded['state_dict'][key], state['layers.0.0.op.linear.weight'])
        if case.startswith('http'):  # a downloaded file is cached: serve the crafted one anew
            address = address.replace('served.pth', 'crafted.pth')
            path = path.with_name('crafted.pth')
        marker = write_crafted_checkpoint(path, {'state_dict': state})
        monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
        with pytest.raises(CheckpointError) as error:
            read_address(address)
    one_line_message(error, path.name)
    assert not marker.exists()


def test_a_name_cached_by_torch_hub_is_read_from_there(homes, state):
    """torchvision://resnet50 is the file torch hub and mmengine keep for it, and its messages
    name that file and the address."""
    hub, _ = homes
    path = in_hub(get_torchvision_models()['resnet50'], hub)
    marker = write_crafted_checkpoint(path, {'state_dict': state})
    with pytest.raises(CheckpointError) as error:
        read_address('torchvision://resnet50')
    message = one_line_message(error)
    assert message.startswith(f'refusing to load {path} (torchvision://resnet50): its pickle '
                              f'asks for ')
    assert not marker.exists()


def test_a_prefix_registered_later_works_in_mmengine_and_is_refused_by_vheat_mm(
        tmp_path, homes, monkeypatch, state):
    """mmengine's own loading uses what another package registers, as without vheat_mm; the
    project's reader refuses a prefix it does not know and keeps reading torchvision:// itself."""
    path = tmp_path / 'plain.pth'
    torch.save({'state_dict': {'weight': torch.ones(2, 2), 'bias': torch.zeros(2)}}, path)
    crafted = in_hub(get_torchvision_models()['resnet50'], homes[0])
    marker = write_crafted_checkpoint(crafted, {'state_dict': state})

    def other_loader(filename, map_location=None):
        return torch.load(path, weights_only=True)

    monkeypatch.setattr(CheckpointLoader, '_schemes', dict(CheckpointLoader._schemes))
    CheckpointLoader.register_scheme('vheattest://', loader=other_loader)
    CheckpointLoader.register_scheme('torchvision://', loader=other_loader, force=True)
    for address in ('vheattest://x', 'torchvision://resnet50'):
        linear = torch.nn.Linear(2, 2)
        load_checkpoint(linear, address)  # mmengine's loading, with the other package's loader
        assert torch.equal(linear.weight, torch.ones(2, 2))
    with pytest.raises(CheckpointError) as error:
        read_address('vheattest://x')
    assert one_line_message(error, "'vheattest://'", 'torchvision://').startswith(
        "cannot load 'vheattest://x': vheat_mm reads local paths and the prefixes ")
    with pytest.raises(CheckpointError, match='refusing to load'):
        read_address('torchvision://resnet50')
    assert not marker.exists()


@pytest.mark.parametrize('address, package', [('pavi://project/model.pth', 'pavi package'),
                                              ('s3://bucket/model.pth', "backend 'petrel'")])
def test_a_storage_package_that_is_not_installed_is_named(address, package, monkeypatch):
    monkeypatch.setitem(sys.modules, 'pavi', None)
    monkeypatch.setitem(sys.modules, 'petrel_client', None)
    monkeypatch.setitem(sys.modules, 'petrel_client.client', None)
    with pytest.raises(CheckpointError) as error:
        read_address(address)
    assert one_line_message(error, package, 'not installed').startswith(f"cannot load '{address}'")


def test_an_unknown_name_of_a_table_is_named(homes):
    with pytest.raises(CheckpointError) as error:
        read_address('torchvision://no_such_net')
    one_line_message(error, "'torchvision://no_such_net'", "has no 'no_such_net'")


# ----------------------------------------------------------------------------- the paths of a run
def runner_for(config: Path, work_dir: Path):
    cfg, toolbox = tool_config.load_config(str(config), work_dir=str(work_dir), cfg_options=None,
                                           launcher='none')
    cfg.model.backbone.update(arch=mini_arch(MINI), img_size=64)
    cpu_launch.prepare_cpu_launch(cfg)  # as the tools do
    return cfg, toolbox


@pytest.fixture
def crafted_resnet50(homes, state):
    """A crafted file where torch hub keeps torchvision://resnet50; returns its marker."""
    return write_crafted_checkpoint(in_hub(get_torchvision_models()['resnet50'], homes[0]),
                                    {'state_dict': state})


@pytest.mark.parametrize('how', ['load_from', 'resume from last_checkpoint'])
def test_the_runner_refuses_a_crafted_torchvision_file(how, tmp_path, crafted_resnet50):
    cfg, toolbox = runner_for(CONFIGS / 'classification/vheat-t_16xb128_in1k.py', tmp_path)
    if how == 'load_from':
        cfg.load_from = 'torchvision://resnet50'
    else:
        (tmp_path / 'last_checkpoint').write_text('torchvision://resnet50')
        tool_config.set_resume(cfg, resume='auto')
    runner = tool_config.build_runner(cfg, toolbox=toolbox)
    runner.call_hook('before_run')  # as runner.train() and runner.test() do
    with pytest.raises(CheckpointError) as error:
        runner.load_or_resume()
    one_line_message(error, 'resnet50-0676ba61.pth (torchvision://resnet50)', 'refusing to load')
    assert not crafted_resnet50.exists()


@pytest.mark.e2e
def test_image_demo_weights_from_torchvision_exit_with_one_line(crafted_resnet50, tmp_path):
    done = python_tool('demo/image_demo.py', 'skimage:astronaut',
                       'configs/demo/mask-rcnn_vheat-t_fpn_shapes.py', '--weights',
                       'torchvision://resnet50', '--out-dir', str(tmp_path / 'out'),
                       env={'TORCH_HOME': os.environ['TORCH_HOME'],
                            'MMENGINE_HOME': os.environ['MMENGINE_HOME']}, returncode=1)
    assert 'Traceback' not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r'image_demo\.py: error: refusing to load \S+/resnet50-0676ba61\.pth '
                        r'\(torchvision://resnet50\): its pickle asks for .*', last), last
    assert not crafted_resnet50.exists()
