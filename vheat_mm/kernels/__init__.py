"""Fused GPU kernels (Triton) for vHeat's memory-bound steps, each beside its eager reference.

The model calls only the functions exported here; each one runs its eager PyTorch reference,
its inference kernel or its autograd kernels as :func:`.dispatch.route` decides (CUDA, half
types, gradients, compiling), and :data:`.dispatch.KERNELS` lists them.
"""
from .attenuate import attenuate_with_grad
from .dispatch import HAVE_TRITON, KERNELS, SWITCHES, KernelSwitches, Route, kernel_switches, route
from .dwconv import depthwise_conv3x3
from .fused_linear import linear_gelu
from .norm import layer_norm, layer_norm_silu, residual_layer_norm

__all__ = ['HAVE_TRITON', 'KERNELS', 'KernelSwitches', 'Route', 'SWITCHES', 'attenuate_with_grad',
           'depthwise_conv3x3', 'kernel_switches', 'layer_norm', 'layer_norm_silu', 'linear_gelu',
           'residual_layer_norm', 'route']
