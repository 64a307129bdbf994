"""The ``gearshift`` command: ``gearshift <server|submit|worker|admin|bench> ...``.

Each subcommand lives in its own module ``gearshift.cli.<name>`` with a
``main(argv: list[str]) -> int``; it is imported only when used.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "server": "run a Gearman job server (accepts gearmand's flags)",
    "submit": "submit jobs, like libgearman's `gearman -f`",
    "worker": "run a worker, like `gearman -w -f F -- command`",
    "admin": "query a server, like `gearadmin`",
    "bench": "load-generate against any Gearman server",
}


def usage() -> str:
    lines = ["usage: gearshift <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, text in COMMANDS.items()]
    lines += ["", "`gearshift <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        from gearshift._version import __version__

        print(f"gearshift {__version__}")
        return 0
    name = args[0]
    if name not in COMMANDS:
        print(f"gearshift: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"gearshift.cli.{name}")
    code: int = module.main(args[1:])
    return code
