"""Where a client finds its token and TLS settings, in the C++ client's order.

Token: the explicit `token=` / `token_file=` argument, else $DEXEC_TOKEN,
else $DEXEC_TOKEN_FILE, else ./dexec-data/client.token if readable. A token
file's first line, stripped, is the token. TLS: `tls_ca=` or $DEXEC_TLS_CA
(a PEM file of the CA that signed the broker's certificate), optionally a
client certificate and key for mutual TLS.
"""
import os

from .errors import AuthError

DEFAULT_TOKEN_FILE = os.path.join("dexec-data", "client.token")

WHERE_TOKENS_COME_FROM = (
    "pass token= or token_file=, or set DEXEC_TOKEN or DEXEC_TOKEN_FILE, or "
    "run where ./dexec-data/client.token (written by the broker in its "
    "--auth_dir) is readable")


def _read_token_file(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            line = f.readline().strip()
    except OSError as e:
        raise AuthError("cannot read token file %s: %s" % (path, e.strerror))
    if not line:
        raise AuthError("token file %s is empty" % path)
    return line


def find_token(token=None, token_file=None):
    """Returns (token or None, where it came from)."""
    if token:
        return token, "token="
    if token_file:
        return _read_token_file(token_file), token_file
    env = os.environ.get("DEXEC_TOKEN")
    if env:
        return env.strip(), "$DEXEC_TOKEN"
    env_file = os.environ.get("DEXEC_TOKEN_FILE")
    if env_file:
        return _read_token_file(env_file), env_file
    if os.access(DEFAULT_TOKEN_FILE, os.R_OK):
        return _read_token_file(DEFAULT_TOKEN_FILE), DEFAULT_TOKEN_FILE
    return None, None


def _read_pem(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError("cannot read %s %s: %s" % (what, path, e.strerror))


def channel_credentials(tls_ca=None, tls_cert=None, tls_key=None):
    """grpc.ChannelCredentials for TLS, or None for plaintext (loopback)."""
    import grpc
    tls_ca = tls_ca or os.environ.get("DEXEC_TLS_CA")
    if not tls_ca:
        if tls_cert or tls_key:
            raise ValueError("tls_cert/tls_key need tls_ca (or $DEXEC_TLS_CA)")
        return None
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("mutual TLS needs both tls_cert and tls_key")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(tls_ca, "TLS CA file"),
        private_key=_read_pem(tls_key, "TLS key file") if tls_key else None,
        certificate_chain=_read_pem(tls_cert, "TLS certificate file")
        if tls_cert else None)
