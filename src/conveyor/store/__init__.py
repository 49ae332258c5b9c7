"""The store: jobs and their append-only state transitions in SQLite (WAL mode).

Every state change goes through :meth:`Store.transition`, a compare-and-set that writes the
new state and the transition row in one transaction. Callers report a change only after it
returned True, so what anyone was told is always on disk.

The package holds the schema (``migrations``), the records (``records``) and the Store, built
from one mixin per concern (``jobs``, ``transitions``, ``arrays``, ``data``) in ``sqlite``;
every name is re-exported here.
"""

from ..job import Transition
from .migrations import MIGRATIONS
from .leases import LeaseRecord, new_lease_id
from .records import ArrayRecord, JobRecord, new_job_id
from .sqlite import Store

__all__ = ["MIGRATIONS", "ArrayRecord", "JobRecord", "LeaseRecord", "new_lease_id", "Store", "Transition", "new_job_id"]
