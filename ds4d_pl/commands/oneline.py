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

    def add_run_arguments(self, default_out: str) -> None:
        """The options of commands that load a finished run (``render``, ``export``)."""
        self.add_argument(
            "run", help="run directory (config.yaml + checkpoints/last.ckpt) or checkpoint"
        )
        self.add_argument("--ckpt", default=None, help="another checkpoint of that run")
        self.add_argument("--config", default=None, help="another config to rebuild the model from")
        self.add_argument("--out", default=None, help=f"output folder (default: {default_out})")

    def weights_paths(self, items: list[str]) -> dict[str, str]:
        """``--weights NAME=PATH`` items as ``{name: path}``; a malformed item or an unknown
        network name is a usage error."""
        from ds4d_pl.weights import REGISTRY

        explicit: dict[str, str] = {}
        for item in items:
            name, sep, path = item.partition("=")
            if not sep or not path:
                self.error(f"--weights expects NAME=PATH, got {item!r}")
            if name not in REGISTRY:
                self.error(f"--weights: unknown network {name!r}; known: {', '.join(REGISTRY)}")
            explicit[name] = path
        return explicit
