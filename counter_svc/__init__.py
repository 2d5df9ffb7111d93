"""CounterService: named int64 counters stored in etcd.

The service keeps no state of its own, so any replica can serve any call.
Run it with `python -m counter_svc`.
"""

SERVICE_NAME = "mesh.counter.v1.CounterService"

__all__ = ["SERVICE_NAME"]
