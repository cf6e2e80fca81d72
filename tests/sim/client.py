"""Test-side helpers: start a simulator and drive its control API.

    from tests.sim.certs import make_certs          # or put tests/sim on sys.path
    from tests.sim.client import start_sim, stop_sim

    certs = make_certs(tmpdir)
    proc, port, sim = start_sim("emarsys", certs)
    sim.reset()
    sim.config({"accounts": {"acme": {"secret": "s3"}}})
    sim.fault("status", status=503, path_prefix="/api/v3/contact")
    ... run gcrelay against https://127.0.0.1:<port>/api/v3/ ...
    assert sim.stats()["connections"] == 1
    stop_sim(proc)

The simulator exits on its own when its stdin closes, so a test runner that
dies never leaves one behind.
"""

import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = {"emarsys": "emarsys_sim.py", "yotpo": "yotpo_sim.py"}


class SimError(Exception):
    """A control-API call answered with a non-2xx status."""

    def __init__(self, status, body):
        super().__init__("control API answered %d: %s" % (status, body))
        self.status = status
        self.body = body


class SimClient:
    """Calls a simulator's /_sim/ control API.  One short-lived connection
    per call, so these calls never show up as the client under test's
    connections (and control calls are not recorded anyway)."""

    def __init__(self, base_url, cafile=None, timeout=10.0):
        split = urllib.parse.urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self.scheme = split.scheme
        self.host = split.hostname
        self.port = split.port
        self.timeout = timeout
        self.ssl_context = None
        if self.scheme == "https":
            self.ssl_context = ssl.create_default_context(cafile=cafile)

    def url(self, path):
        """Absolute URL of a path on the simulator (for the code under test)."""
        return self.base_url + path

    def connection(self, timeout=None):
        """A new http.client connection to the simulator (verified TLS)."""
        timeout = self.timeout if timeout is None else timeout
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout,
                context=self.ssl_context)
        return http.client.HTTPConnection(self.host, self.port,
                                          timeout=timeout)

    def call(self, method, path, body=None):
        """One control call; returns the decoded JSON reply."""
        conn = self.connection()
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data else {}
            conn.request(method, "/_sim/" + path.lstrip("/"), data, headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        payload = json.loads(raw) if raw else None
        if not 200 <= resp.status < 300:
            raise SimError(resp.status, payload)
        return payload

    # ---- control API ------------------------------------------------------

    def health(self):
        return self.call("GET", "health")

    def reset(self, keep_config=False):
        """Records, faults, counters and state cleared; config back to the
        startup config unless keep_config."""
        return self.call("POST", "reset", {"keep_config": keep_config})

    def config(self, patch=None, **kwargs):
        """Deep-merge `patch` (and keyword arguments) into the config;
        returns the merged config.  With no argument, returns it."""
        patch = dict(patch or {}, **kwargs)
        if not patch:
            return self.call("GET", "config")
        return self.call("POST", "config", patch)

    def fault(self, kind, **params):
        """Queue one fault, e.g. fault("status", status=500, count=2,
        method="PUT", path_prefix="/api/v3/contact", body={...})."""
        return self.call("POST", "fault", dict(params, kind=kind))

    def faults(self):
        return self.call("GET", "fault")

    def clear_faults(self):
        return self.call("DELETE", "fault")

    def requests(self, path_prefix=None, method=None):
        """The recorded requests (oldest first), optionally filtered."""
        query = {k: v for k, v in (("path_prefix", path_prefix),
                                   ("method", method)) if v}
        path = "requests"
        if query:
            path += "?" + urllib.parse.urlencode(query)
        return self.call("GET", path)

    def clear_requests(self):
        return self.call("DELETE", "requests")

    def state(self):
        return self.call("GET", "state")

    def stats(self):
        return self.call("GET", "stats")

    def wait_for(self, predicate, timeout=5.0, interval=0.05):
        """Poll predicate(self) until truthy; returns its value or raises
        AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError("condition not met within %.1fs"
                                     % timeout)
            time.sleep(interval)


def start_sim(kind, certs, port=0, extra_args=(), timeout=10.0, stderr=None):
    """Launch the `kind` ("emarsys" or "yotpo") simulator and wait until it
    answers.  `certs` is make_certs()'s dict (or a directory to make them
    in).  Pass "--plain" in extra_args for plain HTTP.  Returns
    (Popen, port, SimClient).  The process has stdin=PIPE: closing it (or
    the test process dying) makes the simulator exit."""
    if kind not in SCRIPTS:
        raise ValueError("unknown simulator kind %r" % kind)
    if isinstance(certs, str):
        sys.path.insert(0, HERE)
        from certs import make_certs
        certs = make_certs(certs)
    extra_args = list(extra_args)
    plain = "--plain" in extra_args
    portfile = os.path.join(tempfile.mkdtemp(prefix="gcrelay-sim-"), "port")
    cmd = [sys.executable, os.path.join(HERE, SCRIPTS[kind]),
           "--port", str(port), "--portfile", portfile]
    if not plain:
        cmd += ["--cert", certs["cert"], "--key", certs["key"]]
    proc = subprocess.Popen(cmd + extra_args, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + timeout
    try:
        while not os.path.exists(portfile):
            if proc.poll() is not None:
                raise RuntimeError("%s simulator exited with %d before "
                                   "listening" % (kind, proc.returncode))
            if time.monotonic() > deadline:
                raise RuntimeError("%s simulator did not start" % kind)
            time.sleep(0.02)
        with open(portfile) as f:
            bound = int(f.read())
        scheme = "http" if plain else "https"
        client = SimClient("%s://127.0.0.1:%d" % (scheme, bound),
                           None if plain else certs["ca"])
        def healthy(c):
            try:
                return c.health()
            except (OSError, SimError, ValueError):
                return None
        client.wait_for(healthy, timeout=max(0.1, deadline - time.monotonic()))
    except BaseException:
        stop_sim(proc)
        raise
    finally:
        try:
            os.unlink(portfile)
            os.rmdir(os.path.dirname(portfile))
        except OSError:
            pass
    return proc, bound, client


def stop_sim(proc, timeout=5.0):
    """Close the simulator's stdin (it exits on EOF); kill it if it lingers.
    Returns its exit status."""
    try:
        if proc.stdin:
            proc.stdin.close()
    except OSError:
        pass
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
