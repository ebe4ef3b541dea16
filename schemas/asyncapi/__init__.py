"""The AsyncAPI 3 document of the NATS contract, generated from ``schemas/`` through FastStream.

Two modules: ``declarations`` (the broker, one declaration per subject, the binary payload
forms) and ``document`` (:func:`document`: FastStream's output plus what it leaves out).

:data:`broker` is a FastStream ``NatsBroker`` used for declarations only: it is never started
and never connects (the runtime is our own, ``lakehouse.platform.runtime``). It holds one
subscriber per subject our processes receive (a stub handler typed with the payload model) and
one publisher per subject they emit (``broker.publisher(subject, schema=Model)``), for every
subject of :mod:`schemas.subjects`. Addresses come from the subject functions themselves,
called with ``{parameter}`` placeholders named after their arguments.

:func:`document` adds what FastStream 0.7.8 leaves out:

- ``parameters`` of every ``{param}`` address, with descriptions (:data:`PARAMETERS`);
- the reply of every request/reply operation (AsyncAPI 3 ``reply``: a channel with a null
  address, the requester's inbox, and the reply messages, errors included);
- binary payloads (Arrow IPC vector batches and SQL results, the float32 search body, the empty
  health ping) with their ``contentType``, headers and a description;
- it drops FastStream's ``correlationId`` (a ``correlation_id`` header our runtime never sets:
  replies are matched by their reply subject).
"""

from __future__ import annotations

from schemas.asyncapi.document import document

__all__ = ["document"]
