"""An exact two-party simulator over Z_2^32 / Z_2^64: shares, Beaver products, truncation.

Both parties run in one process. A value x is additively shared as
``x = c + s mod 2^l`` (`Shared`: ``c`` the client's share, ``s`` the server's),
in fixed point with ``Shared.frac`` fraction bits (jaxsys ``papers/secure.md``
1.1). Every operation is computed exactly as the protocol computes it, share by
share, so revealed results equal a pure-Python big-integer evaluation bit for
bit (``tests/secure/bigint.py``), failures of approximate protocols included.

Randomness comes from a trusted `Dealer` (Beaver triples, the masks of ideal
functionalities), derived deterministically from one key. Costs go to a
`Ledger`: exact counts of what each operation opens, compares and asks of ideal
functionalities, per operation and per named scope (``"layer0/ffn1"``);
`jaxsys.secure.cost` prices them in bytes and rounds.

Operations (l = ring bits, f = ``Shared.frac``, n = elements):

* local, free: `add`, `sub`, `neg`, `add_public` (the client adds),
  `mul_public_int`, `einsum_public`, `lshift` (``f += k``), `reduce_sum`,
  `downcast` (``c, s mod 2^32``; exact when the value fits in 32 signed bits),
  `trunc_local` (SecureML: ``c >> t`` and ``-((-s) >> t)``; off by +1 at most,
  or catastrophically wrong with probability ``|x| / 2^l``,
  `secureml_failure_prob`).
* Beaver products (one round, opening the masked operands): `mul`, `square`,
  `einsum` / `matmul` with a matrix triple ``(A, B, C = A @ B)``, and the
  static-weight variant `setup_static_weight` / `matmul_static`, which opens
  ``W - B`` once and then only ``X - A`` per query. Products carry
  ``f_a + f_b`` fraction bits; `mul_fixed` and `mul_public_fixed` truncate back.
* wrap-bit protocols (ideal wrap bit ``w = 1{c' + s >= 2^l}``, one per element):
  `trunc_1bit` (Cheetah), `upcast` (Z_2^32 -> Z_2^64) and `trunc_upcast`, the
  fused truncation + upcast sharing one wrap bit (Nimbus). All add the public
  offset ``2^(l-2)`` first, so they hold for ``-2^(l-2) <= x < 2^(l-2)``.
* ideal comparisons: `less_than_public`, `ltz`, `less_than` (a shared 0/1 bit,
  ``frac = 0``), then `select` (one Beaver product) and `maximum` (a tree).
* `poly_eval` (Horner with a truncation after each product), and the ideal
  `reciprocal` and `rsqrt` (correctly rounded outputs).

Ideal functionalities (comparisons, wrap bits, reciprocal, rsqrt) are computed
by the simulator from both shares and re-shared with fresh dealer randomness;
the ledger records that they ran (elements, ring width, calls) and records no
bytes or rounds for them: the protocol that would realise each (CrypTFlow2
millionaires', Cheetah's MSB wrap, SPU's Goldschmidt / Newton iterations) is
priced in `jaxsys.secure.cost`. What the simulator does itself is counted
exactly: elements opened by each party, rounds and messages of openings.

Counting happens in Python from static shapes, at trace time: under `jax.jit`
a function records once per trace (not once per call), and `count_ops` gets the
counts of a function without running it (`jax.eval_shape`). All functions run
inside the scoped ``jax.enable_x64(True)`` (`jaxsys.secure.ring.with_x64`);
the caller's x64 setting is left as it was.

>>> import jax, jax.numpy as jnp
>>> from jaxsys.secure import mpc, ring
>>> dealer, ledger = mpc.Dealer(jax.random.key(0)), mpc.Ledger()
>>> x = mpc.share(ring.encode(jnp.array([1.5, -2.0]), ring.RING32), dealer, ring.RING32)
>>> y = mpc.mul_fixed(x, x, dealer, ledger)
>>> [round(v, 3) for v in mpc.reveal_float(y).tolist()], ledger.total().opened_elements[32]
([2.25, 4.0], 4)
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.secure import ring as ring_lib
from jaxsys.secure.ring import Ring, with_x64

TRUNCATIONS = ("1bit", "secureml")


# ------------------------------------------------------------------------------ Shared


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["c", "s"], meta_fields=["ring", "frac"])
@dataclasses.dataclass(frozen=True)
class Shared:
  """Additive shares ``x = c + s mod 2^ring.bits`` of a fixed-point value.

  ``ring`` and ``frac`` are static (pytree metadata). ``frac`` is the fraction
  bits of the value held: ``ring.frac`` after `share` of an encoded value,
  ``2 * ring.frac`` after a product, 0 for a bit; None means ``ring.frac``.
  """

  c: jax.Array  # [...] ring.dtype, the client's share
  s: jax.Array  # [...] ring.dtype, the server's share
  ring: Ring
  frac: int | None = None

  def __post_init__(self):
    if not isinstance(self.ring, Ring):
      raise TypeError(f"Shared.ring: expected a Ring, given {type(self.ring).__name__}")
    if self.frac is None:
      object.__setattr__(self, "frac", self.ring.frac)
    f = self.frac
    if not isinstance(f, int) or isinstance(f, bool) or not 0 <= f < self.ring.bits:
      raise ValueError(
          f"Shared.frac: expected an int in [0, {self.ring.bits - 1}] (fraction bits of a"
          f" {self.ring.bits}-bit ring), given {f!r}; truncate first")

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.c.shape)

  @property
  def ndim(self) -> int:
    return len(self.c.shape)

  @property
  def size(self) -> int:
    return math.prod(self.c.shape)

  @with_x64
  def map(self, fn: Callable[[jax.Array], jax.Array]) -> "Shared":
    """Applies a structural op (reshape, slice, transpose, ...) to both shares.

    Only index / layout operations are valid: anything arithmetic is not
    applied to the shared value (use the functions of this module).
    """
    return Shared(fn(self.c), fn(self.s), self.ring, self.frac)

  def reshape(self, *shape) -> "Shared":
    return self.map(lambda v: v.reshape(*shape))

  def transpose(self, *axes) -> "Shared":
    return self.map(lambda v: v.transpose(*axes))

  def __getitem__(self, index) -> "Shared":
    return self.map(lambda v: v[index])


def _check_shared(x: Any, name: str) -> Shared:
  if not isinstance(x, Shared):
    raise TypeError(f"{name}: expected mpc.Shared, given {type(x).__name__}")
  dt = np.dtype(x.ring.dtype)
  for part in ("c", "s"):
    v = getattr(x, part)
    if np.dtype(getattr(v, "dtype", None)) != dt:
      raise TypeError(
          f"{name}.{part}: expected dtype {dt.name} for a {x.ring.bits}-bit ring, given"
          f" {getattr(v, 'dtype', type(v).__name__)}")
  if tuple(x.c.shape) != tuple(x.s.shape):
    raise ValueError(f"{name}: the shares' shapes differ: c {x.c.shape}, s {x.s.shape}")
  return x


def _check_same_ring(a: Shared, b: Shared, names: str) -> Ring:
  if a.ring != b.ring:
    raise ValueError(
        f"{names}: rings differ: {a.ring} vs {b.ring}; bring both to one ring first"
        " (upcast / downcast / trunc_upcast)")
  return a.ring


def _check_same_frac(a: Shared, b: Shared, names: str) -> int:
  if a.frac != b.frac:
    raise ValueError(
        f"{names}: fraction bits differ: {a.frac} vs {b.frac}; truncate (trunc_1bit,"
        " trunc_local) or lshift one of them first")
  return a.frac


def _broadcast(a: Shared, b: Shared, names: str) -> tuple[Shared, Shared]:
  try:
    shape = jnp.broadcast_shapes(a.shape, b.shape)
  except ValueError:
    raise ValueError(
        f"{names}: shapes do not broadcast: {a.shape} and {b.shape}") from None
  return (a.map(lambda v: jnp.broadcast_to(v, shape)),
          b.map(lambda v: jnp.broadcast_to(v, shape)))


def _check_int(name: str, value: Any, lo: int, hi: int, hi_what: str = "") -> int:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not lo <= value <= hi:
    raise ValueError(
        f"{name}: expected an int in [{lo}, {hi}]{' (' + hi_what + ')' if hi_what else ''},"
        f" given {value!r}")
  return int(value)


def _to_shape(p: jax.Array, sh: "Shared", name: str) -> jax.Array:
  """Public ring elements `p` broadcast to ``sh.shape`` (only towards it), or a clear error."""
  try:
    shape = jnp.broadcast_shapes(sh.shape, p.shape)
  except ValueError:
    shape = None
  if shape != sh.shape:
    raise ValueError(f"{name}: expected a shape that broadcasts to {sh.shape}, given {p.shape}")
  return jnp.broadcast_to(p, sh.shape)


def _zeros(shape: tuple[int, ...], ring: Ring) -> jax.Array:
  return jnp.zeros(shape, ring.dtype)


# ------------------------------------------------------------------------------ Ledger


@dataclasses.dataclass
class OpCounts:
  """Exact counts of one operation (or a sum of several).

  Counters keyed by ring bits count elements. ``opened_elements`` counts the
  elements each party sends when opening masked values; ``rounds`` and
  ``messages`` (one-way messages, 2 per opening round) are those of openings.
  Ideal functionalities record elements and ``calls`` only.
  """

  calls: int = 0  # invocations (each one batched protocol call)
  rounds: int = 0  # opening rounds, as if every call ran after the previous one
  messages: int = 0  # one-way messages of openings
  opened_elements: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  comparisons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  wrap_bits: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  muxes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  truncations: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  triples: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  square_pairs: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  # (kind "beaver" | "static", bits, spec, a_shape, b_shape) -> triples of that shape
  matmul_triples: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  # (name, bits) -> elements
  ideal_calls: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def add(self, other: "OpCounts") -> None:
    """Adds `other`'s counts into this one."""
    for f in dataclasses.fields(self):
      mine = getattr(self, f.name)
      if isinstance(mine, collections.Counter):
        mine.update(getattr(other, f.name))
      else:
        setattr(self, f.name, mine + getattr(other, f.name))

  def as_dict(self) -> dict[str, Any]:
    """Plain dicts and lists (int keys for ring bits)."""
    out: dict[str, Any] = {"calls": self.calls, "rounds": self.rounds, "messages": self.messages}
    for name in ("opened_elements", "comparisons", "wrap_bits", "muxes", "truncations",
                 "triples", "square_pairs"):
      out[name] = dict(sorted(getattr(self, name).items()))
    out["matmul_triples"] = [
        {"kind": kind, "bits": bits, "spec": spec, "a_shape": list(a), "b_shape": list(b),
         "count": n}
        for (kind, bits, spec, a, b), n in sorted(self.matmul_triples.items())]
    ideal: dict[str, dict[int, int]] = {}
    for (name, bits), n in sorted(self.ideal_calls.items()):
      ideal.setdefault(name, {})[bits] = n
    out["ideal_calls"] = ideal
    return out


