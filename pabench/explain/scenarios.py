"""The `pabench explain` scenarios: tiny, deterministic stories, each told as a list of `Step`s.

Every scenario builds a `Walkthrough`, plays requests through it and records a step per moment worth seeing.
Where a number depends on the block manager's choices (page ids, free pages), the sentence reads it from the
walkthrough instead of hard-coding it. `SCENARIOS` names them for the CLI.
"""

from __future__ import annotations

from collections.abc import Callable

from pabench.errors import ConfigError
from pabench.explain.steps import Event, Step, seq_name
from pabench.explain.walkthrough import Walkthrough

SYSTEM_PROMPT = tuple(range(11, 19))  # 8 tokens = 2 pages of 4, shared by several requests


def _ids(events: list[Event]) -> str:
    """'pages 3, 7' from the page ids of some events."""
    page_ids = [i for e in events for i in e.page_ids]
    return ("page " if len(page_ids) == 1 else "pages ") + ", ".join(map(str, page_ids))


def tour() -> list[Step]:
    """Prefix sharing, parallel sampling with copy-on-write, preemption, and pages coming back: one story."""
    w = Walkthrough(num_pages=24, page_size=4, max_model_len=32)
    w.step("An empty pool", "24 pages of 4 tokens = 96 token slots. The contiguous cache beside it gets the same "
           "96 slots and reserves max_model_len = 32 of them for every sequence, whatever its real length.")
    w.arrive(0, SYSTEM_PROMPT + (21, 22, 23), max_len=28)
    w.step("A request arrives", "seq 0 (A) brings an 8-token system prompt and a 3-token question: 11 tokens fill "
           "3 pages; its 2 full pages get a content hash so later requests can find them. The contiguous cache "
           "reserves 32 slots for the same 11 tokens.")
    w.arrive(1, SYSTEM_PROMPT + (31, 32, 33, 34, 35), max_len=28)
    hit = w.pending("prefix_hit")
    w.step("Same system prompt: a prefix-cache hit",
           f"seq 1 (B) starts with the same system prompt: {_ids(hit)} are found by hash and shared "
           f"(ref_count 1 -> 2), so B needs only {len(w.pending('allocate')[0].page_ids)} new pages. The "
           "contiguous cache stores the system prompt a second time.")
    w.arrive(2, (41, 42, 43, 44, 45, 46), max_len=24, num_samples=2)
    w.step("Parallel sampling: fork",
           "seq 2 (C) asks for 2 samples: its 6 prompt tokens fill 2 pages, and the second sample seq 3 (D) is a "
           "fork that points at the same 2 pages (ref_count 2): no copy, no new memory. The contiguous cache needs "
           "2 x 32 slots for this request but has 32 left: it cannot admit it.")
    w.decode(1)
    cow = w.pending("cow")[0]
    w.step("First sampled token: copy-on-write",
           f"Everyone decodes one token. C's last page {cow.page_ids[0]} is half full and shared with D, so C "
           f"first copies it to page {cow.page_ids[1]} (copy-on-write), then writes; D now owns page "
           f"{cow.page_ids[0]} alone and writes in place. The full page stays shared.")
    w.decode(6)
    w.step("Growing page by page",
           f"Six more tokens each. A sequence takes a new page only when its last one is full "
           f"({len(w.pending('append_page'))} new pages this time), so at most 3 slots per sequence are ever "
           "empty. "
           "The contiguous reservations were sized for the worst case on arrival and do not move.")
    w.arrive(4, tuple(range(51, 68)), max_len=32)
    w.step("A long request",
           "seq 4 (E) brings a 17-token prompt: 5 pages. The contiguous cache puts it in its last free 32 slots: "
           f"it is now full, while the paged pool still has {w.blocks.num_free_pages} free pages.")
    w.decode(4)
    pre = w.pending("preempt")[0]
    w.step("Out of pages: preemption",
           f"Everyone decodes again until the pool runs dry: out of pages, {seq_name(pre.seq_ids[0])}, the last "
           f"one admitted, is preempted by recompute, {len(pre.page_ids)} pages returned; the others keep going. "
           "Its tokens are kept and it will be prefilled again when pages free up. The contiguous cache never "
           "preempts: it reserved the worst case up front, and pays for it by admitting fewer requests.")
    w.finish(0)
    w.finish(1)
    w.step("A and B finish",
           "A and B are done and return their pages. The shared system-prompt pages drop from ref_count 2 to 0 "
           f"but, like every full page, keep their content and hash: {w.blocks.num_cached_pages} pages are now "
           "cached (free, yet reusable by the next request with that prefix). In the contiguous cache the two "
           "freed regions merge into one hole of 64 slots: C and D get in at last.")
    w.resume(4)
    hit = w.pending("prefix_hit")
    w.step("E resumes",
           f"E is prefilled again. Its full pages were still in the prefix cache ({_ids(hit)}), so it gets them "
           f"back with no recompute and allocates only {len(w.pending('allocate')[0].page_ids)} page(s).")
    w.arrive(5, SYSTEM_PROMPT + (71, 72), max_len=20)
    w.step("The system prompt again",
           "seq 5 (F) starts with the system prompt: the cached pages go from ref_count 0 back to 1 with no new "
           "memory. The contiguous cache is full (C, D, E): F must wait there, although the paged pool serves it.")
    w.decode(2)
    for seq_id in (5, 2, 3, 4):
        w.finish(seq_id)
    w.step("Everyone finishes",
           "F, the shortest, finishes first: before the contiguous cache could even start it. Then the others: "
           f"all pages are back, {w.blocks.num_cached_pages} of them still holding cached prefixes, reusable "
           "until fresh pages run out.")
    return w.steps


