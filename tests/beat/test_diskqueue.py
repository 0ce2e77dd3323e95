"""The disk queue on its own: order, acknowledgement across reopen, torn records, the size cap."""
from __future__ import annotations

import os

import pytest

from wirebeat.diskqueue import HEADER, DiskQueue, DiskQueueError


def _batch(first: int, n: int) -> list[tuple[str, dict]]:
    return [(f"id-{i}", {"n": i, "text": "x" * 50}) for i in range(first, first + n)]


def _drain(queue: DiskQueue, ack: bool = True) -> list[str]:
    ids = []
    while (item := queue.get(0.01)) is not None:
        batch, position, size = item
        ids += [doc_id for doc_id, _ in batch]
        if ack:
            queue.ack(position, len(batch), size)
    return ids


def test_batches_come_back_in_order_and_acknowledged_ones_never_again(tmp_path):
    queue = DiskQueue(str(tmp_path), 10**6)
    for first in (0, 3, 6):
        assert queue.append(_batch(first, 3))
    item = queue.get(0.01)
    assert item is not None and [d for d, _ in item[0]] == ["id-0", "id-1", "id-2"]
    queue.ack(item[1], 3, item[2])
    queue.close()
    # Reopened as after a crash: what was not acknowledged is there, once.
    again = DiskQueue(str(tmp_path), 10**6)
    assert again.replayed == 6
    assert _drain(again) == [f"id-{i}" for i in range(3, 9)]
    again.close()
    assert DiskQueue(str(tmp_path), 10**6).replayed == 0


def test_a_record_cut_short_by_a_crash_is_cut_off_and_counted(tmp_path):
    queue = DiskQueue(str(tmp_path), 10**6)
    queue.append(_batch(0, 2))
    queue.append(_batch(2, 2))
    queue.close()
    [segment] = [p for p in tmp_path.iterdir() if p.name.startswith("seg-")]
    os.truncate(segment, segment.stat().st_size - 7)       # the last write never finished
    again = DiskQueue(str(tmp_path), 10**6)
    assert again.torn_records == 1 and again.replayed == 2
    assert _drain(again) == ["id-0", "id-1"]
    assert again.append(_batch(9, 1))                        # appends go on after the cut
    assert _drain(again) == ["id-9"]


def test_the_size_cap_refuses_batches_until_acknowledged(tmp_path):
    one = len(HEADER.pack(0, 0, 0)) + len(__import__("orjson").dumps(_batch(0, 3)))
    queue = DiskQueue(str(tmp_path), 2 * one)
    assert queue.append(_batch(0, 3)) and queue.append(_batch(3, 3))
    assert not queue.append(_batch(6, 3))
    assert _drain(queue) == [f"id-{i}" for i in range(6)]
    assert queue.append(_batch(6, 3))


def test_segments_roll_over_and_acknowledged_ones_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr("wirebeat.diskqueue.SEGMENT_BYTES", 500)
    queue = DiskQueue(str(tmp_path), 10**6, fsync="never")
    for first in range(0, 30, 3):
        queue.append(_batch(first, 3))
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("seg-")]) > 3
    assert _drain(queue) == [f"id-{i}" for i in range(30)]
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("seg-")]) == 1


def test_a_bad_fsync_policy_is_named():
    with pytest.raises(DiskQueueError, match="queue.disk.fsync: 'sometimes' is not one of always, interval, never"):
        DiskQueue("/nonexistent", 10, fsync="sometimes")
