"""Data quality: contract validation of a data directory, snapshot checks and drift (PSI)."""

from __future__ import annotations

from pathlib import Path

from features.io import read_table, table_path
from features.schema import TABLES, ValidationReport, validate_table


def validate_data_dir(data_dir: str | Path) -> tuple[list[ValidationReport], list[str]]:
    """Validate every contract table in ``data_dir``.

    Returns the per-table reports (each with every failing row) and the names of missing tables.
    """
    reports: list[ValidationReport] = []
    missing: list[str] = []
    for name in TABLES:
        if not table_path(data_dir, name).exists():
            missing.append(name)
            continue
        reports.append(validate_table(name, read_table(data_dir, name)))
    return reports, missing
