"""Developer tools: deterministic data generation, the benchmark (``bench``), real servers
(nats-server, SeaweedFS) and whole stacks of processes for tests and the benchmark, and the
in-process worker harness.

May import anything of the project except ``tests``; nothing that runs in production
imports it.
"""
