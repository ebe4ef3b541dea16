"""Time-to-recover records of the crash matrix, printed in pytest's terminal summary."""

from __future__ import annotations

RECORDS: list[str] = []


def record(row: str, seconds: float, checked: str) -> None:
    RECORDS.append(f"{row:<60} {seconds:6.2f} s   {checked}")
