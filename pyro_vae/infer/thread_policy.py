"""How many torch threads a fit uses: fixed at the start from the model's size and the cores.

Same seed, data and machine give bitwise-identical weights only at the same thread count:
above a few tens of thousands of numbers torch splits a reduction (a sum, a matrix
product's inner loop) between threads, and the partial sums are rounded differently
(``tests/test_reproducible.py``: a 784-input model's weights differ between one and two
threads after one epoch). So by default the count is chosen once, before the first step,
from what the model's size pays for and the machine's cores alone
(:func:`threads_that_pay`), never from what other processes are doing, and is kept for
the whole run: a run on a busy machine repeats the run on an idle one to the bit. Unless
the user fixes the count (``num_threads``, ``--num-threads`` or ``OMP_NUM_THREADS``):

* a model whose step is too small to split (fewer than :data:`MIN_WORK_PER_THREAD`
  multiply-adds per step and thread) gets one thread;
* otherwise it gets every core of the machine (shared among the processes of a DDP run).

The price is paid beside a busy process: intra-op threads wait for the one the scheduler
preempted, and the README's main job took 4.9x longer with two threads beside one busy
process than alone, 1.2x with one (``benchmarks/threads.py``, ``benchmarks/results/threads.json``).
``adaptive=True`` (``adaptive_threads``, ``--adaptive-threads``) opts into the load-adaptive
policy instead: the cores other processes leave idle, measured over a quarter of a second
at the start and again every :data:`RECHECK_S` seconds of training (:class:`ThreadPolicy`),
so a neighbour that starts later is made room for. A thread is given up only when two
readings in a row find the core held (one busy reading, such as a process starting or
exiting, is noise) and taken back as soon as a reading finds it free. The results then
depend on the load whenever the count changes them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from pathlib import Path

import torch

from pyro_vae.utils import available_cpus, fixed_threads

logger = logging.getLogger(__name__)

#: multiply-adds per step (batch size x weights) per thread: two threads from 1.6e7. On 2 cores
#: benchmarks/threads.py finds two threads 10% faster from about 4e7 and 4-9% faster at 1.6e7-3e7
#: (the README's main job is 2.2e7, and its epochs 1.24x faster with two: threads.json's
#: contention runs): worth having on an idle machine
MIN_WORK_PER_THREAD = 8e6
#: seconds of training between two looks at the machine's load
RECHECK_S = 2.0
#: the share of a core another process must use to count as holding it
BUSY_CORE = 0.3


def busy_cpu_seconds() -> float | None:
    """CPU seconds every process of the machine has spent busy so far (Linux ``/proc/stat``)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class ForeignLoad:
    """How busy *other* processes kept the CPUs while something ran.

    ``cores`` is (busy CPU time of the machine - this process's CPU time) / wall time: 0 on
    an otherwise idle machine, 1 when a neighbour kept one core busy; ``fraction`` divides
    it by the machine's cores.
    """

    def __init__(self) -> None:
        self.foreign, self.wall = 0.0, 0.0
        self.available = busy_cpu_seconds() is not None
        self._start: tuple[float | None, float, float] | None = None

    def start(self) -> None:
        self._start = (busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter())

    def stop(self) -> None:
        if self._start is None:
            return
        busy0, own0, t0 = self._start
        busy1, own1, t1 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
        if busy0 is not None and busy1 is not None:
            self.foreign += max(0.0, (busy1 - busy0) - (own1 - own0))
        self.wall += t1 - t0
        self._start = None

    @contextlib.contextmanager
    def measure(self):
        self.start()
        try:
            yield
        finally:
            self.stop()

    @property
    def cores(self) -> float | None:
        if not self.available or self.wall <= 0:
            return None
        return self.foreign / self.wall

    @property
    def fraction(self) -> float | None:
        cores = self.cores
        return None if cores is None else round(cores / (os.cpu_count() or 1), 3)


