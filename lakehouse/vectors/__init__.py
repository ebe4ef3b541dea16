"""The vector domain: HNSW partitions (``partition``), the binary batch format and how
batches are grouped and published (``batches``), index definitions (``indexes``), and
embedding providers (``embedding``).

May import: ``lakehouse.platform``, ``lakehouse.vectors`` and ``schemas``.
"""
