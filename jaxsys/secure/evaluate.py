"""Accuracy harness for approximate activations on the real all-MiniLM-L6-v2.

* `generate_sentences(n, seed)`: seeded templated English sentences (at most 16
  WordPiece tokens with [CLS]/[SEP]) over a dozen topics, so that the
  similarity structure has something to preserve. Different seeds give
  different sentences; `generate_sentences(n, seed, exclude=...)` keeps a
  training set disjoint from an evaluation set.
* `capture_inputs(sentences)`: runs the exact model eagerly and records what
  reaches its non-linearities on real tokens: every GELU input, and every
  attention score after max-subtraction along the keys (the input of ``exp``
  inside softmax), for unmasked query rows and keys. This is the calibration
  distribution the fitter of `jaxsys.secure.fit` weighs (Nimbus's
  "distribution-aware" fit).
* `agreement(ref_NM, approx_NM)`: how well approximate embeddings preserve the
  exact ones:

    - ``cos_mean`` / ``cos_min``: cosine of each sentence's approximate
      embedding to its exact one;
    - ``spearman``: Spearman rank correlation between the upper triangles of
      the two pairwise-similarity matrices ``E E^T``;
    - ``nn_agreement``: fraction of sentences whose nearest neighbour (other
      than itself) is the same sentence under both embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
import scipy.stats

from jaxsys.models import minilm

_TOPICS = {
    "music": (["the guitarist", "a young pianist", "the band", "my sister", "the drummer"],
              ["plays", "practices", "records", "performs"],
              ["a slow song", "the old melody", "a jazz tune", "loud rock music"]),
    "sport": (["the striker", "our team", "the tennis player", "a tired runner", "the coach"],
              ["wins", "loses", "trains for", "prepares for"],
              ["the final match", "a long race", "the championship", "the away game"]),
    "food": (["the chef", "my grandmother", "a hungry child", "the baker", "our neighbour"],
             ["cooks", "eats", "bakes", "serves"],
             ["fresh bread", "a spicy soup", "chocolate cake", "grilled fish"]),
    "weather": (["the storm", "heavy rain", "a cold wind", "the morning fog", "bright sunshine"],
                ["covers", "hits", "reaches", "leaves"],
                ["the coastal town", "the mountain valley", "the whole city", "the quiet harbour"]),
    "finance": (["the central bank", "the stock market", "a small investor", "the company",
                 "the trader"],
                ["raises", "cuts", "sells", "buys"],
                ["interest rates", "its shares", "government bonds", "the old stock"]),
    "travel": (["the tourists", "a lonely traveller", "the pilot", "my parents", "the students"],
               ["visit", "fly to", "explore", "leave"],
               ["the ancient temple", "a busy airport", "the island", "the capital"]),
    "science": (["the biologist", "a research team", "the physicist", "the lab", "our professor"],
                ["studies", "measures", "discovers", "publishes"],
                ["a new protein", "the distant galaxy", "cell growth", "quantum effects"]),
    "health": (["the doctor", "a nurse", "the patient", "the hospital", "the surgeon"],
               ["treats", "checks", "prescribes", "reports"],
               ["a broken arm", "the fever", "new medicine", "a rare disease"]),
    "tech": (["the programmer", "a startup", "the engineer", "the robot", "our software"],
             ["builds", "fixes", "tests", "updates"],
             ["the mobile app", "a faster chip", "the web server", "the database"]),
    "nature": (["the old oak", "a wild fox", "the river", "the eagle", "a herd of deer"],
               ["crosses", "watches", "guards", "follows"],
               ["the green forest", "the frozen lake", "a rocky hill", "the open field"]),
    "school": (["the teacher", "a clever pupil", "the class", "the headmaster", "my friend"],
               ["reads", "writes", "explains", "forgets"],
               ["the history lesson", "a short poem", "the maths test", "the homework"]),
    "home": (["my brother", "the cat", "our family", "the landlord", "a tired father"],
             ["cleans", "paints", "repairs", "decorates"],
             ["the kitchen", "the small garden", "the broken door", "the living room"]),
}
_ENDINGS = ["", " today", " again", " every morning", " last night", " after lunch",
            " near the station", " with great care"]


def generate_sentences(n: int, seed: int, *, exclude: Sequence[str] = ()) -> list[str]:
  """`n` distinct templated sentences ``<subject> <verb> <object><ending>.``, seeded.

  Args:
    n: how many (the template space holds about 7,600 sentences).
    seed: numpy seed; the same seed gives the same list.
    exclude: sentences that must not appear (e.g. a training set when drawing
      an evaluation set).

  Raises:
    ValueError: `n` is not positive or exceeds what the templates can give.
  """
  space = sum(len(s) * len(v) * len(o) for s, v, o in _TOPICS.values()) * len(_ENDINGS)
  banned = set(exclude)
  if not isinstance(n, int) or n < 1 or n > space - len(banned):
    raise ValueError(f"n: expected an int in [1, {space - len(banned)}], given {n!r}")
  rng = np.random.default_rng(seed)
  topics = sorted(_TOPICS)
  out: list[str] = []
  seen = set(banned)
  while len(out) < n:
    subjects, verbs, objects = _TOPICS[topics[rng.integers(len(topics))]]
    s = (f"{subjects[rng.integers(len(subjects))]} {verbs[rng.integers(len(verbs))]}"
         f" {objects[rng.integers(len(objects))]}{_ENDINGS[rng.integers(len(_ENDINGS))]}.")
    s = s[0].upper() + s[1:]
    if s not in seen:
      seen.add(s)
      out.append(s)
  return out


@dataclasses.dataclass(frozen=True)
class Calibration:
  """Inputs that reached the exact model's non-linearities (float32 numpy, 1-D).

  Attributes:
    gelu: every GELU input on real tokens (all layers).
    exp: every attention score minus its row maximum, for real query rows and
      real keys (all layers and heads); all <= 0.
  """

  gelu: np.ndarray
  exp: np.ndarray


def capture_inputs(sentences: Sequence[str], *, batch: int = 64) -> Calibration:
  """Runs exact all-MiniLM-L6-v2 on `sentences` and records its non-linearities' inputs.

  The model runs eagerly (not jitted) so that the tapped activations are
  concrete arrays; padding positions are filtered out with the attention mask.
  """
  if len(sentences) == 0:
    raise ValueError("sentences: expected at least one sentence, given none")
  gelu_parts: list[np.ndarray] = []
  exp_parts: list[np.ndarray] = []
  mask_box: list[np.ndarray] = []

  def tap_gelu(x_BTF):
    keep = np.broadcast_to(mask_box[0][:, :, None] > 0, x_BTF.shape)
    gelu_parts.append(np.asarray(x_BTF)[keep])
    return minilm.exact_gelu(x_BTF)

  def tap_softmax(scores_BHTS, axis):
    s = np.asarray(scores_BHTS)
    key_ok = s > -1e29
    row_max = np.max(np.where(key_ok, s, -np.inf), axis=axis, keepdims=True)
    query_ok = np.broadcast_to(mask_box[0][:, None, :, None] > 0, s.shape)
    keep = key_ok & query_ok
    exp_parts.append((s - row_max)[keep])
    return minilm.softmax(scores_BHTS, axis)

  _, model, tok = minilm.load_minilm(gelu_fn=tap_gelu, softmax_fn=tap_softmax)
  for start in range(0, len(sentences), batch):
    ids_BT, mask_BT = tok(list(sentences[start:start + batch]))
    mask_box[:] = [mask_BT]
    model(jnp.asarray(ids_BT), jnp.asarray(mask_BT))
  return Calibration(gelu=np.concatenate(gelu_parts).astype(np.float32),
                     exp=np.concatenate(exp_parts).astype(np.float32))


def embeddings(sentences: Sequence[str], *, gelu_fn: minilm.GeluFn = minilm.exact_gelu,
               softmax_fn: minilm.SoftmaxFn = minilm.softmax,
               model: minilm.MiniLM | None = None) -> np.ndarray:
  """Unit-norm sentence embeddings ``(N, 384)`` with the given activations (or `model`)."""
  if model is None:
    _, model, tok = minilm.load_minilm(gelu_fn=gelu_fn, softmax_fn=softmax_fn)
  else:
    _, _, tok = minilm.load_minilm()
  return np.asarray(minilm.embed(model, tok, sentences))


def _check_pair(ref_NM: np.ndarray, approx_NM: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  ref = np.asarray(ref_NM, np.float64)
  app = np.asarray(approx_NM, np.float64)
  if ref.ndim != 2 or ref.shape != app.shape or ref.shape[0] < 3:
    raise ValueError(
        "ref_NM, approx_NM: expected two (N, M) arrays of the same shape with N >= 3,"
        f" given {ref.shape} and {app.shape}")
  if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(app))):
    raise ValueError("ref_NM, approx_NM: expected finite values, found NaN or inf")
  return ref, app


def agreement(ref_NM: np.ndarray, approx_NM: np.ndarray) -> dict[str, float]:
  """Cosine, similarity-rank and nearest-neighbour agreement of two embedding sets.

  Returns ``{"cos_mean", "cos_min", "spearman", "nn_agreement"}`` (see the module
  docstring for the formulas). Rows need not be normalised.
  """
  ref, app = _check_pair(ref_NM, approx_NM)
  unit = lambda e: e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
  ref, app = unit(ref), unit(app)
  cos = np.sum(ref * app, axis=1)
  sim_ref, sim_app = ref @ ref.T, app @ app.T
  iu = np.triu_indices(ref.shape[0], k=1)
  rho = scipy.stats.spearmanr(sim_ref[iu], sim_app[iu]).statistic
  np.fill_diagonal(sim_ref, -np.inf)
  np.fill_diagonal(sim_app, -np.inf)
  nn = np.mean(np.argmax(sim_ref, axis=1) == np.argmax(sim_app, axis=1))
  return {"cos_mean": float(np.mean(cos)), "cos_min": float(np.min(cos)),
          "spearman": float(rho), "nn_agreement": float(nn)}
