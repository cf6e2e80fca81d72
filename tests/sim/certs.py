#!/usr/bin/env python3
"""Throwaway TLS material for the simulators, made with the openssl CLI.

make_certs(dirpath) creates, unless already present:
  ca.pem, ca.key          a self-signed test CA
  server.pem, server.key  a server certificate for 127.0.0.1 and localhost
                          (SAN IP:127.0.0.1, DNS:localhost) signed by the CA
and returns {"dir", "ca", "ca_key", "cert", "key"} (absolute paths).
Idempotent, and safe when several test processes call it on one directory
(an flock serialises them).  Keys are EC P-256: fast to generate.

CLI: python3 tests/sim/certs.py DIR   (prints the paths as JSON)
"""

import fcntl
import json
import os
import subprocess
import sys
import tempfile

CA_DAYS = 3650
SERVER_DAYS = 825

CA_CONF = """\
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = gcrelay test CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

SERVER_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def _openssl(*args, cwd):
    subprocess.run(("openssl",) + args, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _paths(d):
    return {"dir": d,
            "ca": os.path.join(d, "ca.pem"),
            "ca_key": os.path.join(d, "ca.key"),
            "cert": os.path.join(d, "server.pem"),
            "key": os.path.join(d, "server.key")}


def make_certs(dirpath):
    """Create (or reuse) the CA and server certificate in `dirpath`.
    Returns a dict of absolute paths."""
    d = os.path.abspath(dirpath)
    os.makedirs(d, exist_ok=True)
    paths = _paths(d)
    with open(os.path.join(d, ".certs.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        have_ca = all(os.path.exists(paths[k]) for k in ("ca", "ca_key"))
        have_server = all(os.path.exists(paths[k]) for k in ("cert", "key"))
        if have_ca and have_server:
            return paths
        # Build in a scratch directory, then move into place: a crash never
        # leaves a half-written set that a later call would reuse.
        with tempfile.TemporaryDirectory(dir=d) as tmp:
            if not have_ca:
                with open(os.path.join(tmp, "ca.cnf"), "w") as f:
                    f.write(CA_CONF)
                _openssl("req", "-x509", "-new", "-nodes", "-newkey", "ec",
                         "-pkeyopt", "ec_paramgen_curve:prime256v1",
                         "-keyout", "ca.key", "-out", "ca.pem",
                         "-days", str(CA_DAYS), "-config", "ca.cnf", cwd=tmp)
                ca, ca_key = (os.path.join(tmp, "ca.pem"),
                              os.path.join(tmp, "ca.key"))
            else:
                ca, ca_key = paths["ca"], paths["ca_key"]
            with open(os.path.join(tmp, "server.ext"), "w") as f:
                f.write(SERVER_EXT)
            _openssl("req", "-new", "-nodes", "-newkey", "ec",
                     "-pkeyopt", "ec_paramgen_curve:prime256v1",
                     "-keyout", "server.key", "-out", "server.csr",
                     "-subj", "/CN=localhost", cwd=tmp)
            _openssl("x509", "-req", "-in", "server.csr", "-CA", ca,
                     "-CAkey", ca_key, "-set_serial",
                     str(int.from_bytes(os.urandom(8), "big")),
                     "-days", str(SERVER_DAYS), "-extfile", "server.ext",
                     "-out", "server.pem", cwd=tmp)
            if not have_ca:
                os.replace(ca_key, paths["ca_key"])
                os.replace(ca, paths["ca"])
            os.replace(os.path.join(tmp, "server.key"), paths["key"])
            os.replace(os.path.join(tmp, "server.pem"), paths["cert"])
        for k in ("ca_key", "key"):
            os.chmod(paths[k], 0o600)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: %s DIR\n" % sys.argv[0])
        sys.exit(2)
    print(json.dumps(make_certs(sys.argv[1]), indent=2))