class Ledger:
  """Records exact operation counts, per operation path ``scope/.../op``.

  Recording happens when an operation is traced, from static shapes, so a
  function under `jax.jit` records once per trace; use `count_ops` to count a
  function without running it. Static-weight setup is recorded under the
  top-level scope ``"setup"`` (``"setup/<scope>/static_weight"``).

  >>> ledger = Ledger()
  >>> with ledger.scope("layer0/ffn1"):
  ...   ledger.record("demo", rounds=1)
  >>> list(ledger.summary()["ops"])
  ['layer0/ffn1/demo']
  """

  SETUP = "setup"

  def __init__(self):
    self._ops: dict[str, OpCounts] = {}
    self._stack: list[str] = []

  @contextlib.contextmanager
  def scope(self, name: str) -> Iterator["Ledger"]:
    """Attributes counts recorded inside the block to ``<outer scopes>/name``."""
    if not isinstance(name, str) or not name.strip("/"):
      raise ValueError(f"name: expected a non-empty scope name like 'layer0/ffn1', given {name!r}")
    self._stack.append(name.strip("/"))
    try:
      yield self
    finally:
      self._stack.pop()

  @contextlib.contextmanager
  def setup_scope(self) -> Iterator["Ledger"]:
    """Records inside the block under ``setup/<current scope>`` (one-time costs)."""
    saved = self._stack
    self._stack = [self.SETUP] + saved
    try:
      yield self
    finally:
      self._stack = saved

  def record(self, op: str, *, calls: int = 1, rounds: int = 0, messages: int = 0,
             bits: int | None = None, opened: int = 0, comparisons: int = 0,
             wrap_bits: int = 0, muxes: int = 0, truncations: int = 0, triples: int = 0,
             square_pairs: int = 0, matmul_triple: tuple | None = None,
             ideal: str | None = None, ideal_elements: int = 0) -> None:
    """Adds counts to ``<scope>/op``; element counters are keyed by `bits`."""
    path = "/".join(self._stack + [op])
    rec = self._ops.setdefault(path, OpCounts())
    rec.calls += calls
    rec.rounds += rounds
    rec.messages += messages
    for name, n in (("opened_elements", opened), ("comparisons", comparisons),
                    ("wrap_bits", wrap_bits), ("muxes", muxes), ("truncations", truncations),
                    ("triples", triples), ("square_pairs", square_pairs)):
      if n:
        getattr(rec, name)[bits] += n
    if matmul_triple is not None:
      rec.matmul_triples[matmul_triple] += 1
    if ideal is not None:
      rec.ideal_calls[(ideal, bits)] += ideal_elements

  @property
  def ops(self) -> dict[str, OpCounts]:
    """Path -> counts (the live records)."""
    return dict(self._ops)

  def total(self, prefix: str | None = None) -> OpCounts:
    """Sum over all paths, or over those equal to or under `prefix`."""
    out = OpCounts()
    for path, rec in self._ops.items():
      if prefix is None or path == prefix or path.startswith(prefix.rstrip("/") + "/"):
        out.add(rec)
    return out

  def online(self) -> OpCounts:
    """Sum over every path outside the ``setup`` scope."""
    out = OpCounts()
    for path, rec in self._ops.items():
      if not path.startswith(self.SETUP + "/"):
        out.add(rec)
    return out

  def summary(self) -> dict[str, Any]:
    """``{"ops": {path: counts}, "online": counts, "setup": counts, "total": counts}``."""
    return {
        "ops": {p: r.as_dict() for p, r in self._ops.items()},
        "online": self.online().as_dict(),
        "setup": self.total(self.SETUP).as_dict(),
        "total": self.total().as_dict(),
    }

  def reset(self) -> None:
    self._ops.clear()


def _rec(ledger: Ledger | None, op: str, **counts) -> None:
  if ledger is not None:
    if not isinstance(ledger, Ledger):
      raise TypeError(f"ledger: expected an mpc.Ledger or None, given {type(ledger).__name__}")
    ledger.record(op, **counts)


def _scope(ledger: Ledger | None, name: str):
  return ledger.scope(name) if ledger is not None else contextlib.nullcontext()


@with_x64
def count_ops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Ledger:
  """The `Ledger` of ``fn(*args, ledger=..., **kwargs)``, without running it.

  `fn` is traced with `jax.eval_shape`, so `args` may be `jax.ShapeDtypeStruct`s
  (or pytrees of them, e.g. a `Shared` built from two); `kwargs` (a `Dealer`,
  static settings) are passed through unchanged. A `Dealer` passed in advances
  its counter as if the function had run.
  """
  ledger = Ledger()
  jax.eval_shape(lambda *a: fn(*a, ledger=ledger, **kwargs), *args)
  return ledger


