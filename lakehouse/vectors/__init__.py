"""The vector domain: HNSW partitions (``partition``), their int8 mirror (``mirror``) and
filtered search across a worker's partitions (``subsets``), the binary batch format and how
batches are grouped and published (``batches``), resolved filters on the wire (``idsets``),
index definitions (``indexes``), embedding providers (``embedding``), auto-embed publishing
(``autoembed``) and the hashes of the texts an index holds (``texts``).

May import: ``lakehouse.platform``, ``lakehouse.vectors`` and ``schemas``.
"""
