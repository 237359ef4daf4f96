"""Sparse decode attention: sinks + recent window + per-(sequence, KV head) selected tokens."""

from jaxsys.kernels.sparse_decode_attention.api import IMPLEMENTATIONS
from jaxsys.kernels.sparse_decode_attention.api import sparse_decode_attention
from jaxsys.kernels.sparse_decode_attention.config import BlockConfig
from jaxsys.kernels.sparse_decode_attention.reference import dense_decode_attention
from jaxsys.kernels.sparse_decode_attention.reference import sparse_decode_attention_reference
