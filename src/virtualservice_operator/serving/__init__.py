"""The HTTP side: health probes, metrics exposition, secure serving (certificate reloads,
authentication and authorization through the API server) and pprof profiles.

Imports only `kube` and `runtime`; never the domain or the operator.
"""
