"""TLS certificates: ECS `x509.*` of a DER certificate, with the `cryptography` library.

Apart from decoders/tls.py because the library takes tens of milliseconds of CPU to
import: tls.py imports this module at its first certificate, and the CLI imports it
before a privilege drop when TLS is enabled (DecoderSpec.lazy_imports).
"""
from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from wirebeat.decoders.api import DecodeError

__all__ = ["x509_fields"]

_NAME_FIELDS = (
    ("common_name", NameOID.COMMON_NAME), ("country", NameOID.COUNTRY_NAME),
    ("organization", NameOID.ORGANIZATION_NAME),
    ("organizational_unit", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("locality", NameOID.LOCALITY_NAME), ("state_or_province", NameOID.STATE_OR_PROVINCE_NAME),
    ("postal_code", NameOID.POSTAL_CODE), ("street_address", NameOID.STREET_ADDRESS),
    ("serial_number", NameOID.SERIAL_NUMBER),
)
# Go's x509.SignatureAlgorithm names, as packetbeat writes them.
_SIGNATURE_NAMES = {
    "1.2.840.113549.1.1.4": "MD5-RSA", "1.2.840.113549.1.1.5": "SHA1-RSA",
    "1.2.840.113549.1.1.11": "SHA256-RSA", "1.2.840.113549.1.1.12": "SHA384-RSA",
    "1.2.840.113549.1.1.13": "SHA512-RSA", "1.2.840.10045.4.1": "ECDSA-SHA1",
    "1.2.840.10045.4.3.2": "ECDSA-SHA256", "1.2.840.10045.4.3.3": "ECDSA-SHA384",
    "1.2.840.10045.4.3.4": "ECDSA-SHA512", "1.3.101.112": "Ed25519",
    "2.16.840.1.101.3.4.3.2": "DSA-SHA256",
}


def _date(value: Any) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _name(name: x509.Name) -> dict[str, str]:
    out = {"distinguished_name": name.rfc4514_string()}
    for key, oid in _NAME_FIELDS:
        values = [str(a.value) for a in name.get_attributes_for_oid(oid)]
        if values:
            out[key] = " ".join(values)
    return out


def _public_key(cert: x509.Certificate) -> tuple[str, int | None]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ECDSA", key.curve.key_size
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    return "unknown", None


def _signature_name(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid.dotted_string
    if oid == "1.2.840.113549.1.1.10":          # RSASSA-PSS: the hash is in the parameters
        digest = cert.signature_hash_algorithm
        return f"{digest.name.upper()}-RSAPSS" if digest else "RSAPSS"
    return _SIGNATURE_NAMES.get(oid, oid)


def x509_fields(der: bytes) -> dict[str, Any]:
    """ECS x509.* of one DER certificate. Raises DecodeError("tls.bad_certificate")."""
    try:
        cert = x509.load_der_x509_certificate(der)
        out: dict[str, Any] = {
            "version_number": str(cert.version.value + 1),
            "serial_number": str(cert.serial_number),
            "subject": _name(cert.subject),
            "issuer": _name(cert.issuer),
            "not_before": _date(cert.not_valid_before_utc),
            "not_after": _date(cert.not_valid_after_utc),
            "signature_algorithm": _signature_name(cert),
        }
        algorithm, size = _public_key(cert)
        out["public_key_algorithm"] = algorithm
        if size:
            out["public_key_size"] = size
        try:
            san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        except x509.ExtensionNotFound:
            san = None
        if san is not None:
            names = [*san.get_values_for_type(x509.DNSName),
                     *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
                     *san.get_values_for_type(x509.RFC822Name),
                     *san.get_values_for_type(x509.UniformResourceIdentifier)]
            if names:
                out["alternative_names"] = names
    except Exception as err:    # anything the library makes of wire bytes (UnsupportedAlgorithm...)
        raise DecodeError("tls.bad_certificate") from err
    return out
