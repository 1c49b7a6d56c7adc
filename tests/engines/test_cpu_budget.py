"""The local model's thread count follows the cores free now (engines/cpu_budget.py), and
llama.cpp's OpenMP threads are told to sleep soon, before llama_cpp is ever loaded.

Machine readings are injected: no test depends on how busy the machine running it is, and none
measures time."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.domain.messages import ChatMessage, ChatRequest, Role, accumulate
from engines import cpu_budget, llama_local
from engines.cpu_budget import CpuBudget, CpuReading, choose_threads, others_busy

ROOT = Path(__file__).resolve().parents[2]


def test_threads_are_the_free_cores_never_zero_never_above_the_limit():
    assert choose_threads(usable=2, busy_elsewhere=0.0, limit=2) == 2  # quiet machine
    assert choose_threads(usable=2, busy_elsewhere=0.3, limit=2) == 2  # a little background
    assert choose_threads(usable=2, busy_elsewhere=1.0, limit=2) == 1  # a spinner on one core
    assert choose_threads(usable=2, busy_elsewhere=7.5, limit=2) == 1  # overloaded: one thread
    assert choose_threads(usable=16, busy_elsewhere=3.0, limit=8) == 8  # physical cores cap it
    assert choose_threads(usable=16, busy_elsewhere=10.2, limit=8) == 6
    assert choose_threads(usable=1, busy_elsewhere=0.0, limit=8) == 1  # affinity: one CPU
    assert choose_threads(usable=1.5, busy_elsewhere=0.0, limit=8) == 2  # a 1.5-core quota
    assert choose_threads(usable=0.5, busy_elsewhere=0.0, limit=8) == 1


def test_others_busy_leaves_out_this_process_own_cpu_time():
    before = CpuReading(busy_s=100.0, total_s=400.0, own_s=10.0, wall_s=50.0)
    # two cores busy for one second, 1.5 s of it this process's own threads
    after = CpuReading(busy_s=102.0, total_s=402.0, own_s=11.5, wall_s=51.0)
    assert others_busy(before, after) == pytest.approx(0.5)
    # own time counted by another clock can exceed the machine's: never negative
    assert others_busy(before, CpuReading(100.5, 401.0, 11.0, 51.0)) == 0.0
    assert others_busy(before, before) == 0.0


class FakeMachine:
    """Readings of a 2-CPU machine whose other processes keep ``busy`` cores busy; this process
    uses ``own`` cores. Time moves only when the test says so."""

    def __init__(self):
        self.now = 1000.0
        self.busy, self.own = 0.0, 0.0
        self.runnable = 1
        self._busy_s = self._own_s = 0.0
        self.reads = 0

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._busy_s += (self.busy + self.own) * seconds
        self._own_s += self.own * seconds

    def read(self) -> CpuReading:
        self.reads += 1
        return CpuReading(busy_s=self._busy_s, total_s=2 * self.now, own_s=self._own_s,
                          wall_s=self.now, runnable=self.runnable)

    def clock(self) -> float:
        return self.now


def test_budget_follows_the_machine_and_rereads_it_only_every_recheck():
    machine = FakeMachine()
    budget = CpuBudget(2, read=machine.read, clock=machine.clock, usable=2, recheck_s=0.25)
    assert budget.threads_now() == 2  # first look: one task running (the reader itself)
    machine.busy, machine.own = 1.0, 1.0  # another program takes a core; we decode on one
    machine.advance(0.1)
    reads = machine.reads
    assert budget.threads_now() == 2  # too soon to look again: the same answer, no read
    assert machine.reads == reads
    machine.advance(0.2)
    assert budget.threads_now() == 1
    assert budget.busy_elsewhere == pytest.approx(1.0)
    machine.busy = 0.0  # it ended
    machine.advance(0.3)
    assert budget.threads_now() == 2


def test_after_a_long_pause_the_run_queue_decides_not_a_stale_average():
    machine = FakeMachine()
    budget = CpuBudget(2, read=machine.read, clock=machine.clock, usable=2, stale_s=5.0)
    budget.threads_now()
    machine.busy = 0.0
    machine.advance(600.0)  # ten quiet minutes ...
    machine.runnable = 4  # ... and now three other tasks are running
    assert budget.threads_now() == 1
    machine.runnable = 1
    machine.advance(600.0)
    assert budget.threads_now() == 2


def test_affinity_and_quota_bound_the_usable_cores(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert cpu_budget.cgroup_cpu_limit(cpu_max) == pytest.approx(1.5)
    cpu_max.write_text("max 100000\n")
    assert cpu_budget.cgroup_cpu_limit(cpu_max) is None
    assert cpu_budget.cgroup_cpu_limit(tmp_path / "missing") is None
    budget = CpuBudget(8, read=FakeMachine().read, usable=1)
    assert budget.limit == 1 and budget.threads_now() == 1


def test_a_real_reading_of_this_machine_is_sane():
    reading = cpu_budget.read_machine()
    assert reading.total_s >= reading.busy_s >= 0 and reading.own_s > 0


def _python(code: str, **env) -> dict:
    import os  # the child's environment starts from ours

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120,
                          env={**{k: v for k, v in os.environ.items()
                                  if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_openmp_wait_policy_is_set_before_llama_cpp_loads():
    # libgomp reads its environment once, when llama_cpp's libraries load: importing the
    # engine must set it, without loading llama_cpp, and a later load must see it
    seen = _python(
        "import json, os, sys\n"
        "import engines.llama_local\n"
        "before = 'llama_cpp' in sys.modules\n"
        "import llama_cpp\n"
        "print(json.dumps({'llama_cpp_before': before,"
        " 'spincount': os.environ.get('GOMP_SPINCOUNT')}))\n")
    assert seen == {"llama_cpp_before": False, "spincount": cpu_budget.SPINCOUNT}


def test_the_users_own_openmp_setting_wins_and_too_late_is_reported():
    seen = _python("import json, os\nimport engines.llama_local\n"
                   "print(json.dumps([os.environ.get('GOMP_SPINCOUNT')]))", OMP_WAIT_POLICY="active")
    assert seen == [None]
    seen = _python("import json, os\nimport llama_cpp\n"
                   "from engines.cpu_budget import prepare_openmp\n"
                   "print(json.dumps([prepare_openmp(), os.environ.get('GOMP_SPINCOUNT')]))")
    assert seen == [False, None]


def _request() -> ChatRequest:
    # a hot sampler with a seed: the same text only if the logits are the same to the last bit
    return ChatRequest(model="m", temperature=1.0, seed=7, max_tokens=16, messages=(
        ChatMessage(Role.USER, "Tell me about the sea."),))


@pytest.mark.local_model
def test_the_engine_sets_the_free_cores_on_its_context_during_a_reply(monkeypatch,
                                                                      fresh_engine):
    import llama_cpp  # the engine has loaded it: to read the context's thread count

    machine = FakeMachine()
    # every look at the clock moves it past the recheck interval: each decode call reads
    # the machine
    def clock() -> float:
        machine.advance(1.0)
        return machine.now

    monkeypatch.setattr(llama_local, "CpuBudget", lambda limit: CpuBudget(
        2, read=machine.read, clock=clock, usable=2))
    engine = fresh_engine()
    assert engine.n_threads == llama_local.physical_cores()  # the ceiling, as before

    def context_threads() -> int:
        return engine.call_on_model_thread(lambda llm: llama_cpp.llama_n_threads(llm._ctx.ctx))

    machine.busy = 1.5  # another program keeps 1.5 of the 2 cores busy
    reply = accumulate(engine.stream(_request(), threading.Event()))
    assert reply.usage.completion_tokens > 0
    assert context_threads() == 1 and engine.threads_in_use == 1
    assert set(engine.threads_used) == {1}

    machine.busy = 0.0  # it ended: the next reply uses both cores
    again = accumulate(engine.stream(_request(), threading.Event()))
    assert context_threads() == 2
    assert engine.threads_used.get(2, 0) > 0
    # llama.cpp splits each operation's output rows over the threads, never a sum: the thread
    # count leaves the logits, and so a seeded reply, unchanged
    assert again.text == reply.text


@pytest.mark.local_model
def test_a_thread_setting_is_kept_whatever_the_machine_says(monkeypatch, fresh_engine):
    import llama_cpp  # the engine has loaded it: to read the context's thread count

    machine = FakeMachine()
    machine.busy = 2.0
    monkeypatch.setattr(llama_local, "CpuBudget", lambda limit: CpuBudget(
        2, read=machine.read, clock=machine.clock, usable=2))
    engine = fresh_engine(n_threads=2)
    accumulate(engine.stream(_request(), threading.Event()))
    assert engine.call_on_model_thread(lambda llm: llama_cpp.llama_n_threads(llm._ctx.ctx)) == 2
    assert set(engine.threads_used) == {2}
