"""`pabench explain`: deterministic walks through tiny scenarios on the REAL core objects, step by step.

A `Walkthrough` drives a `BlockManager` (prefix caching, fork, copy-on-write, preemption, free) and, beside it,
a contiguous cache of the same size: an `ExtentAllocator` slab where each sequence reserves one unbroken region
up front. After each action it records a `Step`: a structured event log, one sentence saying what happened and
why, and frozen views of both caches. Torch-free; `explain_render.py` draws the steps.

This module is the public face; the pieces, one concept a file:
  * `explain_steps.py`: what a step records (`Event`, `PoolView`, `SlabView`, `Step`, ...);
  * `explain_walkthrough.py`: the `Walkthrough` driver (the paged side);
  * `explain_slab.py`: `ContiguousSlab`, the contiguous cache it runs beside the paged one;
  * `explain_scenarios.py`: the scenarios themselves, `SCENARIOS` and `run_scenario`.
"""

from pabench.explain.scenarios import SCENARIOS, run_scenario
from pabench.explain.slab import ContiguousSlab
from pabench.explain.steps import (EVENT_KINDS, PAGE_STATES, SLAB_POLICIES, Event, PageView, PoolView, Reservation,
                                   SlabView, Step, TableView, seq_label, seq_name)
from pabench.explain.walkthrough import Walkthrough

__all__ = [
    "EVENT_KINDS",
    "PAGE_STATES",
    "SCENARIOS",
    "SLAB_POLICIES",
    "ContiguousSlab",
    "Event",
    "PageView",
    "PoolView",
    "Reservation",
    "SlabView",
    "Step",
    "TableView",
    "Walkthrough",
    "run_scenario",
    "seq_label",
    "seq_name",
]
