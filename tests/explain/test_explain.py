"""`pabench explain`: the scenarios' structured event logs, the snapshots' ref counts, the renderers and the CLI."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pabench.cli import app
from pabench.cli.learn import SCENARIO_NAMES
from pabench.errors import ConfigError, SequenceStateError
from pabench.explain import SCENARIOS, ContiguousSlab, Event, Step, Walkthrough, run_scenario
from pabench.explain.render import render_plain, render_rich

runner = CliRunner()


def first(steps: list[Step], kind: str) -> tuple[int, Event]:
    """(step index, event) of the first event of `kind`."""
    for i, step in enumerate(steps):
        for event in step.events:
            if event.kind == kind:
                return i, event
    raise AssertionError(f"no {kind} event")


def page(step: Step, page_id: int):
    return step.pool.pages[page_id]


def table(step: Step, seq_id: int):
    return next(t for t in step.tables if t.seq_id == seq_id)


@pytest.fixture(scope="module")
def tour():
    return run_scenario("tour")


# ---- the tour's story, in order ---------------------------------------------------------------------------------

def test_tour_events_come_in_the_documented_order(tour):
    kinds = [e.kind for s in tour for e in s.events]
    order = [kinds.index(k) for k in ("prefix_hit", "fork", "cow", "preempt")]
    assert order == sorted(order), kinds
    assert "admit_fail_contiguous" in kinds and "finish" in kinds and "free" in kinds
    assert kinds.index("admit_fail_contiguous") < kinds.index("cow")  # the n=2 request did not fit contiguously


def test_tour_prefix_hit_shares_pages_without_new_memory(tour):
    i, hit = first(tour, "prefix_hit")
    before, after = tour[i - 1], tour[i]
    assert hit.seq_ids == (1,) and hit.page_ids == (0, 1)
    for page_id in hit.page_ids:
        assert page(before, page_id).ref_count == 1
        assert page(after, page_id).ref_count == 2 and page(after, page_id).owner_ids == (0, 1)
    num_new = len(next(e for e in after.events if e.kind == "allocate").page_ids)
    assert after.pool.num_in_use == before.pool.num_in_use + num_new == before.pool.num_in_use + 2
    assert table(after, 1).num_cached_tokens == 8


def test_tour_fork_then_copy_on_write(tour):
    i, fork = first(tour, "fork")
    assert fork.seq_ids == (2, 3)
    for page_id in fork.page_ids:
        assert page(tour[i], page_id).ref_count == 2
    assert table(tour[i], 2).page_ids == table(tour[i], 3).page_ids
    j, cow = first(tour, "cow")
    src, dst = cow.page_ids
    assert cow.seq_ids == (2,) and src == fork.page_ids[-1]
    assert page(tour[j], src).ref_count == 1 and page(tour[j], src).owner_ids == (3,)  # D keeps the original
    assert page(tour[j], dst).ref_count == 1 and page(tour[j], dst).owner_ids == (2,)  # C got the copy
    assert page(tour[j], fork.page_ids[0]).ref_count == 2  # the full page stays shared
    assert table(tour[j], 2).page_ids[-1] == dst


def test_tour_preemption_returns_the_victims_pages(tour):
    i, pre = first(tour, "preempt")
    assert pre.seq_ids == (4,) and len(pre.page_ids) == 5
    assert "seq 4" in tour[i].sentence and "5 pages returned" in tour[i].sentence
    assert table(tour[i], 4).status == "PREEMPTED" and table(tour[i], 4).page_ids == ()
    for page_id in pre.page_ids:
        assert page(tour[i], page_id).state in ("free", "cached") or 4 not in page(tour[i], page_id).owner_ids
    # the contiguous cache never preempts: E keeps its region
    assert 4 in {r.seq_id for r in tour[i].contiguous.reservations}


def test_tour_ends_with_every_page_back_and_prefixes_cached(tour):
    last = tour[-1]
    assert all(p.ref_count == 0 for p in last.pool.pages)
    assert last.pool.count("cached") > 0
    assert {t.status for t in last.tables} == {"FINISHED"}
    assert last.contiguous.reservations == () and last.contiguous.num_free == last.contiguous.num_slots
    resumed = [e for s in tour for e in s.events if e.kind == "prefix_hit" and e.seq_ids == (4,)]
    assert resumed, "E should find its own pages in the prefix cache when it resumes"


# ---- every scenario ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SCENARIOS))
def test_snapshots_are_consistent(name):
    for step in run_scenario(name):
        pool, slab = step.pool, step.contiguous
        refs = sum(p.ref_count for p in pool.pages)
        assert refs == sum(len(t.page_ids) for t in step.tables), step.title
        for t in step.tables:
            for page_id in t.page_ids:
                assert t.seq_id in pool.pages[page_id].owner_ids
            assert (t.status == "RUNNING") == bool(t.page_ids), (step.title, t)
        assert sum(pool.count(s) for s in ("free", "cached", "used", "shared")) == len(pool.pages)
        spans = sorted([(r.start, r.length) for r in slab.reservations] + list(slab.free_extents))
        pos = 0
        for start, length in spans:  # regions and holes tile the slab exactly
            assert start == pos
            pos += length
        assert pos == slab.num_slots
        assert all(0 < r.num_tokens <= r.length for r in slab.reservations)
        assert step.sentence and step.title


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenarios_are_deterministic(name):
    assert run_scenario(name) == run_scenario(name)


@pytest.mark.parametrize("name,needed", [
    ("prefix-sharing", ["prefix_hit", "evict"]),
    ("parallel-sampling", ["fork", "fork", "cow", "cow", "append_page"]),
    ("beam-search", ["fork", "fork", "cow", "cow", "finish", "free", "fork", "copy_contiguous", "cow"]),
    ("preemption", ["admit_fail_contiguous", "preempt", "prefix_hit"]),
    ("fragmentation", ["admit_fail_contiguous", "reserve_contiguous"]),
])
def test_each_scenario_shows_its_point(name, needed):
    kinds = [e.kind for s in run_scenario(name) for e in s.events]
    remaining = iter(kinds)
    assert all(kind in remaining for kind in needed), kinds  # `needed` is a subsequence of the log, in order


def test_parallel_sampling_copies_only_the_partial_page():
    steps = run_scenario("parallel-sampling")
    assert [page(steps[0], i).ref_count for i in (0, 1, 2)] == [3, 3, 3]
    cows = [e for e in steps[1].events if e.kind == "cow"]
    assert [c.seq_ids for c in cows] == [(0,), (1,)] and {c.page_ids[0] for c in cows} == {2}
    assert [page(steps[1], i).ref_count for i in (0, 1, 2)] == [3, 3, 1]  # C writes in place after two copies
    i = next(k for k, s in enumerate(steps) if any(e.kind == "finish" and e.seq_ids == (1,) for e in s.events))
    assert [page(steps[i], p).ref_count for p in (0, 1)] == [2, 2]  # dropping B only decrements the shared pages


def test_beam_search_prunes_forks_and_copies_on_write():
    steps = run_scenario("beam-search")
    fork_step = next(s for s in steps if s.title.startswith("Second beam step"))
    pruned = next(e for e in fork_step.events if e.kind == "free")
    assert all(page(fork_step, p).ref_count == 0 for p in pruned.page_ids)  # the pruned beam's own page returns
    assert [page(fork_step, p).ref_count for p in (0, 1)] == [3, 3]  # A, C and the fork D share the prompt
    shared_tail = next(e for e in fork_step.events if e.kind == "fork").page_ids[-1]
    assert page(fork_step, shared_tail).ref_count == 2  # A's last page, now also D's
    cow = next(e for e in steps[3].events if e.kind == "cow")
    assert cow.page_ids[0] == shared_tail and page(steps[3], shared_tail).ref_count == 1


def test_fragmentation_free_memory_but_no_hole():
    steps = run_scenario("fragmentation")
    i, fail = first(steps, "admit_fail_contiguous")
    slab = steps[i].contiguous
    assert fail.seq_ids == (5,) and slab.waiting_ids == (5,)
    assert slab.num_free >= 24 > slab.largest_free_extent  # enough in total, no hole long enough
    assert table(steps[i], 5).status == "RUNNING" and len(table(steps[i], 5).page_ids) == 6  # paging admitted it
    assert steps[-1].contiguous.waiting_ids == () and 5 in {r.seq_id for r in steps[-1].contiguous.reservations}


def test_bad_input_raises_typed_errors():
    with pytest.raises(ConfigError, match="unknown scenario"):
        run_scenario("nope")
    with pytest.raises(ConfigError, match="unknown event kind"):
        Event("teleport", (0,))
    with pytest.raises(ConfigError):
        Walkthrough(4, 4, 16, policy="best")
    w = Walkthrough(8, 4, 16)
    w.arrive(0, (1, 2, 3), max_len=4)
    w.decode(1)
    with pytest.raises(SequenceStateError, match="max_len"):
        w.decode(1)
    with pytest.raises(SequenceStateError, match="not PREEMPTED"):
        w.resume(0)
    with pytest.raises(ConfigError, match="unused seq ids"):
        w.arrive(0, (5, 6), max_len=4)
    with pytest.raises(ConfigError, match="max_len"):
        w.arrive(1, tuple(range(20, 48)), max_len=16)  # 28 tokens > max_len: refused before touching anything
    assert 1 not in w.seqs


def test_a_request_the_pool_cannot_take_waits_then_resumes():
    w = Walkthrough(4, 4, 16)
    w.arrive(0, tuple(range(1, 13)), max_len=16)  # 3 of the 4 pages
    w.arrive(1, tuple(range(21, 30)), max_len=16)  # needs 3 pages, 1 free
    step = w.step("full", "B does not fit")
    assert step.kinds() == ["allocate", "reserve_contiguous", "admit_fail", "admit_fail_contiguous"]
    assert next(t for t in step.tables if t.seq_id == 1).status == "WAITING"
    w.finish(0)
    w.resume(1)
    step = w.step("B gets in", "A's pages went back")
    assert next(t for t in step.tables if t.seq_id == 1).status == "RUNNING"
    # A's 3 full pages were cached; B takes the 1 fresh page and evicts 2 of them
    assert step.kinds() == ["finish", "free", "release_contiguous", "reserve_contiguous", "allocate", "evict"]


def test_contiguous_slab_places_a_request_whole_or_not_at_all():
    events: list[Event] = []
    slab = ContiguousSlab(num_slots=20, max_model_len=8, policy="max", emit=events.append)
    slab.arrive([0], max_len=5)  # 8 slots (max_model_len), not 5
    slab.arrive([1, 2], max_len=5)  # 2 x 8 slots, 12 free: the first fits alone, but the request waits whole
    assert [e.kind for e in events] == ["reserve_contiguous", "admit_fail_contiguous"]
    view = slab.view({0: 3})
    assert [(r.seq_id, r.start, r.length, r.num_slack) for r in view.reservations] == [(0, 0, 8, 5)]
    assert view.free_extents == ((8, 12),) and view.waiting_ids == (1, 2)  # rolled back: no half-placed request
    slab.finish(0)
    assert [e.kind for e in events[2:]] == ["release_contiguous", "reserve_contiguous"]
    view = slab.view({1: 5, 2: 5})
    assert [(r.seq_id, r.start) for r in view.reservations] == [(1, 0), (2, 8)] and view.waiting_ids == ()
    slab.check_invariants()


def test_cli_scenario_names_match_the_library():
    assert tuple(SCENARIOS) == SCENARIO_NAMES


def test_explain_is_torch_free():
    code = "import sys, pabench.explain, pabench.explain.render; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- rendering and the CLI --------------------------------------------------------------------------------------

def test_plain_render_is_a_legible_grid(tour):
    text = render_plain(tour[2], 2, len(tour))
    assert "\x1b[" not in text
    assert "[ 0:AB2][ 1:AB2][ 2:A1 ]" in text  # pages 0 and 1 shared by A and B, page 2 A's alone
    assert "0->0 1->1 2->3 3->4" in text  # B's page table, logical -> physical
    assert "BBBBBBBBBBBBBbbbbbbbbbbbbbbbbbbb" in text  # 13 tokens, 19 slots of slack


def test_rich_render_puts_both_caches_side_by_side(tour):
    from rich.console import Console

    console = Console(width=200, record=True, force_terminal=True)
    console.print(render_rich(tour[3], 3, len(tour), 200))
    lines = console.export_text().splitlines()
    assert any("PAGED" in line and "CONTIGUOUS" in line for line in lines)
    narrow = Console(width=90, record=True, force_terminal=True)
    narrow.print(render_rich(tour[3], 3, len(tour), 90))
    assert not any("PAGED" in line and "CONTIGUOUS" in line for line in narrow.export_text().splitlines())


def test_cli_explain_prints_every_step_as_plain_text(tour):
    res = runner.invoke(app, ["explain"])
    assert res.exit_code == 0, res.output
    assert "\x1b[" not in res.stdout
    for k, step in enumerate(tour):
        assert f"step {k + 1}/{len(tour)}: {step.title}" in res.stdout
    flat = " ".join(res.stdout.split())
    assert "preempted by recompute, 5 pages returned" in flat
    assert " ".join(tour[2].sentence.split()) in flat


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n != "tour"])
def test_cli_explain_other_scenarios(name):
    res = runner.invoke(app, ["explain", "--scenario", name])
    assert res.exit_code == 0, res.output
    steps = run_scenario(name)
    assert f"step {len(steps)}/{len(steps)}" in res.stdout


def test_cli_step_without_a_terminal_shows_every_step_and_prompts_nobody(tour):
    res = runner.invoke(app, ["explain", "--step"], input="")
    assert res.exit_code == 0, res.output
    assert f"step {len(tour)}/{len(tour)}" in res.stdout
    assert "Enter" not in res.output and "stopped" not in res.output


def test_cli_step_waits_for_enter_q_quits_end_of_input_stops(tour, monkeypatch):
    import pabench.cli.learn

    monkeypatch.setattr(pabench.cli.learn, "stdin_is_terminal", lambda: True)
    res = runner.invoke(app, ["explain", "--step"], input="\n" * len(tour))
    assert res.exit_code == 0, res.output
    assert f"step {len(tour)}/{len(tour)}" in res.stdout
    res = runner.invoke(app, ["explain", "--step"], input="\nq\n")
    assert res.exit_code == 0, res.output
    assert "step 2/" in res.stdout and "step 3/" not in res.stdout
    assert "(stopped after step 2 of" in res.stderr and "q: quit" in res.stderr
    res = runner.invoke(app, ["explain", "--step"], input="\n")
    assert "step 2/" in res.stdout and "step 3/" not in res.stdout
    assert "\n(end of input: stopped after step 2 of" in res.stderr  # a newline ends the unanswered prompt


def test_cli_step_on_a_real_terminal(tour):
    """Through a pseudo-terminal on stdin: the prompt waits, Enter goes on, q quits."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pabench", "explain", "--step"], stdin=follower,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(follower)
    os.write(leader, b"\nq\n")
    out, err = proc.communicate(timeout=60)
    os.close(leader)
    assert proc.returncode == 0, err
    assert "step 2/" in out and "step 3/" not in out
    assert "q: quit" in err and "(stopped after step 2 of" in err


def test_cli_unknown_scenario_is_one_line_exit_1():
    res = runner.invoke(app, ["explain", "--scenario", "nope"])
    assert res.exit_code == 1
    assert "unknown scenario" in res.output and "Traceback" not in res.output
