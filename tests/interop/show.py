"""Print differential transcripts: ``python -m tests.interop.show [-s gearmand] NAME...``.

For working on a difference: plays the named conversations (substring match) against
fresh servers and prints gearmand's transcript, then the diff of gearshift's transcript
against what the differential test expects (gearmand's, or the DELIBERATE_DIFFERENCES
entry).  ``-s gearmand`` or ``-s gearshift`` prints just that server's transcript.
"""

from __future__ import annotations

import argparse
import difflib
import sys

from tests.interop.conversations import CONVERSATIONS
from tests.interop.harness import Conversation, play
from tests.interop.test_differential import DELIBERATE_DIFFERENCES
from tests.procs import Gearmand, Gearshift, ServerProcess


def _play(cls: type[ServerProcess], conv: Conversation) -> list[str]:
    srv = cls(conv.server_args)
    try:
        return play(srv.start().port, conv.steps)
    finally:
        srv.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.interop.show")
    parser.add_argument("-s", "--server", choices=["gearmand", "gearshift", "both"], default="both")
    parser.add_argument("names", nargs="*", help="substrings of conversation names (default: all)")
    args = parser.parse_args(argv)
    status = 0
    for conv in CONVERSATIONS:
        if args.names and not any(n in conv.name for n in args.names):
            continue
        print(f"=== {conv.name}  {' '.join(conv.server_args)}")
        if conv.doc:
            print(f"    ({conv.doc})")
        if args.server != "both":
            cls = Gearmand if args.server == "gearmand" else Gearshift
            for line in _play(cls, conv):
                print("   ", line)
            continue
        ref = _play(Gearmand, conv)
        ours = _play(Gearshift, conv)
        diff = DELIBERATE_DIFFERENCES.get(conv.name)
        want = list(diff.gearshift) if diff else ref
        for line in ref:
            print("   ", line)
        delta = list(difflib.unified_diff(want, ours, "expected", "gearshift", lineterm=""))
        if diff:
            print(f"    deliberate difference: {diff.reason}")
        if delta:
            status = 1
            print("    gearshift differs:")
            for line in delta:
                print("   ", line)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
