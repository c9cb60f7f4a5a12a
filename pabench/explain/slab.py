"""`ContiguousSlab`: the contiguous KV cache a `pabench explain` walkthrough runs beside the paged one.

Each sequence reserves ONE unbroken region of an `ExtentAllocator` slab when its request arrives: max_model_len
slots (policy "max") or exactly its final length ("exact"). A request is placed whole (every sample) or not at
all; one that does not fit waits, first fit in arrival order, and is retried whenever a region comes free. It
never preempts: it reserved the worst case up front. Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pabench.core.extents import ExtentAllocator
from pabench.explain.steps import Event, Reservation, SlabView, check_slab_policy, seq_label


class ContiguousSlab:
    """One region per sequence in a slab of `num_slots` token slots; reports what it does as `Event`s."""

    def __init__(self, num_slots: int, max_model_len: int, policy: str, emit: Callable[[Event], None]) -> None:
        check_slab_policy(policy)
        self.slab = ExtentAllocator(num_slots)
        self.max_model_len, self.policy = max_model_len, policy
        self._emit = emit
        self._lengths: dict[int, int] = {}  # seq_id -> slots its region needs
        self._starts: dict[int, int] = {}  # seq_id -> first slot of its region (placed sequences only)
        self._waiting: list[list[int]] = []  # requests (all their samples) not yet placed, arrival order

    def arrive(self, seq_ids: list[int], max_len: int) -> None:
        """A request asks for one region per sample (`seq_ids`); placed now if it fits, else it waits (said so)."""
        for seq_id in seq_ids:
            self._lengths[seq_id] = self.max_model_len if self.policy == "max" else max_len
        self._waiting.append(list(seq_ids))
        self._place_waiting(announce_ids=frozenset(seq_ids))

    def fork(self, parent_id: int, child_id: int, num_tokens: int) -> None:
        """A beam chosen twice: the child needs a region of its own and a copy of the parent's `num_tokens` (if
        the parent is not placed yet, the child waits with it)."""
        self._lengths[child_id] = self._lengths[parent_id]
        if parent_id not in self._starts:
            for group in self._waiting:
                if parent_id in group:
                    group.append(child_id)
            return
        start = self.slab.allocate(self._lengths[child_id])
        if start is None:
            self._waiting.append([child_id])
            self._event("admit_fail_contiguous", (child_id,), f"no hole of {self._lengths[child_id]} slots: it waits")
            return
        self._starts[child_id] = start
        self._event("copy_contiguous", (parent_id, child_id),
                    f"{seq_label(child_id)} gets slots {start}-{start + self._lengths[child_id] - 1} and a copy of "
                    f"{seq_label(parent_id)}'s {num_tokens} tokens (every layer's K and V)")

    def finish(self, seq_id: int) -> None:
        """A sequence ended: its region goes back (or, never placed, it stops waiting); waiting requests retry."""
        if seq_id in self._starts:
            start = self._starts.pop(seq_id)
            self._event("release_contiguous", (seq_id,),
                        f"slots {start}-{start + self.slab.extent_length(start) - 1} released")
            self.slab.free(start)
        else:  # the slab never got to start it
            self._waiting = [[i for i in group if i != seq_id] for group in self._waiting]
            self._waiting = [group for group in self._waiting if group]
        self._place_waiting()

    def view(self, num_tokens: Mapping[int, int]) -> SlabView:
        """The slab now; `num_tokens[seq_id]` is how many tokens each sequence holds."""
        reservations = tuple(sorted(
            (Reservation(i, start, self.slab.extent_length(start), min(num_tokens[i], self.slab.extent_length(start)))
             for i, start in self._starts.items()), key=lambda r: r.start))
        waiting_ids = tuple(i for group in self._waiting for i in group)
        return SlabView(self.slab.num_slots, self.policy, reservations, tuple(self.slab.free_extents()), waiting_ids)

    def check_invariants(self) -> None:
        """Debug: the slab tiles exactly, and every placed sequence owns exactly one of its regions."""
        self.slab.check_invariants()
        assert sorted(self._starts.values()) == [start for start, _ in self.slab.used_extents()]
        assert not set(self._starts) & {i for group in self._waiting for i in group}, "placed and waiting"

    def _place_waiting(self, announce_ids: frozenset[int] = frozenset()) -> None:
        """Place every waiting request that fits (all its samples or none), first fit, arrival order."""
        still_waiting = []
        for group in self._waiting:
            starts = []
            for seq_id in group:
                start = self.slab.allocate(self._lengths[seq_id])
                if start is None:
                    break
                starts.append(start)
            if len(starts) < len(group):  # roll back: a request is placed whole or not at all
                for start in starts:
                    self.slab.free(start)
                still_waiting.append(group)
                if announce_ids & set(group):
                    self._event("admit_fail_contiguous", tuple(group),
                                f"needs {len(group)} x {self._lengths[group[0]]} contiguous slots; "
                                f"{self.slab.num_free_slots} free in total, largest hole "
                                f"{self.slab.largest_free_extent}: it waits")
                continue
            self._starts.update(zip(group, starts))
            regions = (f"{seq_label(i)}: slots {s}-{s + self._lengths[i] - 1}" for i, s in zip(group, starts))
            self._event("reserve_contiguous", tuple(group), ", ".join(regions))
        self._waiting = still_waiting

    def _event(self, kind: str, seq_ids: tuple[int, ...], detail: str) -> None:
        self._emit(Event(kind, seq_ids, (), detail))
