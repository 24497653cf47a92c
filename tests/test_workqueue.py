"""The reconcile threads' queue (ftstudy.kube.workqueue): each study once in line, one thread at a time on it, a
wake-up during a pass never lost, and each study at the time its last pass asked for."""

from __future__ import annotations

import threading
import time

from ftstudy.kube.workqueue import WorkQueue


def test_a_key_asked_for_several_times_waits_in_line_once() -> None:
    queue = WorkQueue()
    for _ in range(3):
        queue.add("a")
    queue.add("b")
    assert queue.waiting() == 2
    assert queue.get() == "a"
    assert queue.get() == "b"
    assert queue.waiting() == 0


def test_a_key_comes_back_when_its_pass_said_and_a_wake_up_brings_it_forward() -> None:
    queue = WorkQueue()
    queue.add("a")
    assert queue.get() == "a"
    queue.done("a", time.monotonic() + 0.3)
    started = time.monotonic()
    assert queue.get() == "a"
    assert time.monotonic() - started >= 0.25  # not before its time
    queue.done("a", time.monotonic() + 60)
    threading.Timer(0.1, queue.add, args=("a",)).start()  # woken: due now, not in a minute
    started = time.monotonic()
    assert queue.get() == "a"
    assert time.monotonic() - started < 5


def test_a_wake_up_during_a_pass_is_a_pass_right_after_it() -> None:
    queue = WorkQueue()
    queue.add("a")
    assert queue.get() == "a"
    queue.add("a")  # a trainer reported while the study was being reconciled
    assert queue.waiting() == 0  # not a second pass at the same time
    queue.done("a", time.monotonic() + 60)
    assert queue.waiting() == 1
    started = time.monotonic()
    assert queue.get() == "a"
    assert time.monotonic() - started < 1


def test_a_key_done_with_no_next_time_is_gone_until_asked_for() -> None:
    queue = WorkQueue()
    queue.add("a")
    assert queue.get() == "a"
    queue.done("a", None)
    assert queue.waiting() == 0


def test_keys_come_in_order_of_their_times() -> None:
    queue = WorkQueue()
    now = time.monotonic()
    queue.add("late", now + 0.2)
    queue.add("early", now + 0.1)
    queue.add("now", now)
    assert [queue.get() for _ in range(3)] == ["now", "early", "late"]


def test_threads_share_the_keys_and_never_process_one_key_twice_at_once() -> None:
    queue = WorkQueue()
    active: set[str] = set()
    overlaps: list[str] = []
    passes: dict[str, int] = {}
    lock = threading.Lock()

    def work() -> None:
        while (key := queue.get()) is not None:
            with lock:
                if key in active:
                    overlaps.append(key)
                active.add(key)
                passes[key] = passes.get(key, 0) + 1
            time.sleep(0.005)
            with lock:
                active.discard(key)
            queue.done(key, time.monotonic() + 0.01 if passes[key] < 5 else None)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    keys = [f"study-{i}" for i in range(20)]
    for _ in range(3):  # wake-ups arriving while keys are being processed
        for key in keys:
            queue.add(key)
        time.sleep(0.01)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(passes.get(k, 0) >= 5 for k in keys):
        time.sleep(0.02)
    queue.close()
    for thread in threads:
        thread.join(5)
    assert not overlaps
    assert all(passes.get(k, 0) >= 5 for k in keys), passes
    assert not any(thread.is_alive() for thread in threads), "close() must end every get()"