def work_per_step(model: torch.nn.Module, batch_size: int) -> float:
    """Multiply-adds of one forward pass over a batch, approximated as batch x weights."""
    return float(batch_size) * sum(p.numel() for p in model.parameters())


def threads_that_pay(work: float | None, cores: int) -> int:
    """The most threads worth using for steps of ``work`` multiply-adds."""
    if work is None:
        return cores
    return max(1, min(cores, int(work // MIN_WORK_PER_THREAD)))


class ThreadPolicy:
    """Sets torch's intra-op threads for a fit; with ``adaptive``, adjusts them to the machine's load.

    Args:
        fixed: the user's count (never changed); None: chosen here.
        work: multiply-adds of one training step (:func:`work_per_step`); None: not on a CPU.
        processes: the processes of the run on this machine (DDP), which share its cores.
        recheck_s: with ``adaptive``, seconds of training between two readings of the load.
        adaptive: follow the load (the count then depends on it, and with it the results);
            False: the count what the model's size pays for on the machine's cores, for the
            whole run.
    """

    def __init__(
        self,
        fixed: int | None,
        work: float | None = None,
        processes: int = 1,
        recheck_s: float = RECHECK_S,
        adaptive: bool = False,
    ) -> None:
        self.fixed = fixed or fixed_threads()
        self.cores = max(1, available_cpus() // processes)
        self.limit = threads_that_pay(work, self.cores)
        self.recheck_s = recheck_s
        self.adaptive = adaptive and self.fixed is None and self.limit > 1
        self.load = ForeignLoad()
        self.threads = self.fixed or self.limit
        self._fewer: int | None = None  # a lower count one reading asked for, awaiting a second
        self.seconds_at: dict[int, float] = {}  # training seconds spent at each thread count
        if self.adaptive:
            probe = ForeignLoad()
            with probe.measure():
                time.sleep(0.25)
            self.threads = self.allowed(probe.cores)
        self.reason = self.explain()
        _set(self.threads)

    def allowed(self, foreign_cores: float | None) -> int:
        busy = 0 if foreign_cores is None else math.floor(foreign_cores + 1 - BUSY_CORE)
        return max(1, min(self.limit, self.cores - busy))

    def explain(self) -> str:
        if self.fixed is not None:
            return f"{self.threads} torch threads, as set"
        if self.limit == 1 and self.cores > 1:
            return "1 torch thread: the model's steps are too small for more to pay"
        if self.adaptive:
            return f"{self.threads} torch thread(s): the cores other processes leave idle (of {self.cores})"
        return f"{self.threads} torch thread(s): one per core, fixed for the run whatever the load"

    def summary(self) -> str:
        """:meth:`explain`, and how long training ran at each count when the load changed it."""
        if len(self.seconds_at) < 2:
            return self.reason
        spent = ", ".join(f"{s:.0f} s at {n}" for n, s in sorted(self.seconds_at.items(), reverse=True))
        return f"{self.reason}; the load changed the count: {spent} thread(s)"

    def start_epoch(self) -> None:
        if self.adaptive:
            self.load.start()

    def end_epoch(self, seconds: float) -> None:
        """After an epoch of ``seconds`` training: once ``recheck_s`` seconds of load are measured,
        fit the threads to it."""
        self.seconds_at[self.threads] = self.seconds_at.get(self.threads, 0.0) + seconds
        if not self.adaptive:
            return
        self.load.stop()
        if self.load.wall < self.recheck_s:
            return
        # Our own threads spin while a neighbour holds their core: what they leave is the signal.
        wanted = self.allowed(self.load.cores)
        if wanted < self.threads and self._fewer is None:
            self._fewer, wanted = wanted, self.threads  # one busy reading: wait for a second
        elif wanted < self.threads:
            wanted, self._fewer = max(wanted, self._fewer), None
        else:
            self._fewer = None
        if wanted != self.threads:
            logger.info("using %d torch threads (other processes use %.1f cores)", wanted, self.load.cores)
            self.threads = wanted
            _set(wanted)
        self.load = ForeignLoad()


def _set(n: int) -> None:
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
