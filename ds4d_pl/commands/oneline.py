"""argparse for the commands outside LightningCLI (``prepare``, ``synth``, ``eval``,
``weights``, ``render``, ``export``, ``view``), with usage errors in one line instead of the full
usage block followed by the message."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors print ``PROG: error: MESSAGE`` and a pointer to
    ``--help``, and exit with status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n({self.prog} --help lists the options)\n")
        self.exit(2)