# ------------------------------------------------------------------------------ Dealer


class Dealer:
  """A trusted dealer: correlated randomness from ``(key, counter)``, deterministically.

  The key is hashed once into a 64-bit seed; request number i gets the seed
  ``mix(seed + (i + 1) * gamma)``, and each random array inside a request is a
  SplitMix64 stream of it (`_bits`): ``mix(stream_seed + (j + 1) * gamma)`` for
  element j. So the same key and the same sequence of operations give the same
  shares on any backend. This is a statistical generator, not a cryptographic
  one: it only has to make shares and masks uniform for the simulation (it
  replaces ``jax.random.fold_in`` / ``bits``, whose threefry rounds dominated
  compile time). The counter is Python state: inside `jax.jit`, build the
  dealer from a traced key (``Dealer(key_argument)``) so that every call gets
  fresh randomness.
  """

  @with_x64
  def __init__(self, key: Any):
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
      data = jnp.asarray(np.asarray(int(key) % 2**64, np.uint64)).reshape(1)
    elif hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
      data = jax.random.key_data(key)
    elif hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jnp.unsignedinteger):
      data = jnp.asarray(key)  # a raw key such as jax.random.PRNGKey(0)
    else:
      raise TypeError(
          f"key: expected a jax PRNG key, a raw uint32 key or an int seed, given"
          f" {getattr(key, 'dtype', type(key).__name__)}")
    self._seed = _seed_from_words(data.reshape(-1).astype(jnp.uint64))
    self.counter = 0

  @with_x64
  def next_seed(self) -> jax.Array:
    """The seed (uint64 scalar) of the next request; the counter advances."""
    seed = _next_seed(self._seed, _u64((self.counter + 1) * _GAMMA_INT))
    self.counter += 1
    return seed

  @with_x64
  def uniform(self, shape: Sequence[int], ring: Ring) -> jax.Array:
    """Uniform ring elements of `shape`."""
    return _uniform_core(self.next_seed(), tuple(int(d) for d in shape), ring)


