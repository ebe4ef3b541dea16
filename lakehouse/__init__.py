"""Lakehouse core, in sub-packages by role (the folder says what it is):

- ``platform``  mechanics every process uses: config, logs, errors, NATS bus, rpc, the worker
  runtime, storage, streams, leases, backoff, fault points. Imports only ``schemas``.
- ``tables``    the tabular domain: CSV → Parquet, the catalog, DuckDB views, SQL → JSON, GC.
- ``vectors``   the vector domain: HNSW partitions, vector batches, index definitions,
  embedding providers.
- ``ops``       operator tools: the supervisor (``lakehouse up``), replay, verify, dead
  letters, and the ``lakehouse`` CLI package.
- ``devtools``  developer tools: data generation, the benchmark, real servers and stacks for
  tests, the in-process worker harness. Never imported by what runs in production.

``tests/test_layout.py`` enforces who may import whom.
"""

__version__ = "0.1.0"
