"""The `mbp` command and `python -m mbp`.

Until the CLI's own handlers are in place, Ctrl-C, SIGTERM and SIGHUP end the run at once with
one line: the imports take a tenth of a second, and nothing has been written yet.
"""

import os
import signal
import sys


def _early(signum: int, frame: object) -> None:
    names = {int(signal.SIGINT): "interrupted", int(signal.SIGHUP): "hung up"}
    word = names.get(signum, "terminated")
    try:
        sys.stderr.write(f"mbp: error: {word}\n")
        sys.stderr.flush()
    finally:
        os._exit(128 + signum)


def main() -> None:
    """Console-script entry point."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _early)
    from mbp.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
