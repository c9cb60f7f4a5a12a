"""Scheduler policy without a model: FCFS admission, preemption of the newest, the victim waits at the head."""

from pabench.backends import KVLayout
from pabench.backends.paged import PagedBackend
from pabench.core import Sequence, SequenceStatus
from pabench.engine.scheduler import Scheduler, SchedulerConfig, SeqState

LAYOUT = KVLayout(num_layers=1, num_kv_heads=1, head_dim=8, dtype="fp32")


def make(num_pages=10, n=3, prompt=8, out=40, watermark=0.0):
    backend = PagedBackend(LAYOUT, page_size=4, num_pages=num_pages, max_num_seqs=8, max_model_len=64,
                           watermark=watermark)
    sched = Scheduler(backend, SchedulerConfig(max_num_seqs=8, max_batched_tokens=64, max_model_len=64))
    states = [SeqState(Sequence(i, [i + 1] * prompt), i, 0, prompt, out) for i in range(n)]
    for st in states:
        sched.add(st)
    return backend, sched, states


def sample_all(step):
    """What the engine does after a step: the KV is computed, one token is appended to every sequence."""
    for st in step.states:
        st.seq.num_computed_tokens = st.seq.num_tokens
        st.seq.append_token(7)


def test_fcfs_admission_then_preempt_newest_victim_waits_at_the_head():
    backend, sched, states = make()
    step = sched.schedule()
    assert step.kind == "prefill" and [s.request_id for s in step.states] == [0, 1, 2]  # 6 of 10 pages
    sample_all(step)
    kinds, preempted_at = [], None
    for i in range(12):
        step = sched.schedule()
        kinds.append(step.kind)
        if step.preempted and preempted_at is None:
            preempted_at = i
            assert [v.request_id for v in step.preempted] == [2]  # the most recently admitted goes first
            assert states[2].seq.status == SequenceStatus.WAITING and states[2].seq.page_table is None
            assert sched.waiting[0] is states[2]  # back at the head of the queue
        sample_all(step)
    assert preempted_at is not None
    # The pool is full after the preemption (the survivors grow into the freed pages): no ping-pong.
    assert "prefill" not in kinds[preempted_at:]
    assert sched.num_preemptions == 1
    # A sequence finishes: its pages come back and the victim is admitted first.
    sched.finish([states[0]])
    step = sched.schedule()
    assert step.kind == "prefill" and step.states == [states[2]]
    assert backend.block_manager.num_used_pages <= backend.num_pages
    backend.block_manager.check_invariants()


def test_watermark_keeps_room_for_growth():
    """Admission stops while fewer than `watermark` pages would stay free after the prompt's pages."""
    backend, sched, states = make(num_pages=10, n=5, prompt=8, watermark=0.2)  # 2 pages kept free
    step = sched.schedule()
    assert [s.request_id for s in step.states] == [0, 1, 2, 3]  # 4 x 2 pages; a 5th would leave 0 free
    assert backend.block_manager.num_free_pages == 2
    backend2, sched2, _ = make(num_pages=10, n=5, prompt=8, watermark=0.0)
    assert len(sched2.schedule().states) == 5  # without a watermark the pool is filled to the last page


def test_min_prefill_seqs_holds_prefill_until_enough_seats_are_free():
    import pytest

    from pabench.errors import ConfigError

    backend = PagedBackend(LAYOUT, page_size=4, num_pages=200, max_num_seqs=4, max_model_len=64)
    sched = Scheduler(backend, SchedulerConfig(max_num_seqs=4, max_batched_tokens=64, max_model_len=64,
                                               min_prefill_seqs=2))
    outs = [1, 2, 9, 9, 9, 9, 9]  # the first two finish early, one step apart
    states = [SeqState(Sequence(i, [i + 1] * 4), i, 0, 4, o) for i, o in enumerate(outs)]
    for st in states:
        sched.add(st)
    kinds = []
    while sched.has_work and len(kinds) < 40:
        step = sched.schedule()
        kinds.append((step.kind, len(step.states)))
        sample_all(step)
        sched.finish([st for st in step.states if st.num_generated >= st.output_len])
    prefills = [n for kind, n in kinds if kind == "prefill"]
    assert prefills[0] == 4  # nothing running: admit what fits
    assert all(n >= 2 for n in prefills[:-1]) and sum(prefills) == len(outs)
    assert kinds[1:3] == [("decode", 3), ("prefill", 2)]  # 1 seat free: held back; 2 free: admitted
    with pytest.raises(ConfigError):
        SchedulerConfig(max_num_seqs=4, min_prefill_seqs=5)
