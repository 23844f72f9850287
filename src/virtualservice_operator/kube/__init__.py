"""The Kubernetes client: kubeconfig and in-cluster loading, credentials, TLS, transports,
the protobuf envelope, typed API errors.

Owns how a request reaches the API server and what its answer means. Never imports the
operator's domain, its wiring, or the runtime: it knows Kubernetes, not VirtualServices
(as client-go knows no controller).
"""
