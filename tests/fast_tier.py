"""The fast tier (``make test-fast``, or ``pytest --fast``): which test files it runs.

Pure and in-memory tests only: no processes, no PostgreSQL, MariaDB or Redis.
In-process servers on 127.0.0.1 are allowed while the whole tier stays under a
minute.  ``tests/guard.py`` fails any test here that starts a process or connects to
a database, so a file belongs on this list only if all of its tests pass under the
guard; tests marked ``interop``, ``postgres``, ``redis`` or ``mysql`` in a listed file
are left out (they are the full suite's).  ``make test`` still runs everything.

To add a file: list it below, in order, and check that ``make test-fast`` passes (the
guard and the coverage gate) and stays under a minute (it prints its run time).
"""

from __future__ import annotations

#: Paths from the repository root, one file a line, sorted.  New fast test files go
#: here.
FAST_FILES = [
    "tests/client/test_adminreplies.py",
    "tests/client/test_connection.py",
    "tests/client/test_connection_roles.py",
    "tests/client/test_protocol.py",
    "tests/client/test_units.py",
    "tests/cluster/test_scheduler_hooks.py",
    "tests/hostile/test_names.py",
    "tests/hostile/test_stuck_wakeup.py",
    "tests/ops/test_api.py",
    "tests/ops/test_metrics.py",
    "tests/protocol/test_admin_text.py",
    "tests/protocol/test_codec.py",
    "tests/protocol/test_fast_reader.py",
    "tests/server/test_admin.py",
    "tests/server/test_checklist.py",
    "tests/server/test_core.py",
    "tests/server/test_fast_admin_table.py",
    "tests/server/test_fast_connection.py",
    "tests/server/test_fast_job_states.py",
    "tests/server/test_fast_layout.py",
    "tests/server/test_fast_pair.py",
    "tests/server/test_housekeeping.py",
    "tests/server/test_jobs.py",
    "tests/server/test_jobs_edges.py",
    "tests/server/test_jobs_robustness.py",
    "tests/server/test_jobs_stateful.py",
    "tests/server/test_large_payloads.py",
    "tests/server/test_store_hook.py",
    "tests/server/test_testing_helpers.py",
    "tests/store/test_contract.py",
    "tests/store/test_faults.py",
    "tests/store/test_isolation.py",
    "tests/store/test_model.py",
    "tests/store/test_open.py",
    "tests/store/test_rows.py",
    "tests/store/test_sqlite.py",
    "tests/test_addresses.py",
    "tests/test_sourcecode.py",
    "tests/test_tiers.py",
]
