"""The TOML configuration file (``--config``): gearmand options, [http], [access]."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from gearshift.errors import ConfigError
from gearshift.server.config import parse_args
from tests.ops.conftest import admin, wait_port
from tests.procs import free_port

CONFIG = """
port = 4799
listen = "127.0.0.1"
queue-type = "builtin"
job_retries = 3
verbose = "INFO"
exceptions = true
keepalive = false
job-handle-prefix = "CFG"

[http]
port = 8089
listen = "127.0.0.1"

[access]
admin = ["ops"]
admin_from_loopback = true
http_token = "t0ken"

[access.functions."billing.*"]
register = ["billing-worker"]
submit = ["web"]

[access.default]
submit = ["*"]
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gearshift.toml"
    path.write_text(text)
    return str(path)


def test_toml_options(tmp_path: Path) -> None:
    cfg = parse_args(["--config", write(tmp_path, CONFIG)]).config
    assert (cfg.port, cfg.listen, cfg.queue_type, cfg.job_retries) == (
        4799,
        "127.0.0.1",
        "builtin",
        3,
    )
    assert (cfg.verbose, cfg.exceptions, cfg.keepalive, cfg.handle_prefix) == (
        "INFO",
        True,
        False,
        "CFG",
    )
    assert (cfg.http, cfg.http_port, cfg.http_listen) == (True, 8089, "127.0.0.1")
    policy = cfg.access
    assert policy.enabled and policy.admin == {"ops"} and policy.http_token == "t0ken"
    assert policy.may_submit(b"billing.charge", "web")
    assert not policy.may_submit(b"billing.charge", "app")
    assert not policy.may_register(b"billing.charge", None)
    assert policy.may_register(b"billing.charge", "billing-worker")
    assert policy.may_submit(b"other", None) and policy.may_register(b"other", None)
    assert policy.has_function_rules
    assert policy.may_admin("127.0.0.1", None) and policy.may_admin("::1", None)
    assert policy.may_admin("10.0.0.5", "ops") and not policy.may_admin("10.0.0.5", "app")
    assert not policy.may_admin("::ffff:10.0.0.5", None)
    assert policy.may_admin("::ffff:127.0.0.1", None)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    cfg = parse_args(["--config", path, "-p", "5001", "--http-port", "0", "-j", "1"]).config
    assert (cfg.port, cfg.http_port, cfg.job_retries, cfg.handle_prefix) == (5001, 0, 1, "CFG")


def test_defaults_without_a_file() -> None:
    cfg = parse_args([]).config
    assert not cfg.http and not cfg.access.enabled and not cfg.access.has_function_rules
    assert parse_args(["-r", "http"]).config.http
    assert parse_args(["--http-port", "1234"]).config.http


@pytest.mark.parametrize(
    "text",
    [
        "bogus = 1\n",
        "port = [1, 2]\n",
        "port = \n",
        "[http]\nnope = 1\n",
        "[access]\nwho = 1\n",
        "[access]\nadmin = 5\n",
        "[access.functions.f]\nregister = [1]\n",
        "[access.functions.f]\nrun = ['x']\n",
        "help = true\n",
    ],
)
def test_bad_files_are_config_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        parse_args(["--config", write(tmp_path, text)])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        parse_args(["--config", str(tmp_path / "absent.toml")])


@pytest.mark.slow
def test_cli_runs_from_a_toml_file(tmp_path: Path) -> None:
    port, hport = free_port(), free_port()
    path = write(
        tmp_path,
        f'port = {port}\nlisten = "127.0.0.1"\nqueue-type = "builtin"\n'
        f'[http]\nport = {hport}\n[access]\nadmin = ["ops"]\n',
    )
    broken = tmp_path / "broken.toml"
    broken.write_text("x = ")
    bad = subprocess.run(
        [sys.executable, "-m", "gearshift", "server", "--config", str(broken), "--check-args"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "gearshift server:" in bad.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "gearshift", "server", "--config", path, "-l", "stderr"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_port(port)
        wait_port(hport)
        with urllib.request.urlopen(f"http://127.0.0.1:{hport}/api/status", timeout=10) as res:
            assert json.loads(res.read())["server"]["addresses"] == [f"127.0.0.1:{port}"]
        # Loopback is trusted for admin by default.
        assert admin(port, "maxqueue f 3").startswith("OK")
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.slow
def test_http_port_problems_stop_the_start() -> None:
    def start(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gearshift", "server", "-p", "0", "-L", "127.0.0.1",
             "-q", "builtin", *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        res = start("--http-port", str(busy.getsockname()[1]))
    assert res.returncode == 1 and "address already in use" in res.stderr
    res = start("--http-port", "70000")
    assert res.returncode == 1 and "invalid HTTP port" in res.stderr
    res = start("-r", "gopher")
    assert res.returncode == 2 and "unknown protocol" in res.stderr
