"""What the test control plane is made of: its credentials (a CA, a serving certificate,
a service-account key, static tokens), kubeconfigs, and the official CRDs installed and
Established. Used by :mod:`tests.support.kube_real_apiserver`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from kubernetes import client

Obj = dict[str, Any]


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
) -> x509.Certificate:
    """A CA certificate (no issuer) or a serving certificate for 127.0.0.1/localhost."""
    now = dt.datetime.now(dt.UTC)
    issuer_name, signer = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
    return builder.sign(signer, hashes.SHA256())


def write_pki(pki: Path, token: str, bgserve_token: str) -> None:
    """CA, serving certificate, service-account key pair and the static token file
    (an admin in ``system:masters``, and user ``bgserve`` with no rights until granted)."""
    pki.mkdir(parents=True)
    ca_key, serving_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _certificate("bgserve-test-ca", ca_key, None)
    serving = _certificate("kube-apiserver", serving_key, ("bgserve-test-ca", ca_key))
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (pki / "apiserver.crt").write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    (pki / "apiserver.key").write_bytes(_pem_key(serving_key))
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "sa.key").write_bytes(_pem_key(sa_key))
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (pki / "tokens.csv").write_text(
        f'{token},test-admin,test-admin,"system:masters"\n{bgserve_token},bgserve,bgserve\n'
    )


def kubeconfig_text(server: str, ca_file: Path, token: str, namespace: str = "default") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": server,
                                                      "certificate-authority": str(ca_file)}}],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin",
                                                      "namespace": namespace}}],
            "current-context": "test",
        }
    )  # fmt: skip


def crd_documents(crd_dir: Path) -> Iterator[Obj]:
    """Every CustomResourceDefinition document under ``crd_dir``."""
    for path in sorted(crd_dir.rglob("*.yaml")):
        with path.open("rb") as handle:
            for doc in yaml.load_all(handle, Loader=yaml.CSafeLoader):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    yield doc


def install_crds(
    api: client.ApiClient, crd_dir: Path, timeout: float = 60, *, replace: bool = False
) -> None:
    """Create every CRD of ``crd_dir`` with ``api`` (with ``replace``, one of the same name
    already there is replaced) and wait until each is Established."""
    ext = client.ApiextensionsV1Api(api)
    names = []
    for doc in crd_documents(crd_dir):
        name = doc["metadata"]["name"]
        try:
            ext.create_custom_resource_definition(doc)
        except client.ApiException as exc:
            if not (replace and exc.status == 409):
                raise
            existing = ext.read_custom_resource_definition(name)
            doc["metadata"]["resourceVersion"] = existing.metadata.resource_version
            ext.replace_custom_resource_definition(name, doc)
        names.append(name)
    deadline = time.monotonic() + timeout
    for name in names:
        while not _established(ext, name):
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRD {name} not Established within {timeout:g}s")
            time.sleep(0.05)


def _established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    crd = ext.read_custom_resource_definition(name)
    conditions = crd.status.conditions if crd.status else None
    return any(c.type == "Established" and c.status == "True" for c in conditions or [])