def prefix_sharing() -> list[Step]:
    """Chained page hashes: requests share a system prompt, a diverging one shares less, cached pages, eviction."""
    system = tuple(range(11, 23))  # 12 tokens = 3 full pages
    w = Walkthrough(num_pages=12, page_size=4, max_model_len=16)
    w.arrive(0, system + (31, 32, 33, 34), max_len=16)
    w.step("The first request", "seq 0 (A): a 12-token system prompt plus 4 tokens = 4 full pages. Each full page "
           "gets a hash of its tokens chained with the previous page's hash, and is registered in the prefix cache.")
    w.arrive(1, system + (41, 42, 43, 44), max_len=16)
    w.arrive(2, system + (51, 52, 53, 54), max_len=16)
    w.step("Two more with the same prompt",
           "B and C hash their first pages the same way and find A's pages: the 3 system-prompt pages now have "
           f"ref_count 3 and are stored once ({w.pool_view().num_saved_pages} pages saved). Each request only "
           "allocates its own last page. The contiguous cache holds three copies of the prompt.")
    w.arrive(3, system[:4] + tuple(range(61, 71)), max_len=16)
    w.step("A prompt that diverges",
           "D shares only the first 4 tokens: its page 1 differs, and since every hash covers the whole prefix "
           "before it, nothing after the first difference can match. D shares 1 page and allocates 3. The "
           "contiguous cache is full: D waits there.")
    for seq_id in (0, 1, 2):
        w.finish(seq_id)
    w.step("The sharers finish",
           "A, B and C finish. Every page they held reaches ref_count 0 except page 0, which D still uses. Being "
           f"full and hashed, they stay cached: {w.blocks.num_cached_pages} free pages that still know their "
           "content, ready for reuse.")
    w.arrive(4, system + (81, 82, 83), max_len=16)
    w.step("A hit on cached pages", "E starts with the system prompt when no one but D holds any of it: pages 1 "
           "and 2 come back from the cache (ref_count 0 -> 1), page 0 gets its second owner, and E skips "
           "recomputing 12 tokens.")
    w.arrive(5, tuple(range(91, 107)), max_len=16)
    evicted = w.pending("evict")
    num_evicted = sum(len(e.page_ids) for e in evicted)
    w.step("Memory pressure: eviction",
           f"F needs 4 pages but only {4 - num_evicted} fresh ones are left, so the least recently freed cached "
           f"pages ({_ids(evicted)}) are evicted and overwritten: a cached page is free memory first, a cache "
           "second.")
    return w.steps


