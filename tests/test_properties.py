"""Property-based tests (hypothesis) over input sizes, aspect ratios and batch sizes.

For a tiny vHeat (one block per stage, widths 8..64): the backbone's features have the
ceil-divided sizes and are finite, the classifier's logits too, the deploy form gives the eval
form's outputs at sizes other than img_size, and an input below the last stage's stride is
refused naming its size. Examples are derandomized, so every run tests the same inputs.
"""
import copy
import functools
import math
import re

import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

from vheat_mm.models import VHeat, VHeatFeatures

ARCH = dict(depths=(1, 1, 1, 1), dims=8)
IMG_SIZE, NUM_CLASSES, STRIDE = 64, 5, 32
# The autouse seeding fixture of conftest is function-scoped; inputs come from drawn seeds.
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

sizes = st.integers(STRIDE, 160)
batches = st.integers(1, 2)
seeds = st.integers(0, 2**16)
scales = st.sampled_from([1e-3, 1.0, 1e3])


@functools.cache
def model(kind: str) -> torch.nn.Module:
    """The tiny backbone ('features') or classifier, in eval mode, or deployed ('..._deploy').

    The linear layers and freq_embed are drawn larger than at initialisation (std 0.02), so
    that every branch is of the residual's order and the conductivities k of order 1: the heat
    conduction then moves the outputs by tens of percent (not 0.1%), and the comparison of the
    deploy form with the eval form is a sharp one.
    """
    if kind.endswith('_deploy'):
        deployed = copy.deepcopy(model(kind.removesuffix('_deploy')))
        deployed.switch_to_deploy()
        return deployed
    torch.manual_seed(0)
    net = (VHeatFeatures(ARCH, img_size=IMG_SIZE) if kind == 'features'
           else VHeat(ARCH, img_size=IMG_SIZE, num_classes=NUM_CLASSES))
    with torch.no_grad():
        for freq_embed in net.freq_embed:
            freq_embed.normal_()
        for layer in net.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(std=layer.in_features ** -0.5)
        for stage in net.layers:
            for block in stage.blocks:
                block.op.to_k[0].weight.mul_(2)
    return net.eval()


def image(batch: int, height: int, width: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch, 3, height, width, generator=generator)


def outputs(out) -> tuple[torch.Tensor, ...]:
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


@PROPERTY
@given(height=sizes, width=sizes, batch=batches, seed=seeds, scale=scales)
@example(height=33, width=159, batch=2, seed=0, scale=1.0)
@example(height=160, width=32, batch=1, seed=1, scale=1.0)
def test_features_have_ceil_divided_sizes_and_are_finite(height, width, batch, seed, scale):
    with torch.no_grad():
        feats = model('features')(image(batch, height, width, seed, scale))
    assert len(feats) == 4
    for i, feat in enumerate(feats):
        stride = 4 * 2**i
        assert feat.shape == (batch, 8 * 2**i, math.ceil(height / stride),
                              math.ceil(width / stride))
        assert torch.isfinite(feat).all()


@PROPERTY
@given(height=sizes, width=sizes, batch=batches, seed=seeds, scale=scales)
def test_logits_have_the_batch_shape_and_are_finite(height, width, batch, seed, scale):
    with torch.no_grad():
        logits = model('classifier')(image(batch, height, width, seed, scale))
    assert logits.shape == (batch, NUM_CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize('kind', ['features', 'classifier'])
@PROPERTY
@given(height=sizes, width=sizes, batch=batches, seed=seeds)
@example(height=97, width=35, batch=2, seed=0)
def test_deploy_form_equals_eval_form(kind, height, width, batch, seed):
    """Deployed (folded decay^k) == eval form recomputing everything (gradients on) == eval form
    under no_grad (cached decay^k), at sizes other than img_size."""
    assume((height, width) != (IMG_SIZE, IMG_SIZE))
    x = image(batch, height, width, seed)
    recomputed = [o.detach() for o in outputs(model(kind)(x))]
    with torch.no_grad():
        cached = outputs(model(kind)(x))
        deployed = outputs(model(f'{kind}_deploy')(x))
    for ref, got_cached, got_deployed in zip(recomputed, cached, deployed):
        assert got_deployed.shape == ref.shape and torch.isfinite(got_deployed).all()
        torch.testing.assert_close(got_cached, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_deployed, ref, rtol=1e-5, atol=1e-5)


@PROPERTY
@given(size=st.one_of(st.tuples(st.integers(1, STRIDE - 1), st.integers(1, 160)),
                      st.tuples(st.integers(1, 160), st.integers(1, STRIDE - 1))))
def test_inputs_below_the_stride_are_refused_with_their_size(size):
    height, width = size
    with pytest.raises(ValueError, match=re.escape(
            f'vHeat needs images of at least 32x32 pixels (the stride of its last stage), got '
            f'H={height}, W={width}')):
        model('features')(torch.zeros(1, 3, height, width))
