"""How deliveries created together come to share queue jobs."""

from __future__ import annotations

from gateway.events import (
    DELIVER_JOB,
    DELIVER_MANY_JOB,
    JobGrouper,
    Work,
    deliver_work,
    merge_deliveries,
    run_work,
)


def test_grouper_key_reused_size_times() -> None:
    grouper = JobGrouper(size=3)
    keys = [grouper.key() for _ in range(7)]

    assert keys[0] == keys[1] == keys[2]
    assert keys[3] == keys[4] == keys[5]
    assert len({keys[0], keys[3], keys[6]}) == 3


def test_merge_makes_one_job_per_shared_key() -> None:
    grouper = JobGrouper(size=2)
    shared = [
        Work(DELIVER_JOB, grouper.key(), {"delivery_id": f"msg_{i}"}) for i in range(3)
    ]
    alone = deliver_work("msg_retry", 1, scheduled=123.0)
    run = run_work("run_1")

    merged = merge_deliveries([shared[0], run, shared[1], alone, shared[2]])

    assert [item.function for item in merged] == [
        DELIVER_MANY_JOB,
        "run_pipeline",
        DELIVER_JOB,
        DELIVER_JOB,
    ]
    assert merged[0].kwargs == {"delivery_ids": ["msg_0", "msg_1"]}
    assert merged[0].key == shared[0].key
    assert merged[2] == alone
    assert merged[3] == shared[2]


def test_merge_leaves_distinct_keys_alone() -> None:
    work = [deliver_work(f"msg_{i}", 0) for i in range(4)]

    assert merge_deliveries(work) == work
