"""The caches of derived tensors stay within their byte budget, training frees them, and no
cached tensor outlives the weights it derives from.

A deployed detector runs the backbone at hundreds of distinct padded sizes; before the budget,
vHeat-T kept every size's decay ** k, resized freq_embed and bases (1.4 GiB after 20 COCO-sized
inputs, kept through training). What derives from weights is cached in the deploy form alone
(:func:`vheat_mm.policy.caches_weight_derived`); in evaluation only the bases and decay maps are.
"""
import copy
import pickle
import threading

import pytest
import torch
from torch import nn

from helpers import MINI
from vheat_mm.models import TensorCache, VHeat, VHeatFeatures

MiB = 2**20


def detection_sizes(count: int) -> list[tuple[int, int]]:
    """Distinct padded sizes of COCO images resized to 800 x (at most 1333), as in mmdet."""
    sizes = [(800, w) for w in range(1344, 1000, -32)] + [(768, w) for w in range(1344, 1000, -32)]
    return sizes[:count]


def fill_caches(model: VHeatFeatures, height: int, width: int) -> None:
    """What a no_grad forward at (height, width) caches, without running the convolutions:
    each stage's bases, decay map and resized freq_embed, and each block's decay ** k."""
    with torch.no_grad():
        for i, stage in enumerate(model.layers):
            stride = 4 * 2**i
            h, w = -(-height // stride), -(-width // stride)
            ctx = model.heat_context(i, h, w, model.freq_embed[i])
            for block in stage.blocks:
                block.op.attenuation(ctx)


def test_tiny_at_detection_sizes_stays_within_512_mib_and_train_frees_it():
    model = VHeatFeatures('tiny', img_size=512)
    model.switch_to_deploy()
    assert model.heat_cache.limit_bytes == 512 * MiB
    per_size = []
    for height, width in detection_sizes(20):
        before = model.cached_nbytes()
        fill_caches(model, height, width)
        assert model.cached_nbytes() <= 512 * MiB
        per_size.append(sum(buf.numel() * buf.element_size() for name, buf
                            in model.named_buffers() if f'{-(-height // 4)}x' in name))
        assert model.cached_nbytes() != before  # the new size was cached
    # without the budget the same sizes would hold far more than 512 MiB
    assert sum(per_size) > 3 * 512 * MiB
    model.train()
    assert model.cached_nbytes() <= 64 * MiB
    assert not list(model.named_buffers())


def test_most_recent_sizes_stay_cached():
    model = VHeatFeatures(MINI, img_size=64)
    model.switch_to_deploy()
    fill_caches(model, 160, 160)
    limit = model.cached_nbytes() * 3 // 2  # room for the largest size, not for two more
    model.clear_caches()
    model.heat_cache.limit_bytes = limit
    sizes = [(64, 64), (96, 128), (128, 96), (160, 160)]
    for size in sizes:
        fill_caches(model, *size)
    assert model.cached_nbytes() <= limit
    last = dict(model.named_buffers())
    fill_caches(model, 160, 160)  # the last size again: nothing rebuilt
    assert all(buf is dict(model.named_buffers())[name] for name, buf in last.items())
    assert not any('16x16' in name for name in last)  # the first size was dropped


@pytest.mark.parametrize('deploy', [False, True], ids=['eval', 'deploy'])
def test_outputs_are_the_same_with_any_budget(deploy):
    x = [torch.randn(1, 3, 64 + 32 * i, 96) for i in range(3)]
    model = VHeatFeatures(MINI, img_size=64).eval()
    if deploy:
        model.switch_to_deploy()
    with torch.no_grad():
        reference = [model(t) for t in x]
        for limit in (0, 50_000, 10 * MiB):
            model.clear_caches()
            model.heat_cache.limit_bytes = limit
            for _ in range(2):
                for t, ref in zip(x, reference):
                    for a, b in zip(model(t), ref):
                        torch.testing.assert_close(a, b, rtol=0, atol=0)
                    assert model.cached_nbytes() <= limit


def test_an_entry_larger_than_the_budget_is_not_stored():
    cache = TensorCache(limit_bytes=100)
    out = cache.get('big', lambda: torch.ones(1000), device=torch.device('cpu'),
                    dtype=torch.float32)
    assert out.shape == (1000,) and not list(cache.buffers())
    small = cache.get('small', lambda: torch.ones(10), device=torch.device('cpu'),
                      dtype=torch.float32)
    assert list(cache.buffers()) == [small]


def test_evaluation_caches_only_what_the_feature_size_gives():
    """Bases and decay maps, never a tensor derived from weights (the cache rule)."""
    model = VHeatFeatures(MINI, img_size=64).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 96, 80))
    names = [name.split('.')[-1] for name, _ in model.named_buffers()]
    assert names and all(name.startswith(('cache_dct', 'cache_log_decay')) for name in names), names
    model.switch_to_deploy()
    with torch.no_grad():
        model(torch.randn(1, 3, 96, 80))
    names = [name.split('.')[-1] for name, _ in model.named_buffers()]
    assert any('attenuation' in name for name in names)
    assert any(name.startswith('cache_freq_embed') for name in names)


