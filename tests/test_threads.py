"""The ds4d thread count: one per usable CPU, or the user's OMP_NUM_THREADS."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest
import torch

from ds4d_pl import cli, threads
from ds4d_pl.threads import choose_threads


def test_one_thread_per_cpu_the_process_may_use() -> None:
    # Pinned to 3 of however many cores the machine has: 3 threads, not os.cpu_count().
    assert choose_threads({0, 5, 7}, None) == 3
    assert choose_threads({2}, "") == 1


def test_users_omp_num_threads_wins_even_above_the_usable_cpus() -> None:
    assert choose_threads({0, 1, 2, 3}, "1") == 1
    assert choose_threads({0}, " 6 ") == 6
    assert choose_threads({0, 1}, "4,2") == 4  # OpenMP's per-level list: the outer level


def test_unknown_affinity_falls_back_to_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 5)
    assert choose_threads(None, None) == 5
    monkeypatch.setattr(threads.os, "cpu_count", lambda: None)
    assert choose_threads(None, None) == 1


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5", ",3"])
def test_bad_omp_num_threads_is_named_in_the_error(bad: str) -> None:
    with pytest.raises(ValueError, match=r"OMP_NUM_THREADS=.*not a positive integer"):
        choose_threads({0, 1}, bad)


_PROBE = """
import os, sys, types
os.sched_getaffinity = lambda pid: {0, 1, 2}  # as if pinned to 3 CPUs
probe = types.ModuleType("ds4d_pl.commands._thread_probe")
def main(argv):
    import torch
    print("threads", torch.get_num_threads())
    return 0
probe.main = main
sys.modules[probe.__name__] = probe
from ds4d_pl import cli
cli.COMMANDS["probe"] = ("_thread_probe", "test command")
cli.main(["probe"])
"""


def _run_probe(omp: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    return subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(("omp", "expected"), [(None, 3), ("1", 1)])
def test_the_ds4d_entry_point_sets_torch_threads_before_the_command_runs(
    omp: str | None, expected: int
) -> None:
    proc = _run_probe(omp)
    assert proc.returncode == 0, proc.stderr
    assert f"threads {expected}" in proc.stdout


def test_the_entry_point_rejects_a_bad_omp_num_threads() -> None:
    proc = _run_probe("many")
    assert proc.returncode == 2
    assert "OMP_NUM_THREADS='many' is not a positive integer" in proc.stderr


def test_main_called_after_importing_torch_keeps_the_callers_thread_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []
    probe = types.ModuleType("ds4d_pl.commands._thread_probe")
    probe.main = lambda argv: seen.append(torch.get_num_threads()) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, probe.__name__, probe)
    monkeypatch.setitem(cli.COMMANDS, "probe", ("_thread_probe", "test command"))
    monkeypatch.setattr(threads, "usable_cpus", lambda: {0, 1, 2, 3, 4})
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    before = torch.get_num_threads()
    with pytest.raises(SystemExit) as done:
        cli.main(["probe"])
    assert done.value.code == 0 and seen == [before]


def test_configure_threads_sets_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cpus", lambda: {0})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert threads.configure_threads() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_idle_openmp_threads_sleep_unless_the_user_says_otherwise(
    given: str | None, expected: str
) -> None:
    """A fresh process (OpenMP starts with torch's import, after configure_threads) gets passive
    waits; a user's own OMP_WAIT_POLICY is kept."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    code = (
        "import os, sys; from ds4d_pl.threads import configure_threads; configure_threads(); "
        "assert 'torch' in sys.modules; print(os.environ['OMP_WAIT_POLICY'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == expected
