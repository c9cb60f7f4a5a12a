"""A table that never truncates a cell: at the width it is printed at it splits its columns over stacked tables.

Rich shrinks a table wider than the terminal by cutting cells to `2,98…` and `contiguous-m…`. `FitTable` instead
measures itself at print time (the console's width, or a fixed `width`) and, when it does not fit, prints the
same rows as up to `MAX_PARTS` narrower tables, each repeating the key columns (the backend, the swept values).
Narrower still, it prints one small key/value table per row. Nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


MAX_PARTS = 4  # beyond this, one small table per row reads better than many thin tables


@dataclass(frozen=True)
class Column:
    """One column: its header, its cells (one per row, plain text or rich markup), left or right justified."""

    header: str
    cells: list[str]
    justify: str = "right"
    style: str | None = None


@dataclass
class FitTable:
    """Key columns (repeated in every part) and value columns (split over parts as the width requires)."""

    keys: list[Column]
    values: list[Column]
    title: str | None = None
    caption: str | None = None
    width: int | None = None  # None: the width of the console it is printed on

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = min(self.width or options.max_width, options.max_width)
        chunks = self._chunks(console, options, width)
        if not chunks or len(chunks) > MAX_PARTS:  # too narrow for a few side-by-side parts: one table per row
            yield from self._stacked()
            return
        for i, chunk in enumerate(chunks):
            title = self.title if i == 0 else None
            if self.title and len(chunks) > 1:
                title = f"{self.title} ({i + 1}/{len(chunks)})"
            yield self._table(chunk, title, self.caption if i == len(chunks) - 1 else None)

    def _table(self, values: list[Column], title: str | None, caption: str | None) -> Table:
        table = Table(box=box.SIMPLE_HEAD, header_style="bold", title=title, title_justify="left", caption=caption,
                      caption_justify="left")
        for c in self.keys + values:
            table.add_column(c.header, justify=c.justify, style=c.style, no_wrap=True)  # type: ignore[arg-type]
        for i in range(len(self.keys[0].cells if self.keys else values[0].cells)):
            table.add_row(*[c.cells[i] for c in self.keys + values])
        return table

    def _fits(self, console: Console, options: ConsoleOptions, values: list[Column], width: int) -> bool:
        # Measured unconstrained: with no_wrap columns the maximum is the width that shows every cell whole
        wide = options.update_width(10_000)
        return Measurement.get(console, wide, self._table(values, None, None)).maximum <= width

    def _chunks(self, console: Console, options: ConsoleOptions, width: int) -> list[list[Column]]:
        """Consecutive runs of value columns, each as long as fits beside the keys; [] if one alone is too wide."""
        if not all(self._fits(console, options, [column], width) for column in self.values):
            return []
        chunks: list[list[Column]] = [[]]
        for column in self.values:
            if chunks[-1] and not self._fits(console, options, chunks[-1] + [column], width):
                chunks.append([])
            chunks[-1].append(column)
        return chunks if chunks[0] else []

    def _stacked(self) -> Iterator[RenderableType]:
        """Very narrow: per row, its key cells as the title and one line per value column."""
        num_rows = len((self.keys or self.values)[0].cells)
        if self.title:
            yield Text(self.title, style="italic")
        for i in range(num_rows):
            table = Table(box=None, show_header=False, title=Text(" ".join(c.cells[i] for c in self.keys)),
                          title_justify="left", title_style="bold")
            table.add_column("metric")
            table.add_column("value", justify="right", no_wrap=True)
            for c in self.values:
                table.add_row(c.header, c.cells[i])
            yield table
