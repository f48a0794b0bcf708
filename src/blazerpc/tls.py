"""TLS contexts: the server's, one per transport, from the ``--ssl-*`` files, and ``BlazeClient``'s.

The transports differ only in ALPN: gRPC says ``h2`` (grpc-go clients, grpcurl among them, refuse
a server that does not), HTTP says ``http/1.1``, all uvicorn speaks. How long a handshake may take
and how a connection still in one is counted is ``blazerpc.connections``' business.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .serving import ServeConfig

GRPC_ALPN = "h2"
HTTP_ALPN = "http/1.1"


def server_context(config: ServeConfig, alpn: str) -> ssl.SSLContext:
    """TLS 1.2 or later with ``config.ssl_certfile``'s chain; with ``ssl_ca_certs``, every client must
    present a certificate signed by one of those CAs (mutual TLS). Raises ValueError on a bad file."""
    if config.ssl_certfile is None:
        raise ValueError("TLS needs ssl_certfile (the server's certificate chain, PEM)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([alpn])
    _load_certificate(context, config.ssl_certfile, config.ssl_keyfile, names=("ssl_certfile", "ssl_keyfile"))
    if config.ssl_ca_certs is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        _load_trusted(context, config.ssl_ca_certs, "ssl_ca_certs")
    return context


def client_context(
    tls: bool | str | ssl.SSLContext, certfile: str | None = None, keyfile: str | None = None
) -> ssl.SSLContext:
    """What a gRPC client connects with: ``True`` trusts the system's CAs, a path the CAs in that PEM
    file, a context is used as it is. ``certfile`` (and ``keyfile`` if the key is not in it): the
    client's own certificate, for a server that requires one."""
    if isinstance(tls, ssl.SSLContext):
        if certfile is not None or keyfile is not None:
            raise ValueError("with an SSLContext, load the client certificate into it (load_cert_chain)")
        return tls
    if tls is False:
        raise ValueError("certfile and keyfile need tls (True, or the CA file that signed the server's certificate)")
    if isinstance(tls, str):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks the hostname; trusts only tls's CAs
        _load_trusted(context, tls, "tls")
    else:
        context = ssl.create_default_context()  # the system's CAs
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([GRPC_ALPN])
    if certfile is not None:
        _load_certificate(context, certfile, keyfile, names=("certfile", "keyfile"))
    elif keyfile is not None:
        raise ValueError("keyfile needs certfile (the client's certificate)")
    return context


def _load_certificate(context: ssl.SSLContext, certfile: str, keyfile: str | None, names: tuple[str, str]) -> None:
    """``context.load_cert_chain`` with errors that say which file is wrong and how."""
    cert_name, key_name = names
    key_path, key_where = (keyfile, key_name) if keyfile is not None else (certfile, cert_name)
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _load_trusted(scratch, certfile, cert_name, what="certificate")

    def encrypted() -> str:  # OpenSSL would otherwise ask for the passphrase on the terminal
        raise ValueError(f"{key_where}: the private key in {key_path} is encrypted; give it unencrypted")

    try:
        context.load_cert_chain(certfile, keyfile, password=encrypted)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            message = f"{key_where}: the private key in {key_path} does not match the certificate in {certfile}"
            raise ValueError(message) from None
        if keyfile is None:
            raise ValueError(f"{cert_name}: no private key in {certfile}; give it in {key_name}") from None
        raise ValueError(f"{key_name}: no PEM private key in {keyfile}") from None
    except OSError as exc:
        raise ValueError(f"{key_where}: cannot read {key_path}: {exc.strerror}") from None


def _load_trusted(context: ssl.SSLContext, path: str, name: str, what: str = "CA certificate") -> None:
    """``context.load_verify_locations(path)``, ValueError if ``path`` holds no PEM certificate."""
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise ValueError(f"{name}: no PEM {what} in {path}") from None
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path}: {exc.strerror}") from None