@pytest.mark.parametrize('deploy', [False, True], ids=['eval', 'deploy'])
def test_caches_work_again_after_training(deploy):
    model = VHeatFeatures(MINI, img_size=64).eval()
    if deploy:
        model.switch_to_deploy()
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        expected = model(x)
        model.train()
        assert model.cached_nbytes() == 0
        model.eval()
        for a, b in zip(model(x), expected):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert model.cached_nbytes() > 0


# --- a cached derivative never outlives the values it derives from -------------------------------

def reference_outputs(model: VHeatFeatures, x: torch.Tensor, params=None) -> tuple:
    """What a freshly built model with ``model``'s weights (or ``params``) outputs for x."""
    fresh = VHeatFeatures(MINI, img_size=64).eval()
    fresh.load_state_dict(params if params is not None else model.state_dict())
    with torch.no_grad():
        return fresh(x)


def assert_outputs(out, expected) -> None:
    for a, b in zip(out, expected):
        torch.testing.assert_close(a, b)


def evaluated(x: torch.Tensor) -> VHeatFeatures:
    """A model whose caches hold what a no_grad forward at x's size derived."""
    model = VHeatFeatures(MINI, img_size=64).eval()
    with torch.no_grad():
        for p in model.freq_embed:
            p.normal_()
        model(x)
    assert model.cached_nbytes() > 0
    return model


X = torch.randn(1, 3, 96, 80)  # another size than img_size: the resized freq_embed is cached


@pytest.mark.parametrize('edited', ['freq_embed', 'to_k'])
def test_an_edit_through_data_changes_the_output(edited):
    """``p.data.mul_`` (pruning, weight surgery) bumps no version counter."""
    model = evaluated(X)
    with torch.no_grad():
        before = model(X)
    for name, p in model.named_parameters():
        if edited in name:
            p.data.mul_(0.5 if edited == 'freq_embed' else 0.0)
    with torch.no_grad():
        out = model(X)
    assert_outputs(out, reference_outputs(model, X))
    assert not torch.allclose(out[0], before[0])


def test_functional_call_with_fresh_tensors_uses_their_values():
    """Fresh tensors of each call may reuse the addresses of the last call's freed ones."""
    model = evaluated(X)
    state = model.state_dict()
    wrong = 0
    for seed in range(8):
        gen = torch.Generator().manual_seed(seed)
        params = {k: v.clone() for k, v in state.items()}
        for k, v in params.items():
            if 'freq_embed' in k or 'to_k' in k:
                v.add_(torch.randn(v.shape, generator=gen), alpha=0.5)
        with torch.no_grad():
            out = torch.func.functional_call(model, params, (X,))
        expected = reference_outputs(model, X, params)
        wrong += not all(torch.allclose(a, b, rtol=1e-4, atol=1e-5)
                         for a, b in zip(out, expected))
        del params, out
    assert wrong == 0, f'{wrong} of 8 calls gave the output of other weights'


class Scaled(torch.nn.Module):
    """A parametrization whose state changes: weight * scale."""

    def __init__(self):
        super().__init__()
        self.register_buffer('scale', torch.tensor(1.0))

    def forward(self, weight):
        return weight * self.scale


def test_a_parametrization_of_to_k_is_followed():
    from torch.nn.utils import parametrize

    model = evaluated(X)
    raw = model.state_dict()
    parametrizations = []
    for block in model.blocks():
        parametrizations.append(Scaled())
        parametrize.register_parametrization(block.op.to_k[0], 'weight', parametrizations[-1])
    with torch.no_grad():
        model(X)
        for p in parametrizations:
            p.scale.fill_(3.0)
        out = model(X)
    expected_state = {k: 3 * v if k.endswith('to_k.0.weight') else v for k, v in raw.items()}
    assert_outputs(out, reference_outputs(model, X, expected_state))