_GAMMA_INT = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, odd (SplitMix64's increment)
_GAMMA = np.uint64(_GAMMA_INT)
_STREAM_INT = 0xD1B54A32D192ED03  # an odd constant separating the streams of one request


def _u64(v: int) -> np.ndarray:
  """A Python int mod 2^64 as a uint64 constant (no numpy overflow warnings)."""
  return np.asarray(v % 2**64, np.uint64)


def _mix64(z: jax.Array) -> jax.Array:
  """SplitMix64's output function: a bijective avalanche of a uint64."""
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return z ^ (z >> np.uint64(31))


@jax.jit
def _next_seed(seed: jax.Array, increment: jax.Array) -> jax.Array:
  return _mix64(seed + increment)


def _seed_from_words(words: jax.Array) -> jax.Array:
  seed = jnp.zeros((), jnp.uint64)
  for i in range(words.shape[0]):
    seed = _mix64(seed ^ (words[i] + _u64((i + 1) * _GAMMA_INT)))
  return seed


def _bits(seed: jax.Array, stream: int, shape: tuple[int, ...], dtype) -> jax.Array:
  """Uniform integers of `dtype`: element j of the stream is ``mix(s + (j + 1) gamma)``."""
  s = _mix64(seed ^ _u64((stream + 1) * _STREAM_INT))
  n = math.prod(shape)
  j = jax.lax.iota(jnp.uint64, n) + np.uint64(1)
  out = _mix64(s + j * _GAMMA)
  if np.dtype(dtype) == np.uint32:
    out = (out >> np.uint64(32)).astype(jnp.uint32)
  return out.reshape(shape)


@functools.partial(jax.jit, static_argnames=("shape", "ring"))
def _uniform_core(seed, shape: tuple[int, ...], ring: Ring):
  return _bits(seed, 0, shape, ring.dtype)


# ------------------------------------------------------------------------ share, reveal


@functools.partial(jax.jit, static_argnames=("ring",))
def _share_core(seed, x, ring: Ring):
  c = _bits(seed, 0, x.shape, ring.dtype)
  return c, x - c


@with_x64
def share(x_ring: Any, dealer: Dealer, ring: Ring, *, frac: int | None = None) -> Shared:
  """Shares ring elements: a uniform client share ``c``, and ``s = x - c``.

  Args:
    x_ring: ``ring.dtype`` array (from `jaxsys.secure.ring.encode`).
    dealer: the source of the random share.
    ring: the ring (and fixed-point format) of `x_ring`.
    frac: fraction bits of `x_ring` (default ``ring.frac``).
  """
  ring = ring_lib._check_ring(ring)
  x = ring_lib.check_ring_array(x_ring, ring, "x_ring")
  c, s = _share_core(dealer.next_seed(), x, ring)
  return Shared(c, s, ring, frac)


@with_x64
def share_float(x: Any, dealer: Dealer, ring: Ring) -> Shared:
  """`share` of ``encode(x, ring)`` (concrete x; overflow raises)."""
  return share(ring_lib.encode(x, ring), dealer, ring)


@with_x64
def reveal(sh: Shared) -> jax.Array:
  """``c + s mod 2^l``: the shared ring elements."""
  sh = _check_shared(sh, "sh")
  return sh.c + sh.s


@with_x64
def reveal_float(sh: Shared) -> jax.Array:
  """The shared real value, ``decode(reveal(sh))`` at ``sh.frac``, float32."""
  return ring_lib.decode(reveal(sh), sh.ring, frac=sh.frac)


# --------------------------------------------------------------------------- local ops


@with_x64
def add(a: Shared, b: Shared) -> Shared:
  """``a + b`` (local). Rings and fraction bits must agree; shapes broadcast."""
  a, b = _check_shared(a, "a"), _check_shared(b, "b")
  _check_same_ring(a, b, "a, b")
  _check_same_frac(a, b, "a, b")
  a, b = _broadcast(a, b, "a, b")
  return Shared(a.c + b.c, a.s + b.s, a.ring, a.frac)


@with_x64
def neg(a: Shared) -> Shared:
  """``-a`` (local)."""
  a = _check_shared(a, "a")
  zero = a.ring.const(0)
  return Shared(zero - a.c, zero - a.s, a.ring, a.frac)


@with_x64
def sub(a: Shared, b: Shared) -> Shared:
  """``a - b`` (local). Rings and fraction bits must agree; shapes broadcast."""
  return add(a, neg(b))


@with_x64
def add_public(sh: Shared, p_ring: Any) -> Shared:
  """``sh + p`` for public ring elements p at ``sh.frac`` (only the client adds).

  `p_ring` must already be encoded (``ring.encode(p, sh.ring, frac=sh.frac)``)
  and broadcast to ``sh.shape``.
  """
  sh = _check_shared(sh, "sh")
  p = ring_lib.check_ring_array(p_ring, sh.ring, "p_ring")
  p = _to_shape(p, sh, "p_ring")
  return Shared(sh.c + p, sh.s, sh.ring, sh.frac)


@with_x64
def mul_public_int(sh: Shared, k: Any) -> Shared:
  """``sh * k`` for a public integer array k (local; two's complement mod 2^l).

  The fraction bits are unchanged. `k` broadcasts to ``sh.shape``.
  """
  sh = _check_shared(sh, "sh")
  if isinstance(k, bool) or (
      not isinstance(k, (int, np.integer)) and not (
          hasattr(k, "dtype") and jnp.issubdtype(k.dtype, jnp.integer)
          and np.dtype(k.dtype) != np.bool_)):
    raise TypeError(
        f"k: expected a public integer (Python int or integer array), given"
        f" {getattr(k, 'dtype', type(k).__name__)}; use mul_public_fixed for real factors")
  if isinstance(k, (int, np.integer)):
    kr = jnp.asarray(sh.ring.const(int(k)))
  else:
    kr = ring_lib.from_signed(jnp.asarray(k), sh.ring)
  kr = _to_shape(kr, sh, "k")
  return Shared(sh.c * kr, sh.s * kr, sh.ring, sh.frac)


@with_x64
def lshift(sh: Shared, k: int) -> Shared:
  """``sh * 2^k`` as a change of format: the value is unchanged, ``frac += k``.

  Local. Valid while the shifted integer still fits the ring.
  """
  sh = _check_shared(sh, "sh")
  k = _check_int("k", k, 0, sh.ring.bits - 1 - sh.frac, "fraction bits left in the ring")
  sft = sh.ring.const(k)
  return Shared(sh.c << sft, sh.s << sft, sh.ring, sh.frac + k)


@with_x64
def reduce_sum(sh: Shared, axis: int | tuple[int, ...] | None = None, *,
               keepdims: bool = False) -> Shared:
  """Sum over `axis` (local, exact mod 2^l)."""
  sh = _check_shared(sh, "sh")
  return sh.map(lambda v: jnp.sum(v, axis=axis, keepdims=keepdims, dtype=sh.ring.dtype))


@with_x64
def concatenate(parts: Sequence[Shared], axis: int = 0) -> Shared:
  """Concatenates shared arrays of one ring and format along `axis` (local)."""
  parts = [_check_shared(p, f"parts[{i}]") for i, p in enumerate(parts)]
  if not parts:
    raise ValueError("parts: expected at least one Shared, given none")
  for i, p in enumerate(parts[1:], 1):
    _check_same_ring(parts[0], p, f"parts[0], parts[{i}]")
    _check_same_frac(parts[0], p, f"parts[0], parts[{i}]")
  return Shared(jnp.concatenate([p.c for p in parts], axis),
                jnp.concatenate([p.s for p in parts], axis), parts[0].ring, parts[0].frac)


@with_x64
def einsum_public(spec: str, a: Shared, b_ring: Any, *, b_frac: int | None = None) -> Shared:
  """``einsum(spec, a, b)`` for shared a and public ring elements b (local).

  Each party multiplies its own share; the result has ``a.frac + b_frac``
  fraction bits (`b_frac` defaults to ``a.ring.frac``).
  """
  a = _check_shared(a, "a")
  b = ring_lib.check_ring_array(b_ring, a.ring, "b_ring")
  b_frac = ring_lib._frac(a.ring, b_frac, "b_frac")
  ring_lib.check_einsum(spec, a.c, b, a.ring)
  spec = spec.replace(" ", "")
  return Shared(ring_lib._ring_einsum_core(spec, a.c, b, a.ring, "limbs"),
                ring_lib._ring_einsum_core(spec, a.s, b, a.ring, "limbs"),
                a.ring, _product_frac(a.frac, b_frac, a.ring))


def _product_frac(fa: int, fb: int, ring: Ring) -> int:
  if fa + fb >= ring.bits:
    raise ValueError(
        f"a, b: the product would carry {fa} + {fb} = {fa + fb} fraction bits, more than the"
        f" {ring.bits}-bit ring holds; truncate an operand first")
  return fa + fb


# ---------------------------------------------------------------------- Beaver products


def _triple_shares(seed, stream, shape, ring):
  """Client and server shares of a uniform dealer value (streams stream, stream + 1)."""
  return _bits(seed, stream, shape, ring.dtype), _bits(seed, stream + 1, shape, ring.dtype)


@functools.partial(jax.jit, static_argnames=("ring",))
def _beaver_mul_core(seed, xc, xs, yc, ys, ring: Ring):
  ac, as_ = _triple_shares(seed, 0, xc.shape, ring)
  bc, bs = _triple_shares(seed, 2, yc.shape, ring)
  cc = _bits(seed, 4, xc.shape, ring.dtype)
  cs = (ac + as_) * (bc + bs) - cc  # dealer: C = A * B, shared
  e = (xc - ac) + (xs - as_)  # opened: each party sends x_p - a_p
  f = (yc - bc) + (ys - bs)  # opened: each party sends y_p - b_p
  zc = cc + e * bc + (ac + e) * f
  zs = cs + e * bs + as_ * f
  return zc, zs


@functools.partial(jax.jit, static_argnames=("ring",))
def _beaver_square_core(seed, xc, xs, ring: Ring):
  ac, as_ = _triple_shares(seed, 0, xc.shape, ring)
  a = ac + as_
  cc = _bits(seed, 2, xc.shape, ring.dtype)
  cs = a * a - cc  # dealer: the square pair (A, A^2)
  e = (xc - ac) + (xs - as_)  # opened
  two_e = e + e
  zc = cc + two_e * ac + e * e  # (A + e)^2 = A^2 + 2 e A + e^2
  zs = cs + two_e * as_
  return zc, zs


@with_x64
def mul(a: Shared, b: Shared, dealer: Dealer, ledger: Ledger | None = None) -> Shared:
  """Beaver elementwise product ``a * b`` (no truncation: ``frac = a.frac + b.frac``).

  With a dealer triple ``(A, B, C = A * B)``: open ``e = a - A`` and
  ``f = b - B``; the client takes ``C_c + e B_c + (A_c + e) f`` and the server
  ``C_s + e B_s + A_s f``; together ``(A + e)(B + f) = a b``. Ledger: ``n``
  triples, ``2n`` opened elements per party, 1 round, 2 messages.
  """
  a, b = _check_shared(a, "a"), _check_shared(b, "b")
  ring = _check_same_ring(a, b, "a, b")
  frac = _product_frac(a.frac, b.frac, ring)
  a, b = _broadcast(a, b, "a, b")
  zc, zs = _beaver_mul_core(dealer.next_seed(), a.c, a.s, b.c, b.s, ring)
  n = a.size
  _rec(ledger, "mul", bits=ring.bits, triples=n, opened=2 * n, rounds=1, messages=2)
  return Shared(zc, zs, ring, frac)


@with_x64
def square(a: Shared, dealer: Dealer, ledger: Ledger | None = None) -> Shared:
  """``a * a`` with a square pair ``(A, A^2)``: opens only ``e = a - A`` (n elements)."""
  a = _check_shared(a, "a")
  frac = _product_frac(a.frac, a.frac, a.ring)
  zc, zs = _beaver_square_core(dealer.next_seed(), a.c, a.s, a.ring)
  n = a.size
  _rec(ledger, "square", bits=a.ring.bits, square_pairs=n, opened=n, rounds=1, messages=2)
  return Shared(zc, zs, a.ring, frac)


def _E(spec, x, y, ring):
  return ring_lib._einsum_limbs(spec, x, y, ring)


@functools.partial(jax.jit, static_argnames=("spec", "ring"))
def _beaver_einsum_core(seed, xc, xs, yc, ys, spec: str, ring: Ring):
  ac, as_ = _triple_shares(seed, 0, xc.shape, ring)
  bc, bs = _triple_shares(seed, 2, yc.shape, ring)
  c = _E(spec, ac + as_, bc + bs, ring)  # dealer: C = A @ B
  cc = _bits(seed, 4, c.shape, ring.dtype)
  cs = c - cc
  e = (xc - ac) + (xs - as_)  # opened: X - A
  f = (yc - bc) + (ys - bs)  # opened: Y - B
  zc = cc + _E(spec, e, bc, ring) + _E(spec, ac + e, f, ring)
  zs = cs + _E(spec, e, bs, ring) + _E(spec, as_, f, ring)
  return zc, zs


@with_x64
def einsum(spec: str, a: Shared, b: Shared, dealer: Dealer,
           ledger: Ledger | None = None) -> Shared:
  """Beaver ``einsum(spec, a, b)`` with a matrix triple ``(A, B, C = einsum(A, B))``.

  Open ``E = a - A`` and ``F = b - B``; the client takes
  ``C_c + E.B_c + (A_c + E).F``, the server ``C_s + E.B_s + A_s.F`` (``.`` the
  einsum, exact mod 2^l via `jaxsys.secure.ring.ring_einsum`). ``frac = a.frac +
  b.frac``. Ledger: one matrix triple of these shapes, ``|a| + |b|`` opened
  elements per party, 1 round, 2 messages.

  Args:
    spec: explicit two-operand einsum, e.g. ``"bhqd,bhkd->bhqk"``.
    a, b: shared operands of one ring.
    dealer: the triple source.
    ledger: where to record (None: nowhere).
  """
  a, b = _check_shared(a, "a"), _check_shared(b, "b")
  ring = _check_same_ring(a, b, "a, b")
  frac = _product_frac(a.frac, b.frac, ring)
  ring_lib.check_einsum(spec, a.c, b.c, ring)
  spec = spec.replace(" ", "")
  zc, zs = _beaver_einsum_core(dealer.next_seed(), a.c, a.s, b.c, b.s, spec, ring)
  _rec(ledger, "einsum", bits=ring.bits, opened=a.size + b.size, rounds=1, messages=2,
       matmul_triple=("beaver", ring.bits, spec, a.shape, b.shape))
  return Shared(zc, zs, ring, frac)


def _check_matmul_shapes(a_shape, b_shape, names="a, b"):
  if len(a_shape) < 1 or len(b_shape) != 2 or a_shape[-1] != b_shape[0]:
    raise ValueError(
        f"{names}: expected (..., K) @ (K, N), given {tuple(a_shape)} and {tuple(b_shape)}")


@with_x64
def matmul(a: Shared, b: Shared, dealer: Dealer, ledger: Ledger | None = None) -> Shared:
  """Beaver ``a @ b`` for ``a: (..., K)``, ``b: (K, N)``; see `einsum`.

  >>> import jax
  >>> from jaxsys.secure import ring
  >>> d, led = Dealer(jax.random.key(1)), Ledger()
  >>> x = share(jnp.ones((4, 8), jnp.uint32), d, ring.RING32)
  >>> w = share(jnp.ones((8, 3), jnp.uint32), d, ring.RING32)
  >>> reveal(matmul(x, w, d, led))[0].tolist(), led.total().opened_elements[32]
  ([8, 8, 8], 56)
  """
  a, b = _check_shared(a, "a"), _check_shared(b, "b")
  _check_matmul_shapes(a.shape, b.shape)
  return einsum("...k,kn->...n", a, b, dealer, ledger)


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["b_c", "b_s", "f"], meta_fields=["ring", "frac"])
@dataclasses.dataclass(frozen=True)
class StaticWeight:
  """A weight prepared for static-weight Beaver products (`matmul_static`).

  The dealer's mask B is fixed for this weight and ``F = W - B`` was opened
  once at setup; each query then needs only a fresh A and ``C = A @ B``.
  """

  b_c: jax.Array  # [K, N] ring.dtype, the client's share of the fixed mask B
  b_s: jax.Array  # [K, N] ring.dtype, the server's share of B
  f: jax.Array  # [K, N] ring.dtype, the public W - B (opened at setup)
  ring: Ring
  frac: int  # fraction bits of W

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.f.shape)


