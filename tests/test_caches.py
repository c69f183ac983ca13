"""The caches of derived tensors stay within their byte budget, and training frees them.

Evaluating a detector between epochs runs the backbone at hundreds of distinct padded sizes;
before the budget, vHeat-T kept every size's decay ** k, resized freq_embed and bases (1.4 GiB
after 20 COCO-sized inputs, kept through training).
"""
import pytest
import torch

from helpers import MINI
from vheat_mm.models import CacheBudget, TensorCache, VHeatFeatures

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
    model = VHeatFeatures('tiny', img_size=512).eval()
    assert model.cache_budget.limit_bytes == 512 * MiB
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
    model = VHeatFeatures(MINI, img_size=64).eval()
    fill_caches(model, 160, 160)
    limit = model.cached_nbytes() * 3 // 2  # room for the largest size, not for two more
    model.clear_caches()
    model.cache_budget.limit_bytes = limit
    sizes = [(64, 64), (96, 128), (128, 96), (160, 160)]
    for size in sizes:
        fill_caches(model, *size)
    assert model.cached_nbytes() <= limit
    last = dict(model.named_buffers())
    fill_caches(model, 160, 160)  # the last size again: nothing rebuilt
    assert all(buf is dict(model.named_buffers())[name] for name, buf in last.items())
    assert not any('16x16' in name for name in last)  # the first size was dropped


def test_outputs_are_the_same_with_any_budget():
    x = [torch.randn(1, 3, 64 + 32 * i, 96) for i in range(3)]
    model = VHeatFeatures(MINI, img_size=64).eval()
    with torch.no_grad():
        reference = [model(t) for t in x]
        for limit in (0, 50_000, 10 * MiB):
            model.clear_caches()
            model.cache_budget.limit_bytes = limit
            for _ in range(2):
                for t, ref in zip(x, reference):
                    for a, b in zip(model(t), ref):
                        torch.testing.assert_close(a, b, rtol=0, atol=0)
                    assert model.cached_nbytes() <= limit


def test_an_entry_larger_than_the_budget_is_not_stored():
    cache = TensorCache(CacheBudget(100))
    out = cache.get('big', lambda: torch.ones(1000), device=torch.device('cpu'),
                    dtype=torch.float32)
    assert out.shape == (1000,) and not list(cache.buffers())
    small = cache.get('small', lambda: torch.ones(10), device=torch.device('cpu'),
                      dtype=torch.float32)
    assert list(cache.buffers()) == [small]


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
