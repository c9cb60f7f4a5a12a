"""Report: rich tables for the terminal, the CSV/JSON exports and their reading back, compare/check."""