@functools.partial(jax.jit, static_argnames=("ring",))
def _static_setup_core(seed, wc, ws, ring: Ring):
  bc, bs = _triple_shares(seed, 0, wc.shape, ring)
  f = (wc - bc) + (ws - bs)  # opened once: W - B
  return bc, bs, f


@with_x64
def setup_static_weight(w: Shared | Any, dealer: Dealer, ledger: Ledger | None = None, *,
                        ring: Ring | None = None) -> StaticWeight:
  """Opens ``F = W - B`` once for a fixed dealer mask B (the static-weight setup).

  The dealer-world analogue of Nimbus's one-time weight upload (jaxsys
  ``papers/secure.md`` 1.2): the cost is paid once per weight and recorded under
  ``setup/<scope>/static_weight`` (``|W|`` opened elements per party, 1 round).

  Args:
    w: the weight, ``(K, N)``: a `Shared`, or ring elements (then shared here
      with `ring`, which is required).
    dealer: source of B (and of the sharing of a plain `w`).
    ledger: where to record.
    ring: the ring of a plain `w`.

  Returns:
    `StaticWeight` for `matmul_static`.
  """
  if not isinstance(w, Shared):
    if ring is None:
      raise ValueError("ring: required when w is given as ring elements, given None")
    w = share(w, dealer, ring)
  w = _check_shared(w, "w")
  if w.ndim != 2:
    raise ValueError(f"w: expected a (K, N) weight, given shape {w.shape}")
  bc, bs, f = _static_setup_core(dealer.next_seed(), w.c, w.s, w.ring)
  if ledger is not None:
    with ledger.setup_scope():
      _rec(ledger, "static_weight", bits=w.ring.bits, opened=w.size, rounds=1, messages=2)
  return StaticWeight(bc, bs, f, w.ring, w.frac)


@functools.partial(jax.jit, static_argnames=("ring",))
def _static_matmul_core(seed, xc, xs, bc, bs, f, ring: Ring):
  spec = "...k,kn->...n"
  ac, as_ = _triple_shares(seed, 0, xc.shape, ring)
  c = _E(spec, ac + as_, bc + bs, ring)  # dealer: C = A @ B with the weight's fixed B
  cc = _bits(seed, 2, c.shape, ring.dtype)
  cs = c - cc
  e = (xc - ac) + (xs - as_)  # opened: X - A (the only opening per query)
  zc = cc + _E(spec, e, bc, ring) + _E(spec, ac + e, f, ring)
  zs = cs + _E(spec, e, bs, ring) + _E(spec, as_, f, ring)
  return zc, zs


@with_x64
def matmul_static(x: Shared, weight: StaticWeight, dealer: Dealer,
                  ledger: Ledger | None = None) -> Shared:
  """``x @ W`` with the static-weight triple ``(A, B, A @ B)``; opens only ``X - A``.

  ``X W = (A + E)(B + F) = C + E B + A F + E F`` with ``E = X - A`` opened now
  and ``F = W - B`` opened at setup: the client takes ``C_c + E B_c + (A_c + E)
  F``, the server ``C_s + E B_s + A_s F``. Ledger: ``|x|`` opened elements per
  party (plain Beaver: ``|x| + |W|``), 1 round, 2 messages.
  """
  x = _check_shared(x, "x")
  if not isinstance(weight, StaticWeight):
    raise TypeError(f"weight: expected an mpc.StaticWeight, given {type(weight).__name__}")
  if x.ring != weight.ring:
    raise ValueError(f"x, weight: rings differ: {x.ring} vs {weight.ring}")
  _check_matmul_shapes(x.shape, weight.shape, "x, weight")
  frac = _product_frac(x.frac, weight.frac, x.ring)
  ring_lib.check_einsum("...k,kn->...n", x.c, weight.f, x.ring)
  zc, zs = _static_matmul_core(dealer.next_seed(), x.c, x.s, weight.b_c, weight.b_s, weight.f,
                               x.ring)
  _rec(ledger, "matmul_static", bits=x.ring.bits, opened=x.size, rounds=1, messages=2,
       matmul_triple=("static", x.ring.bits, "...k,kn->...n", x.shape, weight.shape))
  return Shared(zc, zs, x.ring, frac)


# ------------------------------------------------------------------------- truncation


@functools.partial(jax.jit, static_argnames=("ring", "t"))
def _trunc_local_core(c, s, ring: Ring, t: int):
  sft = ring.const(t)
  zero = ring.const(0)
  return c >> sft, zero - ((zero - s) >> sft)


