"""Defaults of `run`'s flags, each written once (controller-runtime's where it has one).

As controller-runtime's `manager.Options`: the parts take these as their defaults and
`cli` shows them in `--help`. Imports nothing, so the commands' start stays light.
"""

from typing import Final

# -max-concurrent-reconciles. controller-runtime defaults to 1; here workers are coroutines
# on one event loop, so a second one costs nothing but lets one name's round trips overlap
# another's. Measured (bench/README.md): at 5,000 Services x 10 namespaces under 50
# changes/s, p99 from event to write is 343 ms with 1 worker, 197 ms with 2.
DEFAULT_WORKERS: Final = 2

METRICS_BIND_ADDRESS: Final = ":8080"
HEALTH_PROBE_BIND_ADDRESS: Final = ":8081"
LEASE_DURATION: Final = 15.0  # seconds a Lease holds without renewal
RENEW_DEADLINE: Final = 10.0  # seconds the leader keeps trying to renew before giving up
RETRY_PERIOD: Final = 2.0  # seconds between two tries to acquire or renew
SYNC_PERIOD: Final = 10 * 3600.0  # full resync, jittered by up to 10%
SHUTDOWN_GRACE: Final = 8.0  # seconds the parts get, together, to stop
