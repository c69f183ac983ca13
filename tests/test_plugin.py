"""vheat_mm.plugin imports an adapter right after its host, and leaves the host as it would be.

Each case runs in a fresh interpreter with a made-up host and adapter in tmp_path standing for
mmengine and vheat_mm.mm (tests/test_import_order.py runs the real ones).
"""
import pytest

from helpers import run_fresh


@pytest.fixture
def packages(tmp_path):
    """``host`` (a package with a submodule) and ``adapter``, which registers into it or, with
    ``FAIL`` set in the host, raises."""
    (tmp_path / 'host').mkdir()
    (tmp_path / 'host/__init__.py').write_text('from .registry import NAMES\nFAIL = False\n')
    (tmp_path / 'host/registry.py').write_text('NAMES = []\n')
    (tmp_path / 'adapter.py').write_text(
        'import host\n'
        'if host.FAIL:\n'
        '    raise RuntimeError("adapter broken")\n'
        'host.NAMES.append("vHeat")\n')
    return tmp_path


def run_with(packages, code: str) -> dict:
    return run_fresh(f'''
        import json, sys, warnings
        sys.path.insert(0, {str(packages)!r})
        import vheat_mm.plugin as plugin
        # this interpreter's own finder (waiting for mmengine and timm) set aside
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, plugin._HostFinder)]
        plugin.ADAPTERS.clear()
        plugin.ADAPTERS['host'] = 'adapter'
        before = list(sys.meta_path)
        {code}
    ''')


@pytest.mark.parametrize('first', ['host', 'host.registry'])
def test_the_adapter_follows_the_host_whichever_module_is_imported(packages, first):
    found = run_with(packages, f'''
        plugin.follow_hosts()
        waiting = plugin.pending_hosts()
        import {first}
        import host
        print(json.dumps(dict(
            waiting=list(waiting), names=host.NAMES, pending=list(plugin.pending_hosts()),
            meta_path=sys.meta_path == before,
            loader=type(host.__loader__).__name__, spec=type(host.__spec__.loader).__name__)))
    ''')
    assert found == dict(waiting=['host'], names=['vHeat'], pending=[], meta_path=True,
                         loader='SourceFileLoader', spec='SourceFileLoader')


def test_a_host_imported_already_gets_its_adapter_at_once(packages):
    found = run_with(packages, '''
        import host
        plugin.follow_hosts()
        print(json.dumps(dict(names=host.NAMES, meta_path=sys.meta_path == before)))
    ''')
    assert found == dict(names=['vHeat'], meta_path=True)


def test_a_host_that_is_not_installed_adds_nothing(packages):
    found = run_with(packages, '''
        plugin.ADAPTERS['no_such_host_package'] = 'adapter'
        del plugin.ADAPTERS['host']
        plugin.follow_hosts()
        print(json.dumps(dict(meta_path=sys.meta_path == before)))
    ''')
    assert found == dict(meta_path=True)


def test_a_failing_adapter_warns_and_the_host_still_imports(packages):
    (packages / 'host/__init__.py').write_text('from .registry import NAMES\nFAIL = True\n')
    found = run_with(packages, '''
        plugin.follow_hosts()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            import host
        print(json.dumps(dict(names=host.NAMES, meta_path=sys.meta_path == before,
                              warnings=[str(w.message) for w in caught])))
    ''')
    assert found['names'] == [] and found['meta_path']
    assert found['warnings'] == ['vheat_mm: host is imported, but adapter, which registers vHeat '
                                 'with it, failed: RuntimeError: adapter broken']