def _check_shift(sh: Shared, t: Any, name: str = "s") -> int:
  return _check_int(name, t, 0, min(sh.frac, sh.ring.bits - 2),
                    f"at most the value's {sh.frac} fraction bits and ring bits - 2")


@with_x64
def trunc_local(sh: Shared, s: int, ledger: Ledger | None = None) -> Shared:
  """SecureML local truncation by s bits: no communication, may fail.

  The client shifts its share, ``c' = c >> s``; the server shifts the negation
  of its share, ``s' = -((-s_) >> s)`` (logical shifts of the unsigned
  representatives, results mod 2^l). With ``x`` the signed value and ``c``
  uniform: if ``c - x`` does not wrap (``0 <= c - x < 2^l`` over the integers),
  ``c' + s' = ceil((x - (c mod 2^s)) / 2^s)``, which is ``floor(x / 2^s)`` or
  ``floor(x / 2^s) + 1``. Otherwise the result is off by ``2^(l-s)``: that
  happens with probability exactly ``|x| / 2^l`` (`secureml_failure_prob`;
  SecureML's published bound is ``2^(l_x + 1 - l)`` for ``|x| < 2^l_x``).
  ``frac`` decreases by s.
  """
  sh = _check_shared(sh, "sh")
  t = _check_shift(sh, s)
  c, s_ = _trunc_local_core(sh.c, sh.s, sh.ring, t)
  _rec(ledger, "trunc_local", bits=sh.ring.bits, truncations=sh.size)
  return Shared(c, s_, sh.ring, sh.frac - t)


def secureml_failure_prob(ring: Ring, bound: float, *, frac: int | None = None) -> float:
  """Probability that `trunc_local` fails for a value of magnitude `bound`.

  Exactly ``|x| 2^frac / 2^bits`` for a value x of ``|x| = bound`` at `frac`
  fraction bits (default ``ring.frac``) with a uniform client share; it grows
  with |x|, so it is also the worst case over ``|x| <= bound``. E.g. ``RING32``,
  |x| < 16: ``16 * 2^13 / 2^32 = 2^-15`` per element.
  """
  ring = ring_lib._check_ring(ring)
  frac = ring_lib._frac(ring, frac)
  b = float(bound)
  if not math.isfinite(b) or b < 0:
    raise ValueError(f"bound: expected a finite number >= 0, given {bound!r}")
  return min(1.0, b * 2.0**frac / 2.0**ring.bits)


def _wrap_trunc(seed, c, s, src: Ring, dst: Ring, t: int):
  """Shares of ``floor(x'/2^t) - 2^(l-2-t)`` over `dst`, with x' = x + 2^(l-2), l = src.bits.

  ``w = 1{c' + s >= 2^l}`` (the ideal wrap bit, re-shared over `dst`);
  ``(c' >> t) + (s >> t) - w 2^(l-t) = floor(x'_u / 2^t) - carry`` where ``x'_u``
  is the unsigned value and ``carry = 1{(c' mod 2^t) + (s mod 2^t) >= 2^t}``.
  """
  l = src.bits
  off = src.const(1 << (l - 2))
  cp = c + off  # the client adds the public offset
  w = (cp + s) < cp  # the unsigned sum wrapped
  wc = _bits(seed, 0, c.shape, dst.dtype)
  ws = w.astype(dst.dtype) - wc
  sft = dst.const(t)
  high = dst.const(1 << (l - t))  # 2^(l-t) mod 2^dst.bits
  zc = (cp.astype(dst.dtype) >> sft) - wc * high - dst.const((1 << (l - 2)) >> t)
  zs = (s.astype(dst.dtype) >> sft) - ws * high
  return zc, zs


@functools.partial(jax.jit, static_argnames=("src", "dst", "t"))
def _wrap_trunc_core(seed, c, s, src: Ring, dst: Ring, t: int):
  return _wrap_trunc(seed, c, s, src, dst, t)


@with_x64
def trunc_1bit(sh: Shared, s: int, dealer: Dealer, ledger: Ledger | None = None) -> Shared:
  """Cheetah-style truncation by s bits with one ideal wrap bit.

  The client adds the public offset ``2^(l-2)``: ``x' = x + 2^(l-2)``, shared
  as ``(c', s_)``. The ideal functionality computes ``w = 1{c' + s_ >= 2^l}``
  from both shares and re-shares it; then
  ``(c' >> s) + (s_ >> s) - w 2^(l-s) - 2^(l-2-s)`` is the result.

  Exact bound: for ``-2^(l-2) <= x < 2^(l-2)`` the result is ``floor(x / 2^s)``
  or ``floor(x / 2^s) - 1`` (the carry of the two low parts,
  ``(c' mod 2^s) + (s_ mod 2^s) >= 2^s``, is lost). In that range ``x'`` has
  MSB 0, so ``w = msb(c') OR msb(s_)``: Cheetah's cheap wrap bit. (With the
  exact wrap bit this simulator also gets ``2^(l-2) <= x < 2^(l-1)`` right; a
  real MSB-based protocol does not promise it. Below ``-2^(l-2)`` the result is
  off by ``2^(l-s)``.) ``frac`` decreases by s. Ledger: n wrap bits and n
  truncations of l bits.
  """
  sh = _check_shared(sh, "sh")
  t = _check_shift(sh, s)
  zc, zs = _wrap_trunc_core(dealer.next_seed(), sh.c, sh.s, sh.ring, sh.ring, t)
  _rec(ledger, "trunc_1bit", bits=sh.ring.bits, wrap_bits=sh.size, truncations=sh.size)
  return Shared(zc, zs, sh.ring, sh.frac - t)


@with_x64
def truncate(sh: Shared, s: int, dealer: Dealer | None = None, ledger: Ledger | None = None,
             *, method: str = "1bit") -> Shared:
  """`trunc_1bit` (``method="1bit"``, needs a dealer) or `trunc_local` (``"secureml"``)."""
  if method == "1bit":
    if dealer is None:
      raise ValueError("dealer: method='1bit' re-shares an ideal wrap bit and needs a Dealer,"
                       " given None")
    return trunc_1bit(sh, s, dealer, ledger)
  if method == "secureml":
    return trunc_local(sh, s, ledger)
  raise ValueError(f"method: expected one of {TRUNCATIONS}, given {method!r}")


@with_x64
def mul_fixed(a: Shared, b: Shared, dealer: Dealer, ledger: Ledger | None = None, *,
              trunc: str = "1bit") -> Shared:
  """Fixed-point ``a * b``: `mul`, then truncation by ``b.frac`` (``frac = a.frac``)."""
  return truncate(mul(a, b, dealer, ledger), b.frac, dealer, ledger, method=trunc)


@with_x64
def mul_public_fixed(sh: Shared, value: Any, dealer: Dealer | None = None,
                     ledger: Ledger | None = None, *, trunc: str = "1bit",
                     frac: int | None = None) -> Shared:
  """``sh * v`` for a public real v: local product with ``encode(v)``, then truncation.

  v is encoded with `frac` fraction bits (default ``sh.ring.frac``), multiplied
  into each share, and the product truncated by `frac` (`truncate` with
  `trunc`), so ``frac`` of the result is ``sh.frac``.
  """
  sh = _check_shared(sh, "sh")
  frac = ring_lib._frac(sh.ring, frac)
  _product_frac(sh.frac, frac, sh.ring)
  v = ring_lib.encode(value, sh.ring, frac=frac)
  v = _to_shape(v, sh, "value")
  prod = Shared(sh.c * v, sh.s * v, sh.ring, sh.frac + frac)
  with _scope(ledger, "mul_public_fixed"):
    return truncate(prod, frac, dealer, ledger, method=trunc)


# ---------------------------------------------------------------------- ring switching


def _check_bits(r: Ring, bits: int, name: str) -> Ring:
  r = ring_lib._check_ring(r, name)
  if r.bits != bits:
    raise ValueError(f"{name}: expected a {bits}-bit ring, given {r}")
  return r


