"""Hardware data prefetchers for the cache simulator (`jaxsys.sims.cache`).

Each prefetcher is a `jaxsys.sims.cache.protocol.Prefetcher` (pure
``make_params`` / ``init`` / ``train`` / ``issue`` functions over its own state),
with a plain-Python reference (`*_reference` classes) that the tests hold it to,
event for event.
"""
