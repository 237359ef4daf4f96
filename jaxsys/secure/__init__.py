"""Secure two-party (2PC) Transformer inference, after Nimbus (arXiv 2411.15707).

* `jaxsys.secure.opcount`: `OpCount`, the secure-operation tag every
  approximation carries (comparisons, muxes, multiplications, depth, degree);
* `jaxsys.secure.approx`: the registry of drop-in GELU / softmax approximations
  (exact, Nimbus public and fitted, PUMA, BumbleBee seg3, MPCFormer Quad / 2Quad /
  2ReLU, CrypTen-style limit exp), all with the signatures `jaxsys.models.minilm`
  takes;
* `jaxsys.secure.fit`: the distribution-aware piecewise-polynomial fitter;
* `jaxsys.secure.ring` and `jaxsys.secure.mpc`: fixed point over Z_2^32 / Z_2^64,
  additive shares, Beaver products, truncations, ring switching, ideal
  comparisons, with an exact ledger of what was opened and compared;
* `jaxsys.secure.cost`: HE linear-layer costs (server inner product vs client
  outer product), non-linear protocol costs, and the LAN / WAN latency model.
"""