@with_x64
def downcast(sh: Shared, ring32: Ring) -> Shared:
  """Z_2^64 -> Z_2^32 by reducing each share mod 2^32 (local, free).

  ``(c mod 2^32) + (s mod 2^32) = x mod 2^32`` always, so the result is the
  same value when ``-2^31 <= x < 2^31`` (as an integer at ``sh.frac`` fraction
  bits; truncate first to make it fit). ``frac`` is kept.
  """
  sh = _check_shared(sh, "sh")
  _check_bits(sh.ring, 64, "sh.ring")
  ring32 = _check_bits(ring32, 32, "ring32")
  if sh.frac >= 32:
    raise ValueError(f"sh: {sh.frac} fraction bits do not fit a 32-bit ring; truncate first")
  return Shared(sh.c.astype(jnp.uint32), sh.s.astype(jnp.uint32), ring32, sh.frac)


@with_x64
def upcast(sh: Shared, ring64: Ring, dealer: Dealer, ledger: Ledger | None = None) -> Shared:
  """Z_2^32 -> Z_2^64 with one ideal wrap bit (exact in range).

  ``x' = x + 2^30`` (client adds), ``w = 1{c' + s >= 2^32}``; over Z_2^64 the
  client takes ``c' - w_c 2^32 - 2^30`` and the server ``s - w_s 2^32``, which
  is exactly x for ``-2^30 <= x < 2^30`` (see `trunc_1bit` for the range).
  ``frac`` is kept; the result's ring is `ring64`. Ledger: n wrap bits of 32 bits.
  """
  sh = _check_shared(sh, "sh")
  _check_bits(sh.ring, 32, "sh.ring")
  ring64 = _check_bits(ring64, 64, "ring64")
  zc, zs = _wrap_trunc_core(dealer.next_seed(), sh.c, sh.s, sh.ring, ring64, 0)
  _rec(ledger, "upcast", bits=32, wrap_bits=sh.size)
  return Shared(zc, zs, ring64, sh.frac)


@with_x64
def trunc_upcast(sh: Shared, s: int, ring64: Ring, dealer: Dealer,
                 ledger: Ledger | None = None) -> Shared:
  """Fused truncation by s bits and lift Z_2^32 -> Z_2^64, sharing ONE wrap bit.

  Nimbus (jaxsys ``papers/secure.md`` 1.3): both the truncation and the lift
  need ``w = 1{c' + s_ >= 2^32}``; with it, over Z_2^64, the client takes
  ``(c' >> s) - w_c 2^(32-s) - 2^(30-s)`` and the server ``(s_ >> s) - w_s
  2^(32-s)``. The revealed value equals ``trunc_1bit`` then ``upcast`` on the
  same shares: ``floor(x / 2^s)`` or one less, for ``-2^30 <= x < 2^30``.

  The result is over `ring64` with ``frac = sh.frac - s`` fraction bits
  (``Shared.frac``); choose ``s = sh.frac - ring64.frac`` to land on ring64's
  format (e.g. a RING32 product, 26 fraction bits, with s = 8 gives RING64's
  18). Ledger: n wrap bits and n truncations of 32 bits.
  """
  sh = _check_shared(sh, "sh")
  _check_bits(sh.ring, 32, "sh.ring")
  ring64 = _check_bits(ring64, 64, "ring64")
  t = _check_shift(sh, s)
  zc, zs = _wrap_trunc_core(dealer.next_seed(), sh.c, sh.s, sh.ring, ring64, t)
  _rec(ledger, "trunc_upcast", bits=32, wrap_bits=sh.size, truncations=sh.size)
  return Shared(zc, zs, ring64, sh.frac - t)


# ------------------------------------------------------------------------ comparisons


@functools.partial(jax.jit, static_argnames=("ring",))
def _lt_core(seed, c, s, t, ring: Ring):
  x = jax.lax.bitcast_convert_type(c + s, ring.signed_dtype)  # ideal: from both shares
  tt = jax.lax.bitcast_convert_type(t, ring.signed_dtype)
  bit = (x < tt).astype(ring.dtype)
  bc = _bits(seed, 0, c.shape, ring.dtype)
  return bc, bit - bc


@with_x64
def less_than_public(sh: Shared, t: Any, dealer: Dealer, ledger: Ledger | None = None) -> Shared:
  """Ideal ``1{x < t}`` for a public threshold t, as a shared bit (``frac = 0``).

  `t` is a real number / array (encoded at ``sh.frac``; it must be concrete) or
  already-encoded ring elements; it broadcasts to ``sh.shape``. Signed
  comparison. Ledger: n comparisons of l bits.
  """
  sh = _check_shared(sh, "sh")
  if hasattr(t, "dtype") and np.dtype(t.dtype) == np.dtype(sh.ring.dtype):
    tr = jnp.asarray(t)
  else:
    tr = ring_lib.encode(t, sh.ring, frac=sh.frac)
  tr = _to_shape(tr, sh, "t")
  bc, bs = _lt_core(dealer.next_seed(), sh.c, sh.s, tr, sh.ring)
  _rec(ledger, "less_than", bits=sh.ring.bits, comparisons=sh.size)
  return Shared(bc, bs, sh.ring, 0)


@with_x64
def ltz(sh: Shared, dealer: Dealer, ledger: Ledger | None = None) -> Shared:
  """Ideal ``1{x < 0}`` (the sign bit), shared (``frac = 0``)."""
  sh = _check_shared(sh, "sh")
  return less_than_public(sh, jnp.zeros((), sh.ring.dtype), dealer, ledger)


@with_x64
def less_than(a: Shared, b: Shared, dealer: Dealer, ledger: Ledger | None = None) -> Shared:
  """``1{a < b}`` as ``ltz(a - b)``: exact while ``a - b`` does not overflow the ring."""
  return ltz(sub(a, b), dealer, ledger)


@with_x64
def select(bit: Shared, a: Shared, b: Shared, dealer: Dealer,
           ledger: Ledger | None = None) -> Shared:
  """``bit ? a : b = b + bit * (a - b)`` with one Beaver product (no truncation).

  `bit` is a shared 0/1 (``frac = 0``, from a comparison); a and b agree in
  ring and format. Ledger: n muxes, n triples, 2n opened elements, 1 round.
  """
  bit, a, b = _check_shared(bit, "bit"), _check_shared(a, "a"), _check_shared(b, "b")
  ring = _check_same_ring(a, b, "a, b")
  _check_same_ring(bit, a, "bit, a")
  _check_same_frac(a, b, "a, b")
  if bit.frac != 0:
    raise ValueError(f"bit: expected a shared 0/1 bit (frac 0), given frac {bit.frac}")
  d = sub(a, b)
  bit, d = _broadcast(bit, d, "bit, a - b")
  b = b.map(lambda v: jnp.broadcast_to(v, d.shape))
  zc, zs = _beaver_mul_core(dealer.next_seed(), bit.c, bit.s, d.c, d.s, ring)
  n = d.size
  _rec(ledger, "select", bits=ring.bits, muxes=n, triples=n, opened=2 * n, rounds=1, messages=2)
  return Shared(zc + b.c, zs + b.s, ring, a.frac)


