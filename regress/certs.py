"""Certificates for the TLS cases, made by the test itself with Debian's
python3-cryptography (run it with /usr/bin/python3): a private CA and, each
signed by it for a server name, a good certificate, an expired one and one
for another name. EC P-256 keys; the server certificates carry the name in
subjectAltName and serverAuth in extendedKeyUsage, as a public CA issues
them.

usage: certs.py DIR NAME [DAYS]
writes DIR/ca.pem, and DIR/good.pem, DIR/expired.pem, DIR/wrong.pem each
with its key in DIR/good.key, DIR/expired.key, DIR/wrong.key; the CA and
the good certificate are valid from a day ago for DAYS days (default 2),
the expired one ended a day ago, the wrong one names "wrong.NAME"."""
import datetime
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

out, name = sys.argv[1], sys.argv[2]
days = int(sys.argv[3]) if len(sys.argv) > 3 else 2
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
day = datetime.timedelta(days=1)


def key():
    return ec.generate_private_key(ec.SECP256R1())


def write(path, data):
    with open(os.path.join(out, path), "wb") as f:
        f.write(data)


ca_key = key()
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mta regress CA")])
ca = (
    x509.CertificateBuilder()
    .subject_name(ca_name)
    .issuer_name(ca_name)
    .public_key(ca_key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - day)
    .not_valid_after(now + days * day)
    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    .add_extension(
        x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                      data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                      encipher_only=False, decipher_only=False),
        critical=True,
    )
    .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
    .sign(ca_key, hashes.SHA256())
)
write("ca.pem", ca.public_bytes(serialization.Encoding.PEM))


def server(stem, host, not_before, not_after):
    k = key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write(stem + ".pem", cert.public_bytes(serialization.Encoding.PEM))
    write(stem + ".key", k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))


server("good", name, now - day, now + days * day)
server("expired", name, now - 3 * day, now - day)
server("wrong", "wrong." + name, now - day, now + days * day)
