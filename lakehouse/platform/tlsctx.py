"""The one place a client's TLS context is built from the ``tls`` settings (NATS, the
supervisor's health check of an HTTPS gateway).

S3 (boto3) takes a CA bundle's path instead of a context, and its own:
``storage.s3_ca_file`` (an S3 endpoint is usually signed by a public CA, not the stack's).
"""

from __future__ import annotations

import ssl

from lakehouse.platform.config import TlsSettings


def client_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """A context that trusts only ``tls.ca_file`` and presents ``cert_file`` (its key in
    ``key_file``, else in the same PEM) when set (mutual TLS); None without a CA (the
    caller's default trust)."""
    if tls.ca_file is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    if tls.cert_file is not None:
        key = str(tls.key_file) if tls.key_file is not None else None
        ctx.load_cert_chain(str(tls.cert_file), key)
    return ctx
