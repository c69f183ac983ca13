"""The HCO's building blocks against scipy and the heat equation's closed form."""
import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F

from vheat_mm.models.heat import (dct_2d, dct_basis, heat_conduction, heat_decay_map, idct_2d,
                                  resize_freq_embed)


@pytest.mark.parametrize('n', [1, 2, 7, 14, 56])
def test_dct_basis_is_orthonormal_dct2(n):
    basis = dct_basis(n, dtype=torch.float64)
    torch.testing.assert_close(basis @ basis.T, torch.eye(n, dtype=torch.float64))
    expected = scipy.fft.dct(np.eye(n), type=2, norm='ortho', axis=0)
    np.testing.assert_allclose(basis.numpy(), expected, atol=1e-12)


def test_dct_2d_matches_scipy_on_channels_last():
    u = torch.randn(2, 9, 13, 5, dtype=torch.float64)
    spectrum = dct_2d(u, dct_basis(9, dtype=torch.float64), dct_basis(13, dtype=torch.float64))
    expected = scipy.fft.dctn(u.numpy(), type=2, norm='ortho', axes=(1, 2))
    np.testing.assert_allclose(spectrum.numpy(), expected, atol=1e-10)


def test_unit_attenuation_is_identity():
    """k = 0 gives decay^0 = 1: the transform pair must give back its input."""
    u = torch.randn(2, 12, 17, 6)
    bh, bw = dct_basis(12), dct_basis(17)
    out = heat_conduction(u, bh, bw, torch.ones(12, 17, 6))
    torch.testing.assert_close(out, u, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(idct_2d(dct_2d(u, bh, bw), bh, bw), u, atol=1e-5, rtol=1e-5)


def test_decay_map_formula():
    decay = heat_decay_map(5, 3, dtype=torch.float64)
    n = torch.arange(5, dtype=torch.float64)[:, None] * torch.pi / 5
    m = torch.arange(3, dtype=torch.float64)[None, :] * torch.pi / 3
    torch.testing.assert_close(decay, torch.exp(-(n**2 + m**2)))
    assert decay[0, 0] == 1 and decay.shape == (5, 3)


def test_heat_conduction_smooths_and_conserves_mean():
    """A point source spreads out; the mean (the DC term, decay 1) is conserved."""
    u = torch.zeros(1, 16, 16, 1)
    u[0, 8, 8, 0] = 1.0
    k = torch.full((16, 16, 1), 4.0)
    out = heat_conduction(u, dct_basis(16), dct_basis(16), heat_decay_map(16, 16)[..., None] ** k)
    assert out.max() < 0.5 * u.max()
    torch.testing.assert_close(out.mean(), u.mean())


def test_resize_freq_embed_is_bicubic_and_keeps_dtype():
    embed = torch.randn(7, 7, 4)
    out = resize_freq_embed(embed, (10, 13))
    expected = F.interpolate(embed.permute(2, 0, 1)[None], size=(10, 13), mode='bicubic',
                             align_corners=False)[0].permute(1, 2, 0)
    torch.testing.assert_close(out, expected)
    assert resize_freq_embed(embed, (7, 7)) is embed
    assert resize_freq_embed(embed.bfloat16(), (3, 5)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r'\(H, W, C\)'):
        resize_freq_embed(torch.zeros(1, 7, 7, 4), (3, 3))
