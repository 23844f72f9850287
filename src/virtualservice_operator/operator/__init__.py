"""The operator's wiring: its parts built from the plumbing and fed by the domain.

The cluster cache, the reconciler and the executor of its writes, the config watch, the
resync and orphan sweep, and `app`, which hands them all to the manager. The one package
that knows both the domain and the plumbing (with `commands` and `cli`).
"""
