"""The worker's CURVE credentials file (written by the broker in its
--auth_dir, or by the admin RPC CreateWorkerKey):

    # dexec worker credentials: keep secret (mode 0600)
    name=<key name>
    public=<worker public key, Z85, 40 chars>
    secret=<worker secret key, Z85>
    broker_public=<broker public key, Z85>
"""
import os
import stat


class CredentialsError(Exception):
    """The file is missing, unsafe or malformed; the message says which and
    what to do."""


def load(path):
    """{name, public, secret, broker_public}; raises CredentialsError."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CredentialsError(
            "worker credentials %s not found: copy the broker's worker.key "
            "there (from its --auth_dir), pass --worker_key=FILE, or "
            "--insecure for a broker started with --insecure" % path) from None
    except OSError as e:
        raise CredentialsError("cannot read worker credentials %s: %s" %
                               (path, e.strerror)) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            "worker credentials %s are readable by group or others (mode "
            "%04o); run: chmod 600 %s" % (path, stat.S_IMODE(st.st_mode), path))
    fields = {}
    try:
        with open(path, "r", encoding="ascii") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                key, sep, value = line.partition("=")
                if sep:
                    fields[key.strip()] = value.strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CredentialsError("cannot read worker credentials %s: %s" %
                               (path, e)) from None
    for key in ("public", "secret", "broker_public"):
        if len(fields.get(key, "")) != 40:
            raise CredentialsError(
                "worker credentials %s: '%s=' must be a 40-character Z85 key"
                % (path, key))
    fields.setdefault("name", "")
    return fields
