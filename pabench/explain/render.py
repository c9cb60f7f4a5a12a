"""Draw one `pabench explain` step: the page pool as a grid, the page tables, and the contiguous slab beside it.

Every piece is a list of rich `Text` lines. A terminal gets them coloured, paged and contiguous side by side;
anything else (a pipe, a log, a test) gets the very same characters as plain text, so the grid stays legible:
`[ 3:AB2]` is page 3, held by A and B (ref_count 2); `[ 4:.  ]` is free; `[ 5:*  ]` is a cached prefix page.
"""

from __future__ import annotations

import textwrap

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from pabench.explain.steps import Event, PageView, PoolView, SlabView, Step, TableView, seq_label

CELLS_PER_ROW = 8
FREE_MARK, CACHED_MARK = ".", "*"
WRAP = 100  # plain-text sentence width
OWNER_COLOURS = ("blue", "green", "magenta", "yellow", "red", "cyan", "bright_blue", "bright_green")
STATUS_STYLES = {"RUNNING": "green", "WAITING": "yellow", "PREEMPTED": "bold red", "FINISHED": "dim"}
LEGEND = (
    "page pool: [id:OWNERS REF] = sequences whose page table points at the page, and its ref_count; "
    f"'{FREE_MARK}' free page, '{CACHED_MARK}' cached prefix page (free, but reusable by a prefix hit).\n"
    "contiguous slab, one character per token slot: UPPER = slot holding a token, lower = reserved but empty "
    "(slack), '.' = free."
)


def owner_style(seq_id: int) -> str:
    """The colour a sequence is drawn in, everywhere (grid, tables, slab)."""
    return OWNER_COLOURS[seq_id % len(OWNER_COLOURS)]


# ---- paged side ---------------------------------------------------------------------------------------------

def _cell(page: PageView, id_width: int, mark_width: int) -> Text:
    """`[ 3:AB2]`: page id, owner letters (coloured), ref_count; free and cached pages get a mark."""
    cell = Text().append("[", style="dim")
    cell.append(f"{page.page_id:>{id_width}}:", style="dim")
    if page.state == "free":
        cell.append(FREE_MARK.ljust(mark_width), style="dim")
    elif page.state == "cached":
        cell.append(CACHED_MARK.ljust(mark_width), style="bold green")
    elif page.state == "used":  # one owner: the whole cell in its colour
        text = f"{seq_label(page.owner_ids[0])}{page.ref_count}".ljust(mark_width)
        cell.append(text, style=f"bold reverse {owner_style(page.owner_ids[0])}")
    else:  # shared: each owner's letter in its colour, the ref_count in red
        for owner_id in page.owner_ids:
            cell.append(seq_label(owner_id), style=f"bold {owner_style(owner_id)}")
        ref = str(page.ref_count)
        cell.append(ref, style="bold red")
        cell.append(" " * (mark_width - len(page.owner_ids) - len(ref)))
    cell.append("]", style="dim")
    return cell


def pool_lines(pool: PoolView) -> list[Text]:
    """A summary line, then the pool as rows of CELLS_PER_ROW cells in page id order."""
    num_pages = len(pool.pages)
    shared = pool.count("shared")
    head = Text().append("PAGED", style="bold")
    head.append(f"  {num_pages} pages x {pool.page_size} tokens")
    counts = Text(f"{pool.num_in_use} in use ({shared} shared), {pool.count('free')} free, "
                  f"{pool.count('cached')} cached; slack {pool.num_slack_tokens} slots"
                  + (f"; sharing saves {pool.num_saved_pages} page(s)" if pool.num_saved_pages else ""))
    id_width = len(str(num_pages - 1))
    mark_width = max([3] + [len(p.owner_ids) + len(str(p.ref_count)) for p in pool.pages])
    lines = [head, counts]
    for row in range(0, num_pages, CELLS_PER_ROW):
        lines.append(Text("").join(_cell(p, id_width, mark_width) for p in pool.pages[row:row + CELLS_PER_ROW]))
    return lines


def table_lines(tables: tuple[TableView, ...]) -> list[Text]:
    """One line per sequence: letter, id, status, tokens, page table as logical->physical pairs."""
    lines = []
    for t in tables:
        line = Text().append(f"  {seq_label(t.seq_id)}", style=f"bold {owner_style(t.seq_id)}")
        line.append(f" seq {t.seq_id} ")
        line.append(f"{t.status:<9}", style=STATUS_STYLES.get(t.status, ""))
        line.append(f" {t.num_tokens:>3} tokens  ")
        if t.page_ids:
            line.append(" ".join(f"{logical}->{physical}" for logical, physical in enumerate(t.page_ids)))
            if t.num_cached_tokens:
                line.append(f"  (prefix hit: {t.num_cached_tokens} tokens)", style="green")
        elif t.status == "PREEMPTED":
            line.append(f"no pages: {t.num_tokens} tokens to prefill again", style="red")
        else:
            line.append("no pages", style="dim")
        lines.append(line)
    return lines


