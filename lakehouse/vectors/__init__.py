"""The vector domain: HNSW partitions (``partition``), their int8 mirror (``mirror``) and
filtered search across a worker's partitions (``subsets``), the binary batch format and how
batches are grouped and published (``batches``), resolved filters on the wire (``idsets``),
index definitions (``indexes``), and embedding providers (``embedding``).

May import: ``lakehouse.platform``, ``lakehouse.vectors`` and ``schemas``.
"""
