"""The default thread count: the cores other programs leave idle (rediffuse.runtime.idle_cores)."""
import os

import pytest
import torch

from rediffuse import runtime


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def test_idle_cores_counts_what_the_others_leave(monkeypatch):
    cores = _cores()
    ticks = iter([(100, 1000), (100, 2000)])  # nothing busy between the two samples
    monkeypatch.setattr(runtime, "_busy_ticks", lambda: next(ticks))
    assert runtime.idle_cores(0) == cores
    machine = os.cpu_count() or cores
    ticks = iter([(0, 0), (1000, 1000)])  # every core of the machine busy
    monkeypatch.setattr(runtime, "_busy_ticks", lambda: next(ticks))
    assert runtime.idle_cores(0) == 1  # never fewer than one
    ticks = iter([(0, 0), (1000, 1000 * machine)])  # one core's worth busy
    monkeypatch.setattr(runtime, "_busy_ticks", lambda: next(ticks))
    assert runtime.idle_cores(0) == max(1, cores - 1)


def test_idle_cores_falls_back_to_the_load_average(monkeypatch):
    monkeypatch.setattr(runtime, "_busy_ticks", lambda: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert runtime.idle_cores(0) == _cores()
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 0.0, 0.0))
    assert runtime.idle_cores(0) == 1


def test_threads_zero_means_the_idle_cores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, "idle_cores", lambda: 1)
    try:
        runtime.set_threads(0)
        assert torch.get_num_threads() == 1
        runtime.set_threads(2)
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="idle cores"):
            runtime.set_threads(-1)
    finally:
        torch.set_num_threads(before)
