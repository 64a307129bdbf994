"""Store settings that cannot work stop ``gearshift server`` at once: exit 2, one line.

The server builds its store while it checks the command line (without connecting), so
such a setting is refused before it daemonizes, writes a pid file or opens anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gearshift.errors import ConfigError
from gearshift.store import open_store
from tests.store.conftest import PG_URL

SERVER = [sys.executable, "-m", "gearshift", "server"]
CLUSTER = "needs a PostgreSQL queue (--queue postgresql://...); the {} queue cannot be shared"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER, "-p", "0", "-L", "127.0.0.1", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--cluster-name", "c"], "--cluster-name " + CLUSTER.format("sqlite")),
        (["-q", "redis", "--cluster-name", "c"], "--cluster-name " + CLUSTER.format("redis")),
        (
            ["--queue", "redis://127.0.0.1:6379/0?cluster=c"],
            "?cluster= " + CLUSTER.format("redis"),
        ),
        (["-q", "builtin", "--cluster-lease", "5"], "--cluster-lease " + CLUSTER.format("memory")),
        (
            ["--queue", "mysql://root@127.0.0.1/test", "--cluster-node", "n1"],
            "--cluster-node " + CLUSTER.format("mysql"),
        ),
        (["--queue", "sqlite:///q.db?cluster=c"], "?cluster= " + CLUSTER.format("sqlite")),
        (
            ["-q", "libsqlite3", "--libsqlite3-db", "q.db", "--cluster-heartbeat", "1"],
            "--cluster-heartbeat " + CLUSTER.format("sqlite"),
        ),
        (["-q", "libmemcached"], "-q libmemcached is not supported: gearshift has no such queue"),
        (
            ["-q", "libtokyocabinet"],
            "-q libtokyocabinet is not supported: gearshift has no such queue",
        ),
        (
            ["--libmemcached-servers", "127.0.0.1:11211"],
            "--libmemcached-servers is not supported: gearshift has no libmemcached queue",
        ),
        (
            ["-q", "redis", "--libtokyocabinet-file", "q.tcb"],
            "--libtokyocabinet-file is not supported: gearshift has no libtokyocabinet queue",
        ),
        (["--queue", "sqlite:///q.db?bogus=1"], "unknown option(s) bogus"),
        (["-q", "libsqlite3"], "-q libsqlite3 needs --libsqlite3-db FILE"),
        (["--queue", "sqlite:///q.db?table=bad-name"], "invalid table name 'bad-name'"),
        (
            ["--libsqlite3-db", "q.db"],
            "--libsqlite3-db is a setting of -q libsqlite3; it does not apply to the default",
        ),
        (
            ["-q", "redis", "--mysql-host", "db1"],
            "--mysql-host is a setting of -q MySQL; it does not apply to -q redis",
        ),
        (
            ["--queue", "sqlite:///q.db", "--libsqlite3-table", "t"],
            "--libsqlite3-table is a setting of -q libsqlite3; it does not apply to a --queue URL",
        ),
        (
            ["-q", "Postgres", "--redis-prefix", "p"],
            "--redis-prefix is a setting of -q redis; it does not apply to -q Postgres",
        ),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_refused_at_start_with_one_line(tmp_path: Path, args: list[str], expect: str) -> None:
    pid_file = tmp_path / "pid"
    log_file = tmp_path / "log"
    done = run("-d", "-P", str(pid_file), "-l", str(log_file), *args, cwd=tmp_path)
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gearshift server: "), lines
    assert expect in lines[0]
    # Refused before anything was opened: no daemon, pid file, log file or queue file.
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_postgres_cluster_is_accepted() -> None:
    done = run("--check-args", "--queue", f"{PG_URL}?table=t&cluster=c&lease=6")
    assert (done.returncode, done.stderr) == (0, ""), done


def test_help_says_what_is_refused() -> None:
    done = subprocess.run([*SERVER, "--help"], capture_output=True, text=True, timeout=30)
    text = " ".join(done.stdout.split())
    assert "libmemcached and libtokyocabinet are refused at start" in text
    assert "--libmemcached-servers" in text and "not supported: refused at start" in text
    assert "refused with any other queue" in text


@pytest.mark.parametrize("queue", [None, "builtin", "redis://127.0.0.1/0", "mysql://r@h/d"])
def test_open_store_refuses_cluster_settings(queue: str | None) -> None:
    with pytest.raises(ConfigError, match="--cluster-name needs a PostgreSQL queue"):
        open_store(queue, {"cluster-name": "c"})