def test_emahook_parameter_swap_is_followed():
    """mmengine's EMAHook swaps the raw and averaged weights through ``.data`` for validation."""
    from types import SimpleNamespace

    pytest.importorskip('mmengine')
    from mmengine.hooks import EMAHook

    model = evaluated(X)
    runner = SimpleNamespace(model=model)
    hook = EMAHook(momentum=0.5)
    hook.before_run(runner)
    with torch.no_grad():
        for p in hook.ema_model.module.parameters():
            p.add_(0.3 * torch.randn_like(p))
        ema_state = {k: v.clone() for k, v in hook.ema_model.module.state_dict().items()}
        model(X)  # caches what the raw weights derive
    hook.before_val_epoch(runner)  # the averaged weights into the model
    with torch.no_grad():
        out = model(X)
    assert_outputs(out, reference_outputs(model, X, ema_state))
    hook.after_val_epoch(runner)  # and back


def test_the_deploy_form_folds_and_train_restores_the_trainable_form():
    model = VHeatFeatures(MINI, img_size=64)
    model.patch_embed.requires_grad_(False)  # frozen before deploying, e.g. frozen_stages
    model.switch_to_deploy()
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.deploy and model.cached_nbytes() == 0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if not n.startswith('patch_embed')}
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    no_grad = [n for n in trainable if dict(model.named_parameters())[n].grad is None]
    assert not no_grad, f'parameters without a gradient after deploy and train(): {no_grad}'


def test_threads_sharing_one_model_at_many_sizes_with_eviction_get_one_threads_outputs():
    """4 threads run one model at 4 sizes each, with a cache limit that evicts on almost every
    call: every output is bit-equal to the one thread's, and nothing raises."""
    torch.manual_seed(0)
    model = VHeatFeatures(MINI, img_size=64).eval()
    sizes = [(32 + 8 * i, 48 + 16 * j) for i in range(4) for j in range(4)]
    inputs = {size: torch.randn(1, 3, *size) for size in sizes}
    with torch.no_grad():
        expected = {size: model(x) for size, x in inputs.items()}
    model.heat_cache.limit_bytes = 4 * 2**10  # a few entries: most calls evict others
    model.heat_cache.clear()
    errors, outputs = [], {}

    def serve(offset: int) -> None:
        try:
            for round_ in range(3):
                for size in sizes[offset:] + sizes[:offset]:
                    with torch.no_grad():
                        outputs[offset, round_, size] = model(inputs[size])
        except BaseException as err:  # noqa: BLE001 -- reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=serve, args=(4 * n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(outputs) == 4 * 3 * len(sizes)
    for (_, _, size), features in outputs.items():
        assert all(torch.equal(a, b) for a, b in zip(features, expected[size])), size
    # the lock is not copied: a copy gets its own
    for copied in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert copied.heat_cache._lock is not model.heat_cache._lock
        with torch.no_grad():
            assert all(torch.equal(a, b) for a, b in zip(copied(inputs[sizes[0]]),
                                                          expected[sizes[0]]))


def _deployed_pair():
    torch.manual_seed(0)
    model = VHeat(MINI, img_size=64, num_classes=5).eval()
    other = VHeat(MINI, img_size=64, num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = other(x)
    model.switch_to_deploy()
    return model, other, x, expected


def test_a_deployed_model_folds_again_for_the_weights_it_loads(caplog):
    model, other, x, expected = _deployed_pair()
    with caplog.at_level('INFO', logger='vheat_mm'):
        model.load_state_dict(other.state_dict())
    assert model.deploy and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-5)
    assert 'VHeat: deployed, decay^k folded again for the loaded weights' in caplog.messages


@pytest.mark.parametrize('change', ['functional_call', 'assignment', 'in place'])
def test_a_deployed_model_refuses_weights_it_has_not_folded(change):
    model, other, x, _ = _deployed_pair()
    message = (r'VHeat is deployed, and its weights changed after switch_to_deploy\(\) '
               r'\(functional_call, an assignment or an in-place edit\): its folded decay\^k '
               r'would not follow them; call switch_to_deploy\(\) again')
    with torch.no_grad(), pytest.raises(RuntimeError, match=message):
        if change == 'functional_call':
            torch.func.functional_call(model, dict(other.named_parameters()), (x,))
        else:
            if change == 'assignment':
                model.freq_embed[1] = nn.Parameter(other.freq_embed[1].detach().clone())
            else:
                model.layers[0].blocks[0].op.to_k[0].weight.add_(1.0)
            model(x)
    model.switch_to_deploy()  # folded again: runs
    with torch.no_grad():
        model(x)


def test_training_a_deployed_model_raises_naming_train():
    model, _, x, _ = _deployed_pair()
    model.requires_grad_(True)
    with pytest.raises(RuntimeError, match=r'VHeat is deployed \(decay\^k folded, no gradient '
                                           r'reaches freq_embed or to_k\): call train\(\)'):
        model(x).sum().backward()
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
