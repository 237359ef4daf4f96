"""Dequantising matmul over packed int8 / int4 / int2 weights: Pallas kernel and reference."""

from jaxsys.kernels.quant_matmul.api import IMPLEMENTATIONS
from jaxsys.kernels.quant_matmul.api import quant_matmul
from jaxsys.kernels.quant_matmul.config import BlockConfig
from jaxsys.kernels.quant_matmul.reference import quant_matmul_reference
