"""Cooperative cancellation (features.deadline): work stops at its next checkpoint."""
from __future__ import annotations

import threading
import time

import pytest

from features import deadline


def test_checkpoint_outside_a_deadline_only_counts():
    before = deadline.checkpoints_passed()
    for _ in range(3):
        deadline.checkpoint()
    assert deadline.checkpoints_passed() > before


def test_work_stops_at_its_next_checkpoint_once_cancelled():
    stop = deadline.Deadline(None)
    done = []

    def work():
        for i in range(10_000):
            deadline.checkpoint()
            done.append(i)
            time.sleep(0.001)
        return "finished"

    raised = []
    worker = threading.Thread(target=lambda: raised.append(pytest.raises(deadline.Cancelled, deadline.run_until,
                                                                         stop, work)))
    worker.start()
    time.sleep(0.05)
    stop.cancel()
    worker.join(2)
    assert not worker.is_alive() and raised and "cancelled" in str(raised[0].value)
    assert 0 < len(done) < 10_000


def test_a_deadline_expires_on_its_own_and_is_per_context():
    expired = deadline.Deadline(0.01)
    time.sleep(0.02)
    with pytest.raises(deadline.Cancelled, match="past its deadline of 0.01 s"):
        deadline.run_until(expired, lambda: None)
    deadline.checkpoint()  # outside run_until again: no deadline applies
