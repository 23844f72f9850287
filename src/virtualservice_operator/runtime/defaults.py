"""Defaults of `run`'s flags, each written once (controller-runtime's where it has one).

As controller-runtime's `manager.Options`: the parts take these as their defaults and
`cli` shows them in `--help`. Imports nothing, so the commands' start stays light.
"""

from typing import Final

# -max-concurrent-reconciles. controller-runtime defaults to 1; here workers are coroutines
# on one event loop, so an idle one costs nothing, and the names' round trips overlap.
# Measured (bench/README.md, "A slow API server"): with kube-apiserver and etcd held to half
# a CPU, at 1,000 Services x 5 namespaces under 50 changes/s, 2 workers let the queue grow
# to 671 names (p99 17 s from change to write) while the API server could take 1.4 times
# more writes in flight; 16 kept it under 60 (p99 1.1 s). The API server's share is capped
# apart, all workers together (operator.executor.WRITES_IN_FLIGHT).
DEFAULT_WORKERS: Final = 16

METRICS_BIND_ADDRESS: Final = ":8080"
HEALTH_PROBE_BIND_ADDRESS: Final = ":8081"
LEASE_DURATION: Final = 15.0  # seconds a Lease holds without renewal
RENEW_DEADLINE: Final = 10.0  # seconds the leader keeps trying to renew before giving up
RETRY_PERIOD: Final = 2.0  # seconds between two tries to acquire or renew
SYNC_PERIOD: Final = 10 * 3600.0  # full resync, jittered by up to 10%
SHUTDOWN_GRACE: Final = 8.0  # seconds the parts get, together, to stop
