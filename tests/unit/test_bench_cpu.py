"""The benchmarks' CPU-per-unit figure: read from /proc, None where it cannot be read."""

import os
import sys

import pytest

from bench.cpu import cpu_seconds, per_unit

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@linux
def test_cpu_seconds_grow_with_the_work_a_process_does() -> None:
    before = cpu_seconds([os.getpid()])
    assert before is not None
    total = 0
    for i in range(3_000_000):  # bounded busy work, about a tenth of a second
        total += i * i
    after = cpu_seconds([os.getpid()])
    assert after is not None and after > before
    assert total > 0


@linux
def test_a_process_that_is_gone_gives_no_figure() -> None:
    assert cpu_seconds([os.getpid(), 2**22 + 1]) is None  # above Linux's pid_max


def test_per_unit_scales_and_refuses_what_it_cannot_divide() -> None:
    assert per_unit(1.0, 3.0, 4, 1e3) == 500.0  # 2 s over 4 units: 500 ms each
    assert per_unit(None, 3.0, 4, 1e3) is None
    assert per_unit(1.0, 3.0, 0, 1e3) is None
