"""What an ingestion did, for the console and the tests: rows per table, rejects per
reason, joins and their unmatched keys, outcome counts and notes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Group
from rich.table import Table

from features.joins import JOIN_COLUMNS


@dataclass
class IngestReport:
    """What an ingestion did: rows per table, rejects per reason, where it wrote."""

    name: str
    out_dir: Path
    counts: pd.DataFrame  # table, rows_in, clean, rejected (rows_in == clean + rejected)
    rejects: pd.DataFrame
    outcomes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    joins: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=JOIN_COLUMNS))
    warnings: list[str] = field(default_factory=list)  # e.g. join keys that found no row

    def reason_counts(self) -> pd.DataFrame:
        """Rejected rows per (table, reason), with one example detail each."""
        if self.rejects.empty:
            return pd.DataFrame(columns=["table", "reason", "rows", "example"])
        g = self.rejects.groupby(["table", "reason"], sort=False)
        out = g.size().rename("rows").to_frame().join(g["detail"].first().rename("example"))
        return out.reset_index().sort_values("rows", ascending=False, kind="stable")

    def summary(self) -> Group:
        """Rich renderable: rows read / clean / rejected per table, then rejects by reason."""
        counts = Table(title=f"ingest {self.name} -> {self.out_dir}", title_justify="left")
        for col in ("table", "rows read", "clean", "rejected"):
            counts.add_column(col, justify="left" if col == "table" else "right")
        for row in self.counts.itertuples(index=False):
            counts.add_row(row.table, f"{row.rows_in:,}", f"{row.clean:,}", f"{row.rejected:,}")
        parts = [counts]
        reasons = self.reason_counts()
        if len(reasons):
            by_reason = Table(title="rejects by reason (rows in rejects.csv)", title_justify="left")
            for col in ("table", "reason", "rows", "example"):
                by_reason.add_column(col, justify="right" if col == "rows" else "left")
            for row in reasons.itertuples(index=False):
                by_reason.add_row(row.table, row.reason, f"{row.rows:,}", str(row.example)[:70])
            parts.append(by_reason)
        if len(self.joins):
            parts.append(self._joins_table())
        outcome = ", ".join(f"{k} {v:,}" for k, v in self.outcomes.items())
        parts.append(f"deals: {outcome}; {self.seconds:.2f} s")
        parts.extend(f"note: {n}" for n in self.notes)
        parts.extend(f"[yellow]warning:[/] {w}" for w in self.warnings)
        return Group(*parts)

    def _joins_table(self) -> Table:
        table = Table(title="joins into deals (rows with a key / matched / unmatched)", title_justify="left")
        for col in ("file", "key", "rows", "matched", "unmatched", "unmatched keys (examples)"):
            table.add_column(col, justify="right" if col in ("rows", "matched", "unmatched") else "left")
        for r in self.joins.itertuples(index=False):
            shown = "-" if not r.unmatched_keys else f"{r.unmatched_keys:,} ({r.examples})"
            if r.expected and r.unmatched_rows:
                shown += " = deals without a close row"
            table.add_row(r.source, r.key, f"{r.rows:,}", f"{r.matched:,}", f"{r.unmatched_rows:,}", shown)
        return table