@with_x64
def maximum(sh: Shared, axis: int, dealer: Dealer, ledger: Ledger | None = None, *,
            keepdims: bool = False) -> Shared:
  """Max over `axis` by a tree: ``ceil(log2 n)`` levels of comparisons + selects.

  Each level compares the first half of the remaining candidates with the
  second (``less_than``, one batched call) and keeps the larger (``select``,
  one round); an odd one out waits for the next level. Recorded under the
  scope ``maximum``: ``ceil(log2 n)`` comparison calls and select rounds.
  """
  sh = _check_shared(sh, "sh")
  if not isinstance(axis, int) or isinstance(axis, bool) or not -sh.ndim <= axis < sh.ndim:
    raise ValueError(f"axis: expected an int in [{-sh.ndim}, {sh.ndim - 1}], given {axis!r}")
  n = sh.shape[axis]
  if n == 0:
    raise ValueError(f"sh: the axis {axis} to reduce is empty (shape {sh.shape})")
  x = sh.map(lambda v: jnp.moveaxis(v, axis, -1))
  with _scope(ledger, "maximum"):
    while x.shape[-1] > 1:
      m = x.shape[-1]
      h = m // 2
      lo, hi, rest = x[..., :h], x[..., h:2 * h], x[..., 2 * h:]
      best = select(less_than(lo, hi, dealer, ledger), hi, lo, dealer, ledger)
      x = concatenate([best, rest], axis=-1) if rest.shape[-1] else best
  out = x[..., 0]
  if keepdims:
    out = out.map(lambda v: jnp.expand_dims(v, axis))
  return out


# --------------------------------------------------------------------------- polynomials


@with_x64
def poly_eval(sh: Shared, coeffs: Sequence[float], dealer: Dealer,
              ledger: Ledger | None = None, *, trunc: str = "1bit") -> Shared:
  """``sum_i coeffs[i] x^i`` by Horner on shares, truncating after each product.

  Coefficients (lowest degree first, public reals) are encoded at ``sh.frac``.
  ``acc = c_d x + c_(d-1)`` (a local product by a public constant, then a
  truncation), then ``acc = trunc(acc * x) + c_i`` (a Beaver product and a
  truncation) for i = d-2 ... 0: ``d - 1`` Beaver products (rounds) and d
  truncations by `trunc` ("1bit" or "secureml"). Recorded under ``poly_eval``.
  """
  sh = _check_shared(sh, "sh")
  coeffs = [float(c) for c in coeffs]
  if not coeffs:
    raise ValueError("coeffs: expected at least one coefficient, given none")
  f = sh.frac
  enc = lambda c: ring_lib.encode(c, sh.ring, frac=f)
  if len(coeffs) == 1:
    return Shared(jnp.broadcast_to(enc(coeffs[0]), sh.shape), _zeros(sh.shape, sh.ring),
                  sh.ring, f)
  with _scope(ledger, "poly_eval"):
    acc = mul_public_fixed(sh, coeffs[-1], dealer, ledger, trunc=trunc, frac=f)
    acc = add_public(acc, jnp.broadcast_to(enc(coeffs[-2]), sh.shape))
    for c in reversed(coeffs[:-2]):
      acc = truncate(mul(acc, sh, dealer, ledger), f, dealer, ledger, method=trunc)
      acc = add_public(acc, jnp.broadcast_to(enc(c), sh.shape))
  return acc


# ------------------------------------------------------------------ ideal functionalities


def _abs_u64(x: jax.Array, ring: Ring) -> tuple[jax.Array, jax.Array]:
  """(|x| as uint64, x < 0) for ring elements x, from the signed view."""
  sx = jax.lax.bitcast_convert_type(x, ring.signed_dtype).astype(jnp.int64)
  negative = sx < 0
  u = sx.astype(jnp.uint64)
  return jnp.where(negative, np.uint64(0) - u, u), negative


@functools.partial(jax.jit, static_argnames=("ring", "frac"))
def _reciprocal_core(seed, c, s, ring: Ring, frac: int):
  ax, negative = _abs_u64(c + s, ring)
  ax = jnp.maximum(ax, np.uint64(1))  # 0 is taken as +1 ulp
  q = np.uint64(1 << (2 * frac + 1)) // ax
  y = (q + np.uint64(1)) >> np.uint64(1)  # round(2^(2f) / |x|), ties up
  y = jnp.where(negative, np.uint64(0) - y, y).astype(ring.dtype)
  yc = _bits(seed, 0, c.shape, ring.dtype)
  return yc, y - yc


def _isqrt_u64(q: jax.Array) -> jax.Array:
  """floor(sqrt(q)) for uint64 q < 2^63, exact (float estimate, then corrected)."""
  r = jnp.floor(jnp.sqrt(q.astype(jnp.float64))).astype(jnp.uint64)
  one = np.uint64(1)
  for _ in range(2):
    r = jnp.where(r * r > q, r - one, r)
  for _ in range(2):
    r = jnp.where((r + one) * (r + one) <= q, r + one, r)
  return r


@functools.partial(jax.jit, static_argnames=("ring", "frac"))
def _rsqrt_core(seed, c, s, ring: Ring, frac: int):
  sx = jax.lax.bitcast_convert_type(c + s, ring.signed_dtype).astype(jnp.int64)
  d = jnp.maximum(sx, np.int64(1)).astype(jnp.uint64)  # x <= 0 is taken as +1 ulp
  q = np.uint64(1 << (3 * frac + 2)) // d  # floor(4 * 2^(3f) / x)
  y = (_isqrt_u64(q) + np.uint64(1)) >> np.uint64(1)  # round(sqrt(2^(3f) / x)), ties up
  y = y.astype(ring.dtype)
  yc = _bits(seed, 0, c.shape, ring.dtype)
  return yc, y - yc


@with_x64
def reciprocal(sh: Shared, dealer: Dealer, ledger: Ledger | None = None) -> Shared:
  """IDEAL ``1 / x``: shares of the correctly rounded result, at ``sh.frac``.

  An ideal functionality: the simulator reconstructs x from both shares and
  re-shares ``round(2^(2f) / x_int)`` (nearest, ties away from zero; x = 0 is
  taken as the smallest positive value ``2^-f``). It never overflows, since
  ``2f + 2 <= l``. A real protocol (SPU: Goldschmidt iterations; CrypTen:
  Newton-Raphson) is priced in `jaxsys.secure.cost`. Ledger: an ideal call
  ``reciprocal`` of n elements.
  """
  sh = _check_shared(sh, "sh")
  if 2 * sh.frac + 2 > sh.ring.bits:
    raise ValueError(
        f"sh: reciprocal needs 2*frac + 2 <= ring bits, given frac {sh.frac} in a"
        f" {sh.ring.bits}-bit ring; truncate first")
  yc, ys = _reciprocal_core(dealer.next_seed(), sh.c, sh.s, sh.ring, sh.frac)
  _rec(ledger, "reciprocal", bits=sh.ring.bits, ideal="reciprocal", ideal_elements=sh.size)
  return Shared(yc, ys, sh.ring, sh.frac)


@with_x64
def rsqrt(sh: Shared, dealer: Dealer, ledger: Ledger | None = None) -> Shared:
  """IDEAL ``1 / sqrt(x)``: shares of the correctly rounded result, at ``sh.frac``.

  An ideal functionality: the simulator reconstructs x and re-shares
  ``round(sqrt(2^(3f) / x_int))`` (nearest, ties up; x <= 0 is taken as
  ``2^-f``), computed exactly in integers as ``(isqrt(floor(2^(3f+2) / x)) + 1)
  >> 1``. Needs ``3f + 2 <= 63``. SPU's Newton iterations are priced in
  `jaxsys.secure.cost`. Ledger: an ideal call ``rsqrt`` of n elements.
  """
  sh = _check_shared(sh, "sh")
  if 3 * sh.frac + 2 > 63 or 2 * sh.frac + 2 > sh.ring.bits:
    raise ValueError(
        f"sh: rsqrt needs 3*frac + 2 <= 63 and 2*frac + 2 <= ring bits, given frac"
        f" {sh.frac} in a {sh.ring.bits}-bit ring; truncate first")
  yc, ys = _rsqrt_core(dealer.next_seed(), sh.c, sh.s, sh.ring, sh.frac)
  _rec(ledger, "rsqrt", bits=sh.ring.bits, ideal="rsqrt", ideal_elements=sh.size)
  return Shared(yc, ys, sh.ring, sh.frac)
