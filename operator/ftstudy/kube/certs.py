"""The report endpoint's TLS: a CA and a serving certificate the operator makes and rotates itself, kept in a Secret.

As Kueue's webhooks do (open-policy-agent/cert-controller), the chart creates the Secret empty and the operator
fills it: a platform team needs no cert-manager, and ``helm template`` or a GitOps tool renders nothing secret. The
Secret is the replicas' shared memory: a new leader serves the certificate its predecessor made, so running trials,
which were given the CA in their Job (it is public), still verify the endpoint after a leader change or a restart.

- The CA lives ten years; the serving certificate ninety days and is made anew when under thirty are left, or when
  the names the trials use (``--report-url``'s host) change. A renewal keeps the CA, so no trial notices.
- Written with ``update`` and the Secret's resourceVersion: two replicas that renew at once cannot both win, and the
  loser reads the winner's.
- The operator's Role may get and update this one Secret by name, and create none (the chart creates it).
- Or the Secret is cert-manager's (``--report-tls-external``, the chart's ``reports.certManager``): the operator
  only reads it (``read_external``), serves what it finds, and reloads it when cert-manager renews it.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from ftstudy.kube.api import ApiError, Kube, path

log = logging.getLogger(__name__)

CA_DAYS = 3650
SERVING_DAYS = 90
RENEW_BEFORE_DAYS = 30
KEYS = ("ca.crt", "ca.key", "tls.crt", "tls.key")


@dataclass(frozen=True)
class Bundle:
    ca_pem: str
    ca_key_pem: str
    cert_pem: str
    key_pem: str


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return str(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    )


def _pem_cert(cert: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return str(cert.public_bytes(serialization.Encoding.PEM).decode())


def make_ca(now: dt.datetime) -> tuple[str, str]:
    """A new CA: its certificate and key, PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ftstudy report CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem_cert(cert), _pem_key(key)


def _alt_name(host: str) -> Any:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_serving(ca_pem: str, ca_key_pem: str, hosts: list[str], now: dt.datetime) -> tuple[str, str]:
    """A serving certificate for ``hosts`` (DNS names or IP addresses) signed by the CA, and its key, PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVING_DAYS))
        .add_extension(x509.SubjectAlternativeName([_alt_name(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return _pem_cert(cert), _pem_key(key)


def _loaded(bundle: Bundle) -> tuple[Any, Any]:
    from cryptography import x509

    return (x509.load_pem_x509_certificate(bundle.cert_pem.encode()),
            x509.load_pem_x509_certificate(bundle.ca_pem.encode()))  # fmt: skip


def _not_signed(cert: Any, ca: Any) -> str | None:
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "it was not signed by the CA in the Secret"
    return None


def _misnamed(cert: Any, hosts: list[str]) -> str | None:
    from cryptography import x509

    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    found = sorted(str(getattr(n, "value", n)) for n in names)
    if found != sorted(str(_alt_name(h).value) for h in hosts):
        return f"it names {', '.join(found)}, not {', '.join(hosts)}"
    return None


def renewal_due(bundle: Bundle, hosts: list[str], now: dt.datetime) -> str | None:
    """Why the serving certificate must be made anew (None: it is good): it expires within RENEW_BEFORE_DAYS, or
    does not name exactly ``hosts``, or the CA does not expire after it."""
    cert, ca = _loaded(bundle)
    expiring = None
    if cert.not_valid_after_utc - now < dt.timedelta(days=RENEW_BEFORE_DAYS):
        expiring = f"it expires at {cert.not_valid_after_utc.isoformat()}"
    return _not_signed(cert, ca) or expiring or _misnamed(cert, hosts)


def _decode(secret: dict[str, Any]) -> Bundle | None:
    data = secret.get("data") or {}
    if not all(data.get(key) for key in KEYS):
        return None
    ca, ca_key, cert, key = (base64.b64decode(data[k]).decode() for k in KEYS)
    return Bundle(ca, ca_key, cert, key)


def ensure(kube: Kube, namespace: str, name: str, hosts: list[str], now: dt.datetime | None = None) -> Bundle:
    """The Secret's bundle, made or renewed first if need be (``ApiError`` 404 if the Secret does not exist: the
    chart creates it; 409 if another replica wrote it meanwhile: call again)."""
    now = now or dt.datetime.now(dt.UTC)
    secret_path = path("", "v1", "secrets", namespace, name)
    secret = kube.get(secret_path)
    bundle = _decode(secret)
    if bundle is not None:
        why = renewal_due(bundle, hosts, now)
        if why is None:
            return bundle
        log.info("renewing the report endpoint's serving certificate: %s", why)
        ca, ca_key = bundle.ca_pem, bundle.ca_key_pem
    else:
        log.info("making the report endpoint's CA and serving certificate in Secret %s/%s", namespace, name)
        ca, ca_key = make_ca(now)
    cert, key = make_serving(ca, ca_key, hosts, now)
    bundle = Bundle(ca, ca_key, cert, key)
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in zip(KEYS, (ca, ca_key, cert, key), strict=True)}
    kube.replace(secret_path, {**secret, "type": secret.get("type", "Opaque"), "data": encoded})
    return bundle


class NotIssued(ValueError):
    """The Secret another party keeps (``--report-tls-external``) holds no usable certificate yet."""


def read_external(kube: Kube, namespace: str, name: str, hosts: list[str], now: dt.datetime | None = None) -> Bundle:
    """The bundle in a Secret that cert-manager (or anyone but the operator) writes and renews, in cert-manager's
    layout: ``tls.crt``, ``tls.key`` and ``ca.crt`` (which a CA or self-signed issuer writes; the trials verify the
    endpoint against it). Never written here. ``NotIssued`` names what is missing or wrong: a certificate trials
    could not verify (not signed by ``ca.crt``, or not naming ``hosts``) is not served."""
    now = now or dt.datetime.now(dt.UTC)
    secret = kube.get(path("", "v1", "secrets", namespace, name))
    data = secret.get("data") or {}
    missing = [key for key in ("tls.crt", "tls.key", "ca.crt") if not data.get(key)]
    if missing:
        raise NotIssued(f"Secret {namespace}/{name} has no {', '.join(missing)} yet: has cert-manager issued its "
                        "Certificate (kubectl describe certificate)? Its issuer must write ca.crt (a CA or "
                        "self-signed issuer), which the trials verify the endpoint against")  # fmt: skip
    ca, cert, key = (base64.b64decode(data[k]).decode() for k in ("ca.crt", "tls.crt", "tls.key"))
    bundle = Bundle(ca, "", cert, key)
    loaded, loaded_ca = _loaded(bundle)
    why = _not_signed(loaded, loaded_ca) or _misnamed(loaded, hosts)
    if why is not None:
        raise NotIssued(f"the certificate in Secret {namespace}/{name} cannot be served: {why}")
    if loaded.not_valid_after_utc < now:  # served all the same: cert-manager renews it
        log.warning("the report endpoint's certificate in Secret %s/%s expired at %s: cert-manager renews it",
                    namespace, name, loaded.not_valid_after_utc.isoformat())  # fmt: skip
    return bundle


def ensure_retrying(kube: Kube, namespace: str, name: str, hosts: list[str]) -> Bundle:
    """``ensure``, again after a conflict (another replica renewed first: its bundle is then read and kept)."""
    for _ in range(3):
        try:
            return ensure(kube, namespace, name, hosts)
        except ApiError as error:
            if error.status != 409:
                raise
    return ensure(kube, namespace, name, hosts)
