"""Real-model loaders and small models: SmolLM2-135M-Instruct, all-MiniLM-L6-v2, a toy MoE LM."""

from jaxsys.models import minilm
from jaxsys.models import moe_lm

from jaxsys.models.smollm2 import KVCache
from jaxsys.models.smollm2 import SmolLM2Config
from jaxsys.models.smollm2 import SmolLM2Tokenizer
from jaxsys.models.smollm2 import apply_rope
from jaxsys.models.smollm2 import causal_attention
from jaxsys.models.smollm2 import chat_prompt
from jaxsys.models.smollm2 import decode_step
from jaxsys.models.smollm2 import full_attention
from jaxsys.models.smollm2 import generate_greedy
from jaxsys.models.smollm2 import greedy_from_cache
from jaxsys.models.smollm2 import gguf_path
from jaxsys.models.smollm2 import load_smollm2
from jaxsys.models.smollm2 import prefill
from jaxsys.models.smollm2 import read_config
from jaxsys.models.smollm2 import rms_norm
from jaxsys.models.smollm2 import score_continuation
from jaxsys.models.smollm2 import transformer_layer
