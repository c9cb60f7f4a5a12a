"""Figures from exports (matplotlib, the optional `plot` extra, imported only when a figure is drawn)."""

from pabench.plot.figure import choose_panels, figure_size_px, figure_title, plot_results, require_matplotlib

__all__ = ["choose_panels", "figure_size_px", "figure_title", "plot_results", "require_matplotlib"]
