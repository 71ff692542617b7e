"""wss:// end to end with a test CA generated here: relay, RelayLink, and collab-relay --cert."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake

from collab_ls.relay_link import LinkStatus, RelayLink, client_ssl_context
from relay.links import new_room_id, new_secret
from relay.server import Relay
from relay.tls import server_ssl_context
from tests.relay_helpers import files, text, wait_until


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("collab test CA"))
        .issuer_name(_name("collab test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("collab relay"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, cert_pem, key_pem


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def link(doc: pycrdt.Doc[Any], url: str, **kwargs: Any) -> RelayLink:
    return RelayLink(doc, url, origin="remote", backoff_initial=0.05, backoff_max=0.2, **kwargs)


async def test_wss_end_to_end_with_a_test_ca(pki: tuple[Path, Path, Path]) -> None:
    ca, cert, key = pki
    async with Relay(ssl=server_ssl_context(cert, key)) as relay:
        room, secret = new_room_id(), new_secret()
        url = relay.url(room, secret)
        assert url.startswith("wss://127.0.0.1:")
        doc_a, doc_b = pycrdt.Doc(), pycrdt.Doc()
        async with link(doc_a, url, ca_file=ca) as a, link(doc_b, url, ca_file=ca) as b:
            await a.wait_synced(5)
            await b.wait_synced(5)
            files(doc_a)["a.txt"] = pycrdt.Text("over TLS")
            await wait_until(lambda: text(doc_b, "a.txt") == "over TLS")


async def test_certificates_are_verified_by_default(pki: tuple[Path, Path, Path]) -> None:
    _, cert, key = pki
    async with Relay(ssl=server_ssl_context(cert, key)) as relay:
        url = relay.url(new_room_id(), new_secret())
        untrusting = link(pycrdt.Doc(), url)
        async with untrusting:
            await wait_until(lambda: untrusting.status is LinkStatus.DISCONNECTED)
            assert "CERTIFICATE_VERIFY_FAILED" in untrusting.reason
            assert relay.rooms == {}


async def test_plain_text_client_to_a_tls_relay_fails_cleanly(
    pki: tuple[Path, Path, Path],
) -> None:
    ca, cert, key = pki
    async with Relay(ssl=server_ssl_context(cert, key)) as relay:
        room, secret = new_room_id(), new_secret()
        plain = f"ws://127.0.0.1:{relay.port}/{room}?secret={secret}"
        with pytest.raises((InvalidHandshake, OSError, EOFError)):
            async with asyncio.timeout(5), connect(plain):
                pass
        stuck = link(pycrdt.Doc(), plain)
        async with stuck:
            await wait_until(lambda: stuck.status is LinkStatus.DISCONNECTED)
        # The relay keeps serving TLS clients.
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        async with link(doc, relay.url(room, secret), ca_file=ca) as good:
            await good.wait_synced(5)
        assert relay.rooms[room].text("files", "x") is None


def test_client_context_verifies() -> None:
    import ssl

    context = client_ssl_context()
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "relay.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_cli_serves_wss(pki: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ca, cert, key = pki
    with start_cli(
        "--port",
        "0",
        "--no-store",
        "--log-file",
        str(tmp_path / "relay.log"),
        "--cert",
        str(cert),
        "--key",
        str(key),
    ) as proc:
        try:
            assert proc.stderr is not None
            line = await asyncio.to_thread(proc.stderr.readline)
            assert line.startswith("collab-relay listening on wss://127.0.0.1:"), line
            base = line.split()[-1]
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            async with link(doc, f"{base}/{new_room_id()}?secret={new_secret()}", ca_file=ca) as a:
                await a.wait_synced(5)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