def parallel_sampling() -> list[Step]:
    """One prompt, three samples: fork shares everything, copy-on-write splits only the partly filled page."""
    w = Walkthrough(num_pages=16, page_size=4, max_model_len=20)
    w.arrive(0, tuple(range(11, 21)), max_len=20, num_samples=3)
    w.step("Fork: three samples, one copy of the prompt",
           "seq 0 (A) prefills 10 tokens into 3 pages; samples B and C are forks: every page has ref_count 3. "
           "The contiguous cache reserves 3 x 20 slots and stores the prompt three times.")
    w.decode(1)
    cows = w.pending("cow")
    w.step("Copy-on-write",
           f"Each sample writes its first own token into the last page, which holds 2 tokens and is shared. A "
           f"copies it ({cows[0].page_ids[0]} -> {cows[0].page_ids[1]}), then B copies it "
           f"({cows[1].page_ids[0]} -> {cows[1].page_ids[1]}); C is then the only owner and writes in place. "
           "The 2 full pages stay shared: only the page being written is ever copied.")
    w.decode(3)
    w.step("Growing apart", "Three more tokens each: the samples fill their last pages and each opens a page "
           "of its own. The prompt pages are still stored once.")
    w.finish(1)
    w.step("A sample is dropped", "B ends early (a pruned beam): its own pages go back to the free list, while the "
           "shared prompt pages only drop from ref_count 3 to 2: they still belong to A and C.")
    w.finish(0)
    w.finish(2)
    w.step("All done", "A and C finish: every page is back; the full prompt pages stay cached for the next request "
           "with the same prompt.")
    return w.steps


def beam_search() -> list[Step]:
    """Width-3 beam search for two steps: a pruned beam returns its pages, a beam chosen twice forks, and the next
    token copies the shared page; the contiguous cache copies a whole region per fork."""
    w = Walkthrough(num_pages=16, page_size=4, max_model_len=20)
    w.arrive(0, tuple(range(11, 21)), max_len=20, num_samples=3)
    w.step("Three beams, one prompt",
           "Beam search starts like parallel sampling: seq 0 (A) prefills 10 tokens into 3 pages and its 3 most "
           "likely next tokens become 3 beams: B and C are forks, every page has ref_count 3. The contiguous "
           "cache reserves 3 x 20 slots and stores the prompt three times.")
    w.decode(1)
    w.step("First beam step", "Each beam writes its own token into the shared, half-filled last page: A and B copy "
           "it first (copy-on-write), C is then its only owner. The two full pages stay shared by all three.")
    before = w.blocks.num_free_pages
    w.finish(1)
    w.fork(0, 3)
    w.step("Second beam step: prune and fork",
           "Of the 6 candidates (2 per beam) the best 3 are two extensions of A and one of C: B is pruned "
           f"(its own page returns: {w.blocks.num_free_pages - before} more free page(s); the shared prompt pages "
           "drop to ref_count 2), and A, chosen twice, forks D, which points at all of A's pages (ref_count + 1) at "
           "no cost. The contiguous cache gives D B's old region and copies A's 11 tokens into it.")
    w.decode(1, seq_ids=(0, 3, 2))
    cows = w.pending("cow")
    w.step("The next token: copy-on-write",
           f"A and D now write different tokens into the last page they share: A copies it "
           f"({cows[0].page_ids[0]} -> {cows[0].page_ids[1]}) and writes; D then owns page {cows[0].page_ids[0]} "
           "alone and writes in place. Paging copied one page of 4 slots; the contiguous cache copied 11 tokens.")
    for seq_id in (0, 2, 3):
        w.finish(seq_id)
    w.step("Done", "The beams finish; every page is back, the full prompt pages stay cached.")
    return w.steps


