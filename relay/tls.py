"""TLS contexts for the relay (``wss://``) and its clients."""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["client_ssl_context", "server_ssl_context"]


def server_ssl_context(cert_file: Path | str, key_file: Path | str | None = None) -> ssl.SSLContext:
    """A server context for the relay.

    Args:
        cert_file: The certificate chain (PEM), leaf first.
        key_file: Its private key (PEM); ``None`` when it is in ``cert_file``.

    Returns:
        A context requiring TLS 1.2 or later.

    Raises:
        OSError, ssl.SSLError: If the files cannot be read or do not match.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def client_ssl_context(ca_file: Path | str | None = None) -> ssl.SSLContext:
    """A client context that verifies the relay's certificate and host name.

    Args:
        ca_file: A PEM file of CA certificates to trust (a private CA or a
            self-signed relay certificate); ``None`` trusts the system's CAs.

    Returns:
        The context. Verification is never turned off.

    Raises:
        OSError, ssl.SSLError: If ``ca_file`` cannot be read.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
