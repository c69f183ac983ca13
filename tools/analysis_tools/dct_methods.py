"""Does an FFT-based DCT beat the HCO's matrix-product DCT? Measures both, interleaved.

The HCO (vheat_mm/models/heat.py) computes each 1-D DCT of a channels-last (B, H, W, C) map as
a matrix product with an (N, N) cosine basis: N multiply-adds per output element. An FFT
(Makhoul's algorithm: reorder, one real FFT, a twiddle product) needs O(log N) per element
but moves the data more. This tool times both, per axis, on the feature maps of vHeat-T's four
stages for the given input sizes and batch, after checking that the two agree.

Usage: python tools/analysis_tools/dct_methods.py --inputs 224:16 1024:1 800x1344:1 [--device cuda]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys

import torch
from torch import Tensor

from benchmarking.measure import Timer, interleaved_rounds
from vheat_mm.models.heat import _along_h, _along_w, dct_basis

STAGE_DIMS = (96, 192, 384, 768)  # vHeat-T


def _even_odd_order(n: int) -> Tensor:
    """v[m] = x[2m] for the first ceil(n/2) m, then the odd samples in reverse order."""
    return torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2).flip(0)])


def dct_fft(x: Tensor, dim: int) -> Tensor:
    """Orthonormal DCT-II of ``x`` along ``dim`` with one real FFT (Makhoul, 1980).

    With v the even/odd reordering of x and V = rfft(v), Z_k = exp(-i pi k / 2N) V_k gives
    X_k = Re Z_k and X_{N-k} = -Im Z_k, so one half-spectrum yields every coefficient.
    """
    n = x.shape[dim]
    spectrum = torch.fft.rfft(x.index_select(dim, _even_odd_order(n).to(x.device)), dim=dim)
    half = spectrum.shape[dim]
    k = torch.arange(half, device=x.device, dtype=torch.float64)
    shape = [1] * x.dim()
    shape[dim] = half
    twiddle = torch.polar(torch.ones_like(k), -math.pi * k / (2 * n)).to(spectrum.dtype)
    z = spectrum * twiddle.view(shape)
    upper = (-z.imag).narrow(dim, 1, n - half).flip(dim)  # X_{half}, ..., X_{N-1}
    coefficients = torch.cat([z.real, upper], dim)
    scale = torch.full((n,), math.sqrt(2.0 / n), device=x.device, dtype=x.dtype)
    scale[0] = math.sqrt(1.0 / n)
    shape[dim] = n
    return coefficients * scale.view(shape)


def parse_input(text: str) -> tuple[int, int, int]:
    size, _, batch = text.partition(':')
    height, _, width = size.partition('x')
    return int(height), int(width or height), int(batch or 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--inputs', nargs='+', type=parse_input, default=[(224, 224, 16)],
                        metavar='SIZE[:BATCH]')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--rounds', type=int, default=7)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    timer = Timer(device)
    print('| input | stage map (B, H, W, C) | axis | matmul ms | fft ms | fft / matmul |')
    print('|---|---|---|---|---|---|')
    for height, width, batch in args.inputs:
        for stage, dim in enumerate(STAGE_DIMS):
            h = math.ceil(height / 4 / 2**stage)
            w = math.ceil(width / 4 / 2**stage)
            x = torch.randn(batch, h, w, dim, device=device)
            for axis, n, matmul in ((1, h, _along_h), (2, w, _along_w)):
                basis = dct_basis(n, device=device)
                steps = {'matmul': lambda: matmul(x, basis), 'fft': lambda: dct_fft(x, axis)}
                with torch.inference_mode():
                    torch.testing.assert_close(steps['fft'](), steps['matmul'](),
                                               rtol=1e-4, atol=1e-4)
                    for _ in range(2):  # warm-up
                        for step in steps.values():
                            step()
                    rounds = list(interleaved_rounds(steps, dict.fromkeys(steps, 1),
                                                     args.rounds, timer))
                mm, fft = (statistics.median(r[name] for r in rounds) for name in steps)
                print(f'| {height}x{width} b{batch} | ({batch}, {h}, {w}, {dim}) | '
                      f'{"HW"[axis - 1]} | {mm * 1e3:.2f} | {fft * 1e3:.2f} | {fft / mm:.2f} |',
                      flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