def preemption() -> list[Step]:
    """Overcommitting the pool: paging admits more, and preempts by recompute when growth runs out of pages."""
    w = Walkthrough(num_pages=12, page_size=4, max_model_len=24)
    w.arrive(0, tuple(range(11, 21)), max_len=24)
    w.arrive(1, tuple(range(21, 30)), max_len=24)
    w.arrive(2, tuple(range(31, 39)), max_len=24)
    w.step("Three requests, 8 pages", "A, B and C need 3 + 3 + 2 pages now. Paging admits all three on what they "
           "hold today; the contiguous cache must reserve 24 slots each and has room for two: C waits there.")
    w.decode(4)
    w.step("Growing", "Four tokens each: whenever a last page fills, a sequence takes a fresh page. 1 page is left.")
    w.decode(4)
    pre = w.pending("preempt")
    w.step("Preemption by recompute",
           "The pool runs dry while the sequences grow. The most recently admitted sequence is preempted: "
           + "; ".join(e.detail.removeprefix("out of pages: ") for e in pre)
           + ". Its KV is thrown away, its tokens kept; it will be prefilled again, which costs compute, not memory.")
    w.finish(0)
    w.resume(2)
    hits = w.pending("prefix_hit")
    w.step("A finishes, C resumes",
           "A's pages come back and C is prefilled again (prompt + the tokens it had generated). "
           + (f"{_ids(hits)} of C were still cached, so only the rest is recomputed. " if hits else "")
           + "In the contiguous cache C finally gets A's region.")
    w.decode(2)
    w.finish(1)
    w.finish(2)
    w.step("Done", "B and C finish; every page is back in the pool.")
    return w.steps


def fragmentation() -> list[Step]:
    """External fragmentation of a contiguous slab: free memory in total, but no hole long enough."""
    w = Walkthrough(num_pages=24, page_size=4, max_model_len=32, policy="exact")
    for seq_id, (prompt_len, max_len) in enumerate([(22, 24), (14, 16), (22, 24), (14, 16), (14, 16)]):
        w.arrive(seq_id, tuple(range(100 * (seq_id + 1), 100 * (seq_id + 1) + prompt_len)), max_len=max_len)
    w.step("Five requests fill both caches",
           "The contiguous cache here is the generous kind: it reserves each request's exact final length "
           "(24, 16, 24, 16, 16 slots, end to end). The paged pool holds the same five in 24 pages.")
    w.finish(1)
    w.finish(3)
    w.step("B and D finish", "Two 16-slot regions come free in the slab, with C between them: 32 slots free in "
           f"total, in two holes of 16. The paged pool simply has {w.blocks.num_free_pages} free pages.")
    w.arrive(5, tuple(range(700, 722)), max_len=24)
    slab = w.contiguous.slab
    w.step("No hole long enough",
           f"F needs 24 slots. The slab has {slab.num_free_slots} free, but its largest hole is "
           f"{slab.largest_free_extent}: F cannot be admitted. The paged cache gives F 6 of its 8 free pages, "
           "wherever they are: a page table does not need neighbours.")
    w.finish(0)
    w.step("A finishes", "Only when A's 24 slots come free does the slab find a hole long enough for F. Paging "
           "never waited.")
    return w.steps


SCENARIOS: dict[str, tuple[Callable[[], list[Step]], str]] = {
    "tour": (tour, "prefix sharing, fork, copy-on-write, preemption and pages coming back, in one story"),
    "prefix-sharing": (prefix_sharing, "chained page hashes, shared system prompts, cached pages, eviction"),
    "parallel-sampling": (parallel_sampling, "parallel sampling: fork and copy-on-write"),
    "beam-search": (beam_search, "beam search: a beam pruned, one forked, the next write copied"),
    "preemption": (preemption, "paging overcommits; when pages run out it preempts by recompute"),
    "fragmentation": (fragmentation, "a contiguous slab with free memory but no hole long enough"),
}


def run_scenario(name: str) -> list[Step]:
    """The steps of scenario `name` (ConfigError for an unknown one)."""
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    return SCENARIOS[name][0]()
