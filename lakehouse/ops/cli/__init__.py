"""The ``lakehouse`` command, one module per group of verbs.

``options`` holds what every command shares (connection options, ``--json``, the one-line
error exit); ``main`` assembles the app from the command modules, which import ``options``
and the core packages, never each other.
"""
