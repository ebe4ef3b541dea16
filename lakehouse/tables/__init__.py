"""The tabular domain: CSV → Parquet conversion, the catalog (events, manifests, restore),
DuckDB views over a dataset's objects and delete sets, upserts (``merge``: the diff by key
and compaction; ``upserts``: computing and storing them), schema evolution (``evolve``),
rows by id for search hits (``rows``), SQL results as JSON, and garbage collection.

May import: ``lakehouse.platform``, ``lakehouse.tables`` and ``schemas``.
"""
