"""The dask.distributed bridge: run independent tasks on a cluster, or on a LocalCluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from mechgrok.errors import SchedulerError


def connect(scheduler: str):
    """A dask.distributed Client: `scheduler` is an address (tcp://host:port) or "local",
    which starts a LocalCluster on this machine. Raises SchedulerError naming the address if none answers."""
    from dask.distributed import Client, LocalCluster

    if scheduler == "local":
        return Client(LocalCluster(processes=True, threads_per_worker=1, dashboard_address=None))
    try:
        return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as err:
        raise SchedulerError(f"no dask scheduler answers at {scheduler} ({err})") from None


def map_on_cluster(
    scheduler: str, function: Callable[..., Any], argument_tuples: list[tuple]
) -> Iterator[Any]:
    """function(*arguments) for each tuple, computed by the cluster's workers, yielded in
    order as they are gathered (so a consumer can write each result away before the next)."""
    client = connect(scheduler)
    try:
        futures = [client.submit(function, *arguments, pure=False) for arguments in argument_tuples]
        for future in futures:
            yield future.result()
            future.release()
    finally:
        cluster = client.cluster if scheduler == "local" else None
        client.close()
        if cluster is not None:
            cluster.close()
