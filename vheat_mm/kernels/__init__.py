"""Fused GPU kernels (Triton) for vHeat's memory-bound steps, each beside its eager reference.

The model calls only the functions exported here; each one runs its Triton kernel or its eager
PyTorch reference as :mod:`.dispatch` decides (CUDA, half types, not while compiling).
"""
from .attenuate import attenuate_with_grad
from .dispatch import (HAVE_TRITON, SWITCHES, KernelSwitches, kernel_switches, needs_grad,
                       triton_runs)
from .dwconv import depthwise_conv3x3
from .fused_linear import linear_gelu
from .norm import layer_norm, layer_norm_silu, residual_layer_norm

__all__ = ['HAVE_TRITON', 'KernelSwitches', 'SWITCHES', 'attenuate_with_grad',
           'depthwise_conv3x3', 'kernel_switches',
           'layer_norm', 'layer_norm_silu', 'linear_gelu', 'needs_grad', 'residual_layer_norm',
           'triton_runs']
