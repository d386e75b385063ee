"""Where tables live in a siyu data directory, and how they are read and written.

Layout of a data directory::

    DIR/customers.parquet  orders.parquet  events.parquet  touches.parquet  identities.parquet
    DIR/truth/...            (synthetic worlds only: the generator's latent truth)
    DIR/snapshots/YYYY-MM-DD.parquet   (feature snapshots, newest = latest cutoff)

Writes are atomic (temp file in the same folder, then rename) so a crashed job never leaves a
half-written file where a reader would find it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pandas as pd

from features.schema import TABLES, check_table


def table_path(data_dir: str | Path, name: str) -> Path:
    """Path of table ``name`` inside ``data_dir``."""
    return Path(data_dir) / f"{name}.parquet"


def snapshot_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "snapshots"


def atomic_write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to ``path`` atomically and deterministically (same frame, same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_table(
    data_dir: str | Path, name: str, validate: bool = False, columns: list[str] | None = None
) -> pd.DataFrame:
    """Read one contract table (only ``columns`` if given); with ``validate`` raise a ContractError
    listing every bad row."""
    path = table_path(data_dir, name)
    if not path.exists():
        raise FileNotFoundError(f"table {name!r} not found: expected {path}")
    df = pd.read_parquet(path, columns=columns)
    return check_table(name, df) if validate else df


def write_table(df: pd.DataFrame, data_dir: str | Path, name: str, validate: bool = True) -> Path:
    """Validate (by default) and atomically write one contract table."""
    if validate:
        check_table(name, df)
    return atomic_write_parquet(df, table_path(data_dir, name))


def file_fingerprint(paths: list[Path]) -> str:
    """SHA-256 over the bytes of ``paths`` (sorted), used to stamp runs with their data."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def data_fingerprint(data_dir: str | Path) -> str:
    """Fingerprint of the contract tables present in ``data_dir``."""
    paths = [table_path(data_dir, t) for t in TABLES if table_path(data_dir, t).exists()]
    return file_fingerprint(paths)
