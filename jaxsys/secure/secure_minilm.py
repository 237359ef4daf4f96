"""all-MiniLM-L6-v2 on additive shares: the two-party forward pass, Nimbus-style.

The client holds the token ids; the server holds the weights. Everything
between the embedding and the last layer's output runs on shares
(`jaxsys.secure.mpc`), in the ring layout Nimbus uses (``papers/secure.md``
1.3):

* linear algebra in Z_2^64 with ``f = 18`` fraction bits (`RING64`): every
  weight matrix is a static-weight Beaver product (`mpc.matmul_static`: the
  weight's mask is opened once at setup, the dealer-world analogue of Nimbus's
  one-time upload of the encrypted weights), followed by a 1-bit truncation and
  the bias; Q K^T and P V are Beaver einsums of two shared operands;
* the non-linear functions in Z_2^32 with ``f = 13`` (`RING32`): the input is
  truncated by 5 bits in Z_2^64, reduced mod 2^32 (`mpc.downcast`, free), the
  `PiecewisePoly` is evaluated (`eval_piecewise`: one ideal comparison per
  breakpoint, Horner per polynomial piece, one select per non-zero piece), and
  the result lifted back with one wrap bit (`mpc.upcast`) and re-scaled to
  ``f = 18``;
* softmax: the row maximum by a comparison tree (`mpc.maximum`) in Z_2^32, the
  fitted exp in Z_2^32, then the sum, an ideal reciprocal and the product in
  Z_2^64 (the 2^-13 resolution of Z_2^32 is too coarse for ``1 / sum``);
* LayerNorm: mean and variance by local sums and public scalings, an ideal
  ``rsqrt``, then the product with the server's gain (a Beaver product) and its
  bias.

Ideal functionalities (comparisons, wrap bits, reciprocal, rsqrt, and the
embedding row selection, which under COP is a selection of cached encrypted
rows) are computed exactly and their use is recorded in the `mpc.Ledger`, which
`jaxsys.secure.cost` prices. Padding is public (the lengths are), so masking
is local. The attention scale ``1 / sqrt(D)`` is folded into the server's
query weights at setup. The output tokens are revealed to the client, which
mean-pools and normalises them in plaintext.

Left out: the pooler (the sentence embedding does not use it), and any
protocol-level realisation of the ideal functionalities.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.models import minilm
from jaxsys.secure import mpc
from jaxsys.secure import ring as ring_lib
from jaxsys.secure.approx import PiecewisePoly
from jaxsys.secure.ring import RING32, RING64, Ring, with_x64

_MASKED_SCORE = -64.0  # stand-in for padded keys inside Z_2^32 (their weight is zeroed anyway)


@dataclasses.dataclass(frozen=True)
class SecureSettings:
  """Rings and truncation of the two-party forward.

  Attributes:
    big: ring of the linear layers (default Z_2^64, f = 18).
    small: ring of GELU and exp (default Z_2^32, f = 13; Nimbus's FM32).
    trunc: "1bit" (Cheetah, one ideal wrap bit) or "secureml" (local, with its
      small failure probability).
  """

  big: Ring = RING64
  small: Ring = RING32
  trunc: str = "1bit"

  def __post_init__(self):
    if self.big.bits != 64 or self.small.bits != 32:
      raise ValueError(
          f"SecureSettings: expected a 64-bit big ring and a 32-bit small ring, given"
          f" {self.big} and {self.small}")
    if self.small.frac > self.big.frac:
      raise ValueError(
          f"SecureSettings: the small ring's fraction bits ({self.small.frac}) must not exceed"
          f" the big ring's ({self.big.frac})")
    if self.trunc not in mpc.TRUNCATIONS:
      raise ValueError(f"SecureSettings.trunc: expected one of {mpc.TRUNCATIONS}, given"
                       f" {self.trunc!r}")


# ------------------------------------------------------------------ building blocks


def _check_spec(spec: PiecewisePoly, name: str) -> PiecewisePoly:
  if not isinstance(spec, PiecewisePoly):
    raise TypeError(f"{name}: expected an approx.PiecewisePoly, given {type(spec).__name__}")
  return spec


@with_x64
def _broadcast(sh: mpc.Shared, shape: tuple[int, ...]) -> mpc.Shared:
  return sh.map(lambda v: jnp.broadcast_to(v, shape))


@with_x64
def _public(value: float | np.ndarray, sh: mpc.Shared) -> jax.Array:
  """A public constant encoded at ``sh``'s ring and fraction bits, broadcast to its shape."""
  enc = ring_lib.encode(np.asarray(value, np.float64), sh.ring, frac=sh.frac)
  return jnp.broadcast_to(enc, sh.shape)


def _one_minus(bit: mpc.Shared) -> mpc.Shared:
  return mpc.add_public(mpc.neg(bit), _public(1.0, bit))


def eval_piecewise(spec: PiecewisePoly, x: mpc.Shared, dealer: mpc.Dealer,
                   ledger: mpc.Ledger | None = None, *, trunc: str = "1bit") -> mpc.Shared:
  """``spec(x)`` on shares, at ``x``'s ring and fraction bits.

  With ``g_i = 1{x >= b_i}`` (one ideal comparison per breakpoint, ``g_0 = 1``,
  ``g_{k+1} = 0``), the indicator of piece i is ``g_i - g_{i+1}`` (local), and

      spec(x) = sum_i (g_i - g_{i+1}) * P_i(x)

  with one select (a bit times a value, no truncation) per piece that is not
  ``"zero"``; polynomial pieces are Horner on shares (`mpc.poly_eval`). Pieces
  are evaluated on every element, so out-of-interval lanes may overflow the
  ring; the select multiplies them by an exact 0.
  """
  spec = _check_spec(spec, "spec")
  with mpc._scope(ledger, "piecewise"):  # pylint: disable=protected-access
    ge = [None]
    for b in spec.breakpoints:
      ge.append(_one_minus(mpc.less_than_public(x, _public(b, x), dealer, ledger)))
    out = None
    for i, piece in enumerate(spec.pieces):
      if piece == "zero":
        continue
      value = x if piece == "identity" else mpc.poly_eval(x, piece, dealer, ledger, trunc=trunc)
      lo_bit = ge[i]
      hi_bit = ge[i + 1] if i + 1 < len(ge) else None
      if lo_bit is None and hi_bit is None:
        term = value
      else:
        if lo_bit is None:
          ind = _one_minus(hi_bit)
        elif hi_bit is None:
          ind = lo_bit
        else:
          ind = mpc.sub(lo_bit, hi_bit)
        zero = mpc.Shared(jnp.zeros_like(value.c), jnp.zeros_like(value.s), value.ring,
                          value.frac)
        term = mpc.select(ind, value, zero, dealer, ledger)
      out = term if out is None else mpc.add(out, term)
    if out is None:
      out = mpc.Shared(jnp.zeros_like(x.c), jnp.zeros_like(x.s), x.ring, x.frac)
  return out


def _to_small(x: mpc.Shared, st: SecureSettings, dealer, ledger) -> mpc.Shared:
  """Z_2^64 at f_big -> Z_2^32 at f_small: truncate by the difference, then reduce."""
  shift = x.frac - st.small.frac
  if shift:
    x = mpc.truncate(x, shift, dealer, ledger, method=st.trunc)
  return mpc.downcast(x, st.small)


def _to_big(x: mpc.Shared, st: SecureSettings, dealer, ledger) -> mpc.Shared:
  """Z_2^32 -> Z_2^64 with one wrap bit, re-scaled to the big ring's fraction bits."""
  y = mpc.upcast(x, st.big, dealer, ledger)
  return mpc.lshift(y, st.big.frac - y.frac) if y.frac < st.big.frac else y


def _mul_trunc(a: mpc.Shared, b: mpc.Shared, st: SecureSettings, dealer, ledger) -> mpc.Shared:
  return mpc.mul_fixed(a, b, dealer, ledger, trunc=st.trunc)


_SCALE_FRAC = 24  # fraction bits of public scale factors such as 1 / 384 (2^-18 is too coarse)


def _scale(x: mpc.Shared, value: float, st: SecureSettings, dealer, ledger) -> mpc.Shared:
  return mpc.mul_public_fixed(x, value, dealer, ledger, trunc=st.trunc, frac=_SCALE_FRAC)


def layer_norm(x: mpc.Shared, gain: mpc.Shared, bias_ring: jax.Array, eps: float,
               st: SecureSettings, dealer, ledger) -> mpc.Shared:
  """LayerNorm over the last axis on shares (ideal rsqrt), then gain and bias."""
  m = x.shape[-1]
  mean = _scale(mpc.reduce_sum(x, -1, keepdims=True), 1.0 / m, st, dealer, ledger)
  d = mpc.sub(x, _broadcast(mean, x.shape))
  sq = mpc.truncate(mpc.square(d, dealer, ledger), x.frac, dealer, ledger, method=st.trunc)
  var = _scale(mpc.reduce_sum(sq, -1, keepdims=True), 1.0 / m, st, dealer, ledger)
  var = mpc.add_public(var, _public(eps, var))
  inv = mpc.rsqrt(var, dealer, ledger)
  y = _mul_trunc(d, _broadcast(inv, x.shape), st, dealer, ledger)
  y = _mul_trunc(y, _broadcast(gain, x.shape), st, dealer, ledger)
  return mpc.add_public(y, jnp.broadcast_to(bias_ring, y.shape))


# ------------------------------------------------------------------ the model


@dataclasses.dataclass(frozen=True)
class _Linear:
  weight: mpc.StaticWeight
  bias: jax.Array  # [N] ring elements at the big ring's frac


@dataclasses.dataclass(frozen=True)
class _LN:
  gain: mpc.Shared  # [M]
  bias: jax.Array  # [M] ring elements


class SecureMiniLM:
  """The two-party all-MiniLM-L6-v2 with a piecewise-polynomial GELU and exp.

  Construction is the one-time setup: the server's weights are encoded in the
  big ring and prepared as static weights (their opened masks are recorded
  under the ledger's ``setup`` scope).

  Args:
    weights: the safetensors tensors by name (`minilm.load_weights`).
    config: the `minilm.MiniLMConfig`.
    gelu: the GELU's `PiecewisePoly` (e.g. a Nimbus fit).
    exp: the exp's `PiecewisePoly`, applied to max-subtracted scores.
    dealer: the trusted dealer of the setup.
    ledger: where setup counts go (optional).
    settings: `SecureSettings`.
  """

  def __init__(self, weights: Mapping[str, np.ndarray], config: minilm.MiniLMConfig,
               gelu: PiecewisePoly, exp: PiecewisePoly, dealer: mpc.Dealer,
               ledger: mpc.Ledger | None = None, settings: SecureSettings = SecureSettings()):
    self.config = config
    self.gelu = _check_spec(gelu, "gelu")
    self.exp = _check_spec(exp, "exp")
    self.settings = settings
    big = settings.big
    w64 = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    self._word = w64["embeddings.word_embeddings.weight"]
    self._position = w64["embeddings.position_embeddings.weight"]
    self._token_type = w64["embeddings.token_type_embeddings.weight"]
    enc = lambda a: ring_lib.encode(a, big)

    def linear(prefix: str, scale: float = 1.0) -> _Linear:
      w = w64[prefix + ".weight"].T * scale  # torch (out, in) -> (in, out)
      return _Linear(mpc.setup_static_weight(enc(w), dealer, ledger, ring=big),
                     enc(w64[prefix + ".bias"] * scale))

    def norm(prefix: str) -> _LN:
      return _LN(mpc.share(enc(w64[prefix + ".weight"]), dealer, big),
                 enc(w64[prefix + ".bias"]))

    self.embed_ln = norm("embeddings.LayerNorm")
    scale = 1.0 / math.sqrt(config.head_dim)
    self.layers = []
    with mpc._scope(ledger, "weights"):  # pylint: disable=protected-access
      for i in range(config.n_layers):
        p = f"encoder.layer.{i}."
        self.layers.append(dict(
            q=linear(p + "attention.self.query", scale),
            k=linear(p + "attention.self.key"),
            v=linear(p + "attention.self.value"),
            o=linear(p + "attention.output.dense"),
            ln1=norm(p + "attention.output.LayerNorm"),
            ffn1=linear(p + "intermediate.dense"),
            ffn2=linear(p + "output.dense"),
            ln2=norm(p + "output.LayerNorm"),
        ))

  def _linear(self, x: mpc.Shared, lin: _Linear, dealer, ledger) -> mpc.Shared:
    y = mpc.matmul_static(x, lin.weight, dealer, ledger)
    y = mpc.truncate(y, y.frac - x.frac, dealer, ledger, method=self.settings.trunc)
    return mpc.add_public(y, jnp.broadcast_to(lin.bias, y.shape))

  def embed(self, ids_BT: np.ndarray, dealer: mpc.Dealer,
            ledger: mpc.Ledger | None = None) -> mpc.Shared:
    """Shares of word + position + token-type embeddings (ideal row selection)."""
    ids_BT = np.asarray(ids_BT)
    t = ids_BT.shape[1]
    x = self._word[ids_BT] + self._position[:t][None] + self._token_type[0][None, None]
    if ledger is not None:
      ledger.record("embedding_select", bits=self.settings.big.bits, ideal="embedding_select",
                    ideal_elements=int(x.size))
    return mpc.share(ring_lib.encode(x, self.settings.big), dealer, self.settings.big)

  def attention(self, x: mpc.Shared, layer: dict, keep_BS: np.ndarray, dealer,
                ledger) -> mpc.Shared:
    st = self.settings
    b, t, _ = x.shape
    h, d = self.config.n_heads, self.config.head_dim
    with mpc._scope(ledger, "qkv"):  # pylint: disable=protected-access
      q, k, v = (self._linear(x, layer[n], dealer, ledger).reshape(b, t, h, d)
                 for n in ("q", "k", "v"))
    with mpc._scope(ledger, "qk"):  # pylint: disable=protected-access
      s = mpc.einsum("bthd,bshd->bhts", q, k, dealer, ledger)
      s = mpc.truncate(s, s.frac - x.frac, dealer, ledger, method=st.trunc)
    with mpc._scope(ledger, "softmax"):  # pylint: disable=protected-access
      probs = self.softmax(s, keep_BS, dealer, ledger)
    with mpc._scope(ledger, "pv"):  # pylint: disable=protected-access
      o = mpc.einsum("bhts,bshd->bthd", probs, v, dealer, ledger)
      o = mpc.truncate(o, o.frac - x.frac, dealer, ledger, method=st.trunc)
    with mpc._scope(ledger, "o"):  # pylint: disable=protected-access
      return self._linear(o.reshape(b, t, h * d), layer["o"], dealer, ledger)

  @with_x64
  def softmax(self, s: mpc.Shared, keep_BS: np.ndarray, dealer, ledger) -> mpc.Shared:
    """Max-subtracted fitted exp over real keys, normalised by an ideal reciprocal."""
    st = self.settings
    small = _to_small(s, st, dealer, ledger)
    keep = jnp.broadcast_to(jnp.asarray(keep_BS, bool)[:, None, None, :], small.shape)
    stand_in = _public(_MASKED_SCORE, small)
    small = mpc.Shared(jnp.where(keep, small.c, stand_in), jnp.where(keep, small.s, 0),
                       small.ring, small.frac)  # public mask: a local replacement
    z = mpc.sub(small, _broadcast(mpc.maximum(small, -1, dealer, ledger, keepdims=True),
                                  small.shape))
    e = eval_piecewise(self.exp, z, dealer, ledger, trunc=st.trunc)
    e = mpc.mul_public_int(e, keep.astype(jnp.int32))
    e = _to_big(e, st, dealer, ledger)
    inv = mpc.reciprocal(mpc.reduce_sum(e, -1, keepdims=True), dealer, ledger)
    return _mul_trunc(e, _broadcast(inv, e.shape), st, dealer, ledger)

  def mlp(self, x: mpc.Shared, layer: dict, dealer, ledger) -> mpc.Shared:
    st = self.settings
    with mpc._scope(ledger, "ffn1"):  # pylint: disable=protected-access
      h = self._linear(x, layer["ffn1"], dealer, ledger)
    with mpc._scope(ledger, "gelu"):  # pylint: disable=protected-access
      g = _to_big(eval_piecewise(self.gelu, _to_small(h, st, dealer, ledger), dealer, ledger,
                                 trunc=st.trunc), st, dealer, ledger)
    with mpc._scope(ledger, "ffn2"):  # pylint: disable=protected-access
      return self._linear(g, layer["ffn2"], dealer, ledger)

  def __call__(self, ids_BT: np.ndarray, mask_BT: np.ndarray, dealer: mpc.Dealer,
               ledger: mpc.Ledger | None = None) -> mpc.Shared:
    """Shares of the last hidden state ``(B, T, M)`` (padded rows not meaningful)."""
    ids_BT, mask_BT = np.asarray(ids_BT), np.asarray(mask_BT)
    if ids_BT.ndim != 2 or ids_BT.shape != mask_BT.shape:
      raise ValueError(f"ids_BT, mask_BT: expected two (B, T) arrays, given {ids_BT.shape} and"
                       f" {mask_BT.shape}")
    if ids_BT.shape[1] > self.config.max_positions:
      raise ValueError(f"ids_BT: {ids_BT.shape[1]} tokens exceed max_positions"
                       f" ({self.config.max_positions})")
    st, eps = self.settings, self.config.layer_norm_eps
    keep_BS = mask_BT > 0
    with mpc._scope(ledger, "embedding"):  # pylint: disable=protected-access
      x = self.embed(ids_BT, dealer, ledger)
      x = layer_norm(x, self.embed_ln.gain, self.embed_ln.bias, eps, st, dealer, ledger)
    for i, layer in enumerate(self.layers):
      with mpc._scope(ledger, f"layer{i}"):  # pylint: disable=protected-access
        a = self.attention(x, layer, keep_BS, dealer, ledger)
        with mpc._scope(ledger, "ln1"):  # pylint: disable=protected-access
          x = layer_norm(mpc.add(x, a), layer["ln1"].gain, layer["ln1"].bias, eps, st, dealer,
                         ledger)
        y = self.mlp(x, layer, dealer, ledger)
        with mpc._scope(ledger, "ln2"):  # pylint: disable=protected-access
          x = layer_norm(mpc.add(x, y), layer["ln2"].gain, layer["ln2"].bias, eps, st, dealer,
                         ledger)
    return x


def secure_embeddings(model: SecureMiniLM, tokenizer: minilm.MiniLMTokenizer,
                      sentences: Sequence[str], dealer: mpc.Dealer,
                      ledger: mpc.Ledger | None = None, *, batch: int = 16) -> np.ndarray:
  """Unit-norm sentence embeddings ``(N, 384)`` computed on shares.

  The encoder runs on shares; its output is revealed to the client, who
  mean-pools over the mask and L2-normalises in plaintext (float64).
  """
  if len(sentences) == 0:
    raise ValueError("sentences: expected at least one sentence, given none")
  out = []
  for start in range(0, len(sentences), batch):
    ids, mask = tokenizer(list(sentences[start:start + batch]))
    tokens = np.asarray(mpc.reveal_float(model(ids, mask, dealer, ledger)), np.float64)
    m = mask.astype(np.float64)[:, :, None]
    pooled = (tokens * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
  return np.concatenate(out)
