"""The pure domain: the config and its template, Istio's schema, the cached records, the
desired state for one Service name, and the plan of writes that makes it so.

No I/O, no client, no clock: every function here is a function of its arguments. Imports
nothing else from this package.
"""
