"""Operator tools: the supervisor behind ``lakehouse up``, replay and verify (rebuild state
from the log and compare), dead-letter tools, and the ``lakehouse`` CLI package (``cli``).

May import: the core (``platform``, ``tables``, ``vectors``), ``schemas``, and what it
starts (``workers``, ``gateway``); only the CLI's developer verbs reach ``devtools``.
"""
