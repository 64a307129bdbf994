"""contrib/gearshift.service is a valid unit whose command line the server accepts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gearshift.server.config import parse_args

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "gearshift.service"


def exec_start() -> list[str]:
    text = UNIT.read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def test_unit_command_line_parses(tmp_path: Path) -> None:
    argv = exec_start()
    assert argv[:2] == ["/usr/local/bin/gearshift", "server"]
    conf = tmp_path / "gearshift.toml"
    conf.write_text("port = 4730\n[http]\nport = 9100\n")
    args = [str(conf) if a == "/etc/gearshift/gearshift.toml" else a for a in argv[2:]]
    cfg = parse_args(args).config
    assert cfg.queue_type == "sqlite:////var/lib/gearshift/gearshift.db"
    assert (cfg.log_file, cfg.http, cfg.http_port) == ("stderr", True, 9100)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_verifies(tmp_path: Path) -> None:
    gearshift = Path(sys.executable).with_name("gearshift")
    if not gearshift.exists():
        pytest.skip("the gearshift script is not installed in this environment")
    unit = tmp_path / "gearshift.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/gearshift", str(gearshift)))
    res = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (res.stdout + res.stderr).splitlines()
        if "gearshift.service" in line and "Documentation" not in line
    ]
    assert problems == [], res.stderr
