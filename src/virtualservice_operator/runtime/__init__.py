"""Generic controller plumbing: the manager and its parts, informers, the work queue and
its rate limits, the controller's worker loop and the reconcile contract, leader
election, Events, metrics, logging, the clock.

Owns how work is found, queued, retried and run, as controller-runtime's `pkg/manager`,
`pkg/cache`, `pkg/controller` and `pkg/reconcile` do. Imports only `kube`; never the
domain or the operator (which hands it a reconciler).
"""
