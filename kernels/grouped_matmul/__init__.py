"""Grouped matmul (MoE expert dispatch): Pallas kernel, `ragged_dot` reference, dense baseline."""

from jaxsys.kernels.grouped_matmul.api import IMPLEMENTATIONS
from jaxsys.kernels.grouped_matmul.api import grouped_matmul
from jaxsys.kernels.grouped_matmul.config import BlockConfig
from jaxsys.kernels.grouped_matmul.reference import grouped_matmul_dense
from jaxsys.kernels.grouped_matmul.reference import grouped_matmul_reference
