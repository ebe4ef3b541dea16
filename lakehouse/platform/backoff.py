"""The one retry schedule: exponential backoff, doubling from a base up to a cap.

Used for nak delays of failing messages, restarts of dead children, first connects to NATS,
start-up provisioning and publishes refused for a full stream (429).
"""

from __future__ import annotations


def delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry):
    ``base``, ``2·base``, ``4·base``, … never more than ``cap``."""
    return float(min(cap, base * 2 ** max(0, attempt)))