# ---- contiguous side ----------------------------------------------------------------------------------------

def slab_lines(slab: SlabView, row_slots: int) -> list[Text]:
    """A summary line, the slab one character per slot (`row_slots` per row), then one line per region."""
    policy = "max_model_len per sequence" if slab.policy == "max" else "exact final length"
    head = Text().append("CONTIGUOUS", style="bold")
    head.append(f"  {slab.num_slots} slots, reserving {policy}")
    pct = 100.0 * slab.num_slack / slab.num_reserved if slab.num_reserved else 0.0
    counts = Text(f"{slab.num_reserved} reserved, slack {slab.num_slack} ({pct:.0f}%), {slab.num_free} free, "
                  f"largest hole {slab.largest_free_extent}")
    chars: list[tuple[str, str]] = [(FREE_MARK, "dim")] * slab.num_slots
    for r in slab.reservations:
        letter, style = seq_label(r.seq_id), owner_style(r.seq_id)
        for i in range(r.length):
            chars[r.start + i] = ((letter, f"bold reverse {style}") if i < r.num_tokens
                                  else (letter.lower(), f"dim {style}"))
    id_width = len(str(slab.num_slots - 1))
    lines = [head, counts]
    for row in range(0, slab.num_slots, row_slots):
        line = Text().append(f"{row:>{id_width}} ", style="dim")
        for char, style in chars[row:row + row_slots]:
            line.append(char, style=style)
        lines.append(line)
    for r in slab.reservations:
        line = Text().append(f"  {seq_label(r.seq_id)}", style=f"bold {owner_style(r.seq_id)}")
        line.append(f" slots {r.start}-{r.start + r.length - 1}: {r.num_tokens} tokens, {r.num_slack} slack")
        lines.append(line)
    if slab.waiting_ids:
        names = ", ".join(seq_label(i) for i in slab.waiting_ids)
        lines.append(Text().append(f"  cannot place {names}: no free region long enough, waiting",
                                   style="bold red"))
    return lines


# ---- a whole step -------------------------------------------------------------------------------------------

def event_lines(events: tuple[Event, ...]) -> list[Text]:
    """One line per event: its kind, then what it did."""
    width = max((len(e.kind) for e in events), default=0)
    lines = []
    for e in events:
        alarm = "fail" in e.kind or e.kind == "preempt"
        line = Text().append(f"  {e.kind:<{width}}  ", style="bold red" if alarm else "bold")
        line.append(e.detail)
        if e.page_ids and e.kind != "cow":
            line.append(f"  [{', '.join(map(str, e.page_ids))}]", style="dim")
        lines.append(line)
    return lines


def _title(step: Step, index: int, num_steps: int) -> str:
    """'step 3/11: Parallel sampling: fork'."""
    return f"step {index + 1}/{num_steps}: {step.title}"


def render_plain(step: Step, index: int, num_steps: int) -> str:
    """The step as plain text (no colour codes): title, sentence, events, paged side, then contiguous side."""
    paged = pool_lines(step.pool) + table_lines(step.tables)
    contiguous = slab_lines(step.contiguous, CELLS_PER_ROW * step.pool.page_size)
    parts = [f"== {_title(step, index, num_steps)} ==", textwrap.fill(step.sentence, WRAP)]
    if step.events:
        parts.append("\n".join(t.plain for t in event_lines(step.events)))
    parts.append("\n".join(t.plain for t in paged))
    parts.append("\n".join(t.plain for t in contiguous))
    return "\n\n".join(parts) + "\n"


def render_rich(step: Step, index: int, num_steps: int, width: int = 160) -> RenderableType:
    """The step as a coloured panel; paged and contiguous side by side when `width` allows."""
    paged_lines = pool_lines(step.pool) + table_lines(step.tables)
    contiguous_lines = slab_lines(step.contiguous, CELLS_PER_ROW * step.pool.page_size)
    paged, contiguous = Group(*paged_lines), Group(*contiguous_lines)
    body: list[RenderableType] = [Text(step.sentence, style="italic"), Text("")]
    if step.events:
        body += [*event_lines(step.events), Text("")]
    paged_width = max(t.cell_len for t in paged_lines)
    slab_width = max(t.cell_len for t in contiguous_lines)
    if paged_width + slab_width + 4 + 4 <= width:  # column padding + panel border
        grid = Table.grid(padding=(0, 4))
        grid.add_column(max_width=paged_width)
        grid.add_column()
        grid.add_row(paged, contiguous)
        body.append(grid)
    else:
        body += [paged, Text(""), contiguous]
    return Panel(Group(*body), title=_title(step, index, num_steps), title_align="left", border_style="cyan")
