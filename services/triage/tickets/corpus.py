"""Labelled tickets from a CSV file (plain or gzipped): a global corpus the operator marks as
such, or the data `msp eval tickets` measures on."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path


def read_labelled(path: Path, text_col: str, label_col: str) -> tuple[list[int], list[str], list[str]]:
    if not path.is_file():
        raise ValueError(f"no labelled CSV at {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:  # type: ignore[operator]
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        for col in (text_col, label_col):
            if col not in cols:
                raise ValueError(f"{path}: no column {col!r} (columns: {', '.join(cols)})")
        rows, texts, labels = [], [], []
        for i, r in enumerate(reader):
            text, label = (r[text_col] or "").strip(), (r[label_col] or "").strip()
            if text and label:
                rows.append(i)
                texts.append(text)
                labels.append(label)
    if not texts:
        raise ValueError(f"{path}: no labelled rows")
    return rows, texts, labels
