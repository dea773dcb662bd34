"""Runs the download guard's tests (tests/netns/) inside a network and mount namespace of their own.

A guard that fails there can reach nothing: the namespace has only its loopback interface, on which the inner tests
place trap listeners at the addresses that must be refused and count every connection made to them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _namespaces_available() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare (util-linux) and ip (iproute2)"
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], check=False, capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot create namespaces here: {probe.stderr.strip()}"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "public.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("public.test"),
                                                        x509.IPAddress(ipaddress.ip_address("1.2.3.4"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_download_guard_in_a_sealed_network_namespace(tmp_path: Path) -> None:
    reason = _namespaces_available()
    if reason is not None:
        pytest.skip(reason)
    cert, key = _self_signed(tmp_path)
    env = {**os.environ, "AI_ASSETS_NETNS": "1", "AI_ASSETS_NETNS_CERT": str(cert), "AI_ASSETS_NETNS_KEY": str(key),
           "SSL_CERT_FILE": str(cert), "NO_PROXY": "*"}
    result = subprocess.run(
        ["unshare", "--net", "--mount", "--", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/netns"], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
