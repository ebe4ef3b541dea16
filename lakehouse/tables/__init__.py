"""The tabular domain: CSV → Parquet conversion, the catalog (events, manifests, restore),
DuckDB views over a dataset's objects, SQL results as JSON, and garbage collection.

May import: ``lakehouse.platform``, ``lakehouse.tables`` and ``schemas``.
"""
