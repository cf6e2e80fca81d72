"""The real thing on loopback for integration tests: nginx in front of
gcrelay (run as an unprivileged user when the tests run as root), with the
Emarsys and Yotpo simulators behind it.

    with Stack() as s:
        s.put_brand("acme", {...})
        status, body = s.post_event(event, webhook_id="msg_1")

Everything lives in a fresh temporary directory; every process is stopped
when the stack closes (and the simulators stop by themselves if the test
process dies).
"""

import base64
import glob
import hashlib
import hmac
import http.client
import json
import os
import pwd
import grp
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import ctypes

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "sim"))

from certs import make_certs  # noqa: E402
from client import start_sim, stop_sim  # noqa: E402

BUILD = os.environ.get("GCRELAY_BUILD", os.path.join(ROOT, "build", "release"))
SANITIZERS = os.environ.get("GCRELAY_SANITIZERS") == "1"
VALGRIND = os.environ.get("GCRELAY_VALGRIND") == "1"
# "postgresql": every Stack gets a fresh database on the shared throwaway
# cluster (tests/lib/pgcluster.py) instead of a SQLite file.
STORE = os.environ.get("GCRELAY_STORE", "sqlite")


class _PgCursor:
    def __init__(self, rows):
        self.rows = rows

    def fetchall(self):
        return self.rows

    def fetchone(self):
        return self.rows[0] if self.rows else None


class PgDb:
    """The little of sqlite3.Connection the tests use, through psql: ?
    placeholders, execute().fetchall()/fetchone(), a with block.  Each
    statement commits on its own."""

    def __init__(self, cluster, name):
        self.cluster, self.name = cluster, name

    def execute(self, sql, args=()):
        import pgcluster
        return _PgCursor(self.cluster.rows(self.name,
                                           pgcluster.bind(sql, args)))

    def commit(self):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

ADMIN_WRITE = ("ops", "ops-secret-0123456789abcdef0123456789")
ADMIN_READ = ("viewer", "viewer-secret-0123456789abcdef012345")


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_parent(sig=signal.SIGTERM):
    """preexec_fn: the child gets sig when the test process dies, so no
    server outlives a killed test run."""
    _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_whsec():
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign_webhook(secret, msg_id, ts, body):
    """Standard Webhooks v1 signature of body (bytes)."""
    key = base64.b64decode(secret[len("whsec_"):])
    mac = hmac.new(key, b"%s.%s.%s" % (msg_id.encode(), str(ts).encode(),
                                       body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sign_admin(secret, method, uri, ts, body):
    canon = "%s\n%s\n%s\n%s" % (method, uri, ts,
                                hashlib.sha256(body).hexdigest())
    mac = hmac.new(secret.encode(), canon.encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sample_event(kind="offer_claimed", **over):
    ev = {
        "event": kind,
        "brand_slug": "acme",
        "email": "Jane.Doe@Example.com ",
        "mobile": "+44 7700 900123",
        "campaign_slug": "students",
        "type": "Code",
        "pending_group_type": "Occupation",
        "pending_group_parent": "Key Worker",
        "pending_group_child": "NHS Worker",
        "token": "TOK" + secrets.token_hex(6).upper(),
        "subid": "user_1",
        "brand_country": "GB",
        "campaign_id": 1234,
        "campaign_title": "20% OFF for Key Workers",
        "campaign_url": "https://secure.gocertify.me/at/acme",
        "occurred_at": "2026-11-21T10:15:00Z",
    }
    for k, v in over.items():
        if v is None:
            ev.pop(k, None)
        else:
            ev[k] = v
    return ev


CONTRACT_LOG = os.environ.get("GCRELAY_CONTRACT_LOG")


def contract_record(method, target, status, headers, body):
    """With GCRELAY_CONTRACT_LOG set, append one JSON line per response
    that came through nginx, for the OpenAPI contract test
    (tests/ship/test_openapi.py).  headers: (name, value) pairs or dict."""
    if not CONTRACT_LOG:
        return
    items = headers.items() if isinstance(headers, dict) else headers
    ctype = ""
    for k, v in items:
        if k.lower() == "content-type":
            ctype = v
    path, _, query = (target or "").partition("?")
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    line = json.dumps({"method": method, "path": path, "query": query,
                       "status": status, "content_type": ctype,
                       "body": body}) + "\n"
    # One write per line in append mode: concurrent writers never
    # interleave within a line.
    fd = os.open(CONTRACT_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.raw = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "<%d %s>" % (self.status, self.raw[:300])


class Stack:
    """nginx + gcrelay (+ simulators) on loopback ports chosen at run time."""

    def __init__(self, workers=2, sims=True, config_extra="",
                 webhook_secrets=None, start=True, budget_ms=8000,
                 retry_schedule="[1, 1, 1]", reconcile_after_s=1,
                 http_timeout_ms=3000, base_dir=None, port=None,
                 sync_budget_ms=None, sync_workers=None, circuit_open_s=1,
                 concurrency=64, peer=None, store=None, pg_db=None,
                 dispatchers=None, retrier_interval_ms=200):
        # peer: another Stack whose database (PostgreSQL) and simulators
        # this one shares: a second host of the same installation.
        # store: "sqlite" or "postgresql" (default: GCRELAY_STORE);
        # pg_db: an existing database to use (not dropped at the end).
        if base_dir is None:
            self.dir = tempfile.mkdtemp(prefix="gcrelay-it-")
        else:
            self.dir = base_dir
            os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.workers = workers
        self.webhook_secrets = webhook_secrets or (
            peer.webhook_secrets if peer is not None else [new_whsec()])
        self.config_extra = config_extra
        self.budget_ms = budget_ms
        # The suites written before the dispatcher expect intake to
        # deliver while it can: every worker, the whole budget.  Tests of
        # the sync budget and circuits say otherwise.
        self.sync_budget_ms = budget_ms if sync_budget_ms is None \
            else sync_budget_ms
        self.sync_workers = workers if sync_workers is None else sync_workers
        self.circuit_open_s = circuit_open_s
        self.concurrency = concurrency
        self.dispatchers = dispatchers  # None: gcrelay's default
        self.retrier_interval_ms = retrier_interval_ms
        self.retry_schedule = retry_schedule
        self.reconcile_after_s = reconcile_after_s
        self.http_timeout_ms = http_timeout_ms
        self.procs = []
        self.admin_used = set()  # (key, method, uri, body, ts) signed
        self.gcrelay = None
        self.nginx = None
        self.emarsys = self.yotpo = None
        self.user = self._user()
        self.state_dir = os.path.join(self.dir, "state")
        os.mkdir(self.state_dir, 0o700)
        self._chown(self.state_dir)
        self.reports = os.path.join(self.dir, "reports")
        os.mkdir(self.reports, 0o755)
        self._chown(self.reports)
        self.db_path = os.path.join(self.state_dir, "gcrelay.db")
        self.pg = self.pg_db = None
        self.peer = peer
        self.pg_owned = False
        if peer is not None:
            # One admin client for both hosts: the replay cache is shared.
            self.admin_used = peer.admin_used
        if pg_db is not None:
            import pgcluster
            self.pg, self.pg_db = pgcluster.shared(), pg_db
        elif peer is not None:
            if peer.pg is None:
                raise RuntimeError("two hosts need GCRELAY_STORE=postgresql")
            self.pg, self.pg_db = peer.pg, peer.pg_db
        elif (store or STORE) == "postgresql":
            self.pg_owned = True
            import pgcluster
            self.pg = pgcluster.shared()
            self.pg_db = "gc_" + "".join(
                ch for ch in os.path.basename(self.dir).lower()
                if ch.isalnum() or ch == "_")
            self.pg.create_db(self.pg_db)
        self.socket_path = os.path.join(self.state_dir, "gcrelay.sock")
        # The default: listen.socket with ".sock" -> "-control.sock".
        self.control_path = os.path.join(self.state_dir,
                                         "gcrelay-control.sock")
        self.log_path = os.path.join(self.dir, "gcrelay.log")
        self.fixed_port = port is not None
        self.port = port or free_port()
        if peer is not None:
            self.certs = peer.certs
            self.emarsys_port, self.emarsys = peer.emarsys_port, peer.emarsys
            self.yotpo_port, self.yotpo = peer.yotpo_port, peer.yotpo
        else:
            self.certs = make_certs(os.path.join(self.dir, "certs"))
        if sims and peer is None:
            self._start_sims()
        self.config_path = os.path.join(self.dir, "gcrelay.conf")
        self.write_config()
        if start:
            self.start()

    # ---- set-up -----------------------------------------------------------

    def _user(self):
        if os.getuid() != 0:
            return None
        for name in ("gcrelay", "nobody"):
            try:
                pw = pwd.getpwnam(name)
                return pw
            except KeyError:
                continue
        raise RuntimeError("no unprivileged user to run gcrelay as")

    def _chown(self, path):
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def _start_sims(self):
        err = open(os.path.join(self.dir, "sims.log"), "ab")
        p, self.emarsys_port, self.emarsys = start_sim(
            "emarsys", self.certs, stderr=err)
        self.procs.append(p)
        p, self.yotpo_port, self.yotpo = start_sim(
            "yotpo", self.certs, stderr=err)
        self.procs.append(p)

    def write_config(self, extra=None):
        key_path = os.path.join(self.dir, "secrets.key")
        if not os.path.exists(key_path):
            with open(key_path, "w") as f:
                # Every host of one installation: the same key.
                f.write(open(os.path.join(self.peer.dir, "secrets.key")).read()
                        if self.peer is not None else
                        secrets.token_hex(32) + "\n")
            os.chmod(key_path, 0o400)
            self._chown(key_path)
        secrets_list = ", ".join('"%s"' % s for s in self.webhook_secrets)
        em = ("https://127.0.0.1:%d" % self.emarsys_port) if self.emarsys \
            else "https://127.0.0.1:9"
        yo = ("https://127.0.0.1:%d" % self.yotpo_port) if self.yotpo \
            else "https://127.0.0.1:9"
        text = """
listen = { socket = "%(sock)s"; mode = "0666"; };
workers = %(workers)d;
log_level = "info";
shutdown_grace_s = 20;
store = { path = "%(db)s"; busy_timeout_ms = 5000; %(pgstore)s};
secrets_key_file = "%(key)s";
limits = { max_body_bytes = 65536; };
webhook = { secrets = [ %(whsec)s ]; tolerance_s = 300; };
admin = {
  keys = (
    { id = "%(wid)s"; secret = "%(wsec)s"; role = "write"; },
    { id = "%(rid)s"; secret = "%(rsec)s"; role = "read"; }
  );
};
http = { connect_timeout_ms = 2000; timeout_ms = %(http_timeout)d;
         ca_file = "%(ca)s"; };
delivery = { budget_ms = %(budget)d; retry_schedule = %(sched)s;
             sync_budget_ms = %(sync_budget)d; sync_workers = %(sync_workers)d;
             circuit_open_s = %(circuit_open)d; concurrency = %(conc)d;
             %(dispatchers)s};
retrier = { interval_ms = %(retrier_ms)d; };
emarsys = { token_url = "%(em)s/oauth2/token"; api_base = "%(em)s/api/v3/"; };
yotpo = { api_base = "%(yo)s/api/v2"; reconcile_after_s = %(recon)d; };
%(extra)s
""" % {
            "sock": self.socket_path, "workers": self.workers,
            "db": self.db_path, "key": key_path, "whsec": secrets_list,
            "pgstore": ('backend = "postgresql"; url = "%s"; '
                        % self.pg.url(self.pg_db)) if self.pg else "",
            "wid": ADMIN_WRITE[0], "wsec": ADMIN_WRITE[1],
            "rid": ADMIN_READ[0], "rsec": ADMIN_READ[1],
            "ca": self.certs["ca"], "em": em, "yo": yo,
            "budget": self.budget_ms, "sched": self.retry_schedule,
            "sync_budget": self.sync_budget_ms,
            "sync_workers": self.sync_workers,
            "circuit_open": self.circuit_open_s, "conc": self.concurrency,
            "dispatchers": "" if self.dispatchers is None else
            "dispatchers = %d; " % self.dispatchers,
            "recon": self.reconcile_after_s,
            "retrier_ms": self.retrier_interval_ms,
            "http_timeout": self.http_timeout_ms,
            "extra": self.config_extra if extra is None else extra,
        }
        with open(self.config_path, "w") as f:
            f.write(text)
        os.chmod(self.config_path, 0o644)
        return self.config_path

    def _preexec(self):
        os.setsid()
        die_with_parent(signal.SIGQUIT)

    def _gcrelay_cmd(self):
        cmd = [os.path.join(BUILD, "gcrelay"), "-c", self.config_path]
        if VALGRIND:
            cmd = ["valgrind", "--quiet", "--trace-children=yes",
                   "--leak-check=full", "--show-leak-kinds=definite,indirect",
                   "--errors-for-leak-kinds=definite,indirect",
                   "--log-file=%s/valgrind.%%p" % self.reports] + cmd
        return cmd

    def _gcrelay_env(self):
        env = dict(os.environ)
        if SANITIZERS:
            env["ASAN_OPTIONS"] = ("detect_leaks=1:log_path=%s/asan"
                                   % self.reports)
            env["UBSAN_OPTIONS"] = ("print_stacktrace=1:halt_on_error=1:"
                                    "log_path=%s/ubsan" % self.reports)
        return env

    def start(self):
        self.start_gcrelay()
        self.start_nginx()
        self.wait_healthy()

    def start_gcrelay(self):
        log = open(self.log_path, "ab")
        kw = {}
        if self.user is not None:
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid,
                  "extra_groups": []}
        self.gcrelay = subprocess.Popen(
            self._gcrelay_cmd(), stdin=subprocess.DEVNULL, stdout=log,
            stderr=log, env=self._gcrelay_env(), cwd=self.dir,
            preexec_fn=die_with_parent, **kw)
        deadline = time.monotonic() + (60 if VALGRIND else 10)
        while not (os.path.exists(self.socket_path) and
                   os.path.exists(self.control_path)):
            if self.gcrelay.poll() is not None:
                raise RuntimeError("gcrelay exited with %d:\n%s" % (
                    self.gcrelay.returncode, self.log()))
            if time.monotonic() > deadline:
                raise RuntimeError("gcrelay did not create its sockets")
            time.sleep(0.02)

    def start_nginx(self):
        """Start nginx; when the port was picked for us and something took
        it meanwhile (a simulator bound to port 0 may get the same one),
        pick another."""
        for _ in range(5):
            if self._start_nginx_once():
                return
            self.port = free_port()
        raise RuntimeError("nginx could not bind a free port")

    def _start_nginx_once(self):
        nd = os.path.join(self.dir, "nginx")
        shutil.rmtree(nd, ignore_errors=True)
        os.mkdir(nd)
        self._chown(nd)
        shutil.copy("/etc/nginx/fastcgi_params", nd)
        shutil.copy(os.path.join(ROOT, "nginx", "gcrelay-locations.conf"), nd)
        user = ""
        if self.user is not None:
            user = "user %s %s;" % (self.user.pw_name,
                                    grp.getgrgid(self.user.pw_gid).gr_name)
        conf = """
%(user)s
worker_processes 2;
daemon off;
pid %(nd)s/nginx.pid;
error_log %(nd)s/error.log warn;
events { worker_connections 1024; }
http {
  access_log %(nd)s/access.log;
  client_body_temp_path %(nd)s/body;
  fastcgi_temp_path %(nd)s/fastcgi;
  proxy_temp_path %(nd)s/proxy;
  uwsgi_temp_path %(nd)s/uwsgi;
  scgi_temp_path %(nd)s/scgi;
  upstream gcrelay { server unix:%(sock)s; }
  upstream gcrelay_control { server unix:%(csock)s; }
  server {
    listen 127.0.0.1:%(port)d;
    include %(nd)s/gcrelay-locations.conf;
  }
}
""" % {"user": user, "nd": nd, "sock": self.socket_path,
       "csock": self.control_path, "port": self.port}
        path = os.path.join(nd, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.nginx = subprocess.Popen(
            ["nginx", "-p", nd, "-c", path], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=open(nd + "/stderr", "ab"),
            preexec_fn=self._preexec)
        # nginx writes its pid file once it has bound its port; until then
        # a connection could reach whoever else holds the port.
        deadline = time.monotonic() + 10
        while not os.path.exists(nd + "/nginx.pid"):
            if self.nginx.poll() is not None:
                err = open(nd + "/stderr").read()
                if "Address already in use" in err and not self.fixed_port:
                    return False
                raise RuntimeError("nginx did not start: " + err)
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not start in time")
            time.sleep(0.02)
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                if self.nginx.poll() is not None or \
                        time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start: " +
                                       open(nd + "/stderr").read())
                time.sleep(0.02)

    def wait_healthy(self, timeout=None):
        timeout = timeout or (120 if VALGRIND else 30)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.request("GET", "/healthz")
                if last.status == 200:
                    return last
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("gcrelay not healthy: %r\n%s" % (last, self.log()))

    # ---- HTTP -------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, timeout=60):
        conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            elif isinstance(body, str):
                body = body.encode()
            conn.request(method, path, body, headers or {})
            r = conn.getresponse()
            raw = r.read()
            contract_record(method, path, r.status, r.getheaders(), raw)
            return Response(r.status, dict(r.getheaders()), raw)
        finally:
            conn.close()

    def post_event(self, event, webhook_id=None, ts=None, secret=None,
                   body=None, headers=None, sig=None):
        """POST /v1/events signed like the Gocertify platform."""
        if body is None:
            body = json.dumps(event).encode()
        webhook_id = webhook_id or "msg_" + secrets.token_hex(8)
        ts = int(time.time()) if ts is None else ts
        h = {"Content-Type": "application/json", "webhook-id": webhook_id,
             "webhook-timestamp": str(ts),
             "webhook-signature": sig or sign_webhook(
                 secret or self.webhook_secrets[0], webhook_id, ts, body)}
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        return self.request("POST", "/v1/events", body, h)

    def admin_ts(self, key_id, method, uri, signed):
        """Each signed admin request is good once: the timestamp nearest
        now that this exact request has not been signed with yet."""
        now = int(time.time())
        for d in range(0, 250):
            for ts in (now - d, now + d):
                if (key_id, method, uri, signed, ts) not in self.admin_used:
                    return ts
        raise AssertionError("no unused admin timestamp left")

    def admin_headers(self, method, uri, signed=b"", key=ADMIN_WRITE,
                      ts=None):
        """The three signature headers; sending them twice is a replay."""
        ts = self.admin_ts(key[0], method, uri, signed) if ts is None else ts
        self.admin_used.add((key[0], method, uri, signed, ts))
        return {"X-Gcrelay-Key": key[0], "X-Gcrelay-Timestamp": str(ts),
                "X-Gcrelay-Signature": sign_admin(
                    key[1], method, uri, ts, signed)}

    def admin(self, method, uri, body=None, key=ADMIN_WRITE, ts=None,
              headers=None, sign_body=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        raw = body or b""
        h = self.admin_headers(method, uri, raw if sign_body is None
                               else sign_body, key, ts)
        if body is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        return self.request(method, uri, body, h)

    def put_brand(self, slug, doc):
        r = self.admin("PUT", "/admin/v1/brands/" + slug, doc)
        assert r.status in (200, 201), r
        return r

    def demo_brand(self, slug="acme", emarsys=True, yotpo=True, **over):
        doc = {"name": "Acme UK"}
        if emarsys:
            doc["emarsys"] = {"client_id": "demo_client",
                              "client_secret": "demo_secret"}
        if yotpo:
            doc["yotpo"] = {"guid": "demo_guid", "api_key": "demo_api_key"}
        doc.update(over)
        return self.put_brand(slug, doc)

    # ---- inspection ---------------------------------------------------------

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def db(self):
        if self.pg is not None:
            return PgDb(self.pg, self.pg_db)
        return sqlite3.connect(self.db_path, timeout=10)

    def query(self, sql, *args):
        with self.db() as c:
            return c.execute(sql, args).fetchall()

    def lock_store(self):
        """A context manager holding the store's write lock from another
        connection (SQLite: BEGIN IMMEDIATE; PostgreSQL: a lock on the
        events table that every insert waits for, as a migration or a
        CREATE INDEX by hand would hold)."""
        import contextlib

        @contextlib.contextmanager
        def held():
            if self.pg is None:
                lock = sqlite3.connect(self.db_path, timeout=10,
                                       isolation_level=None)
                lock.execute("BEGIN IMMEDIATE")
                try:
                    yield
                finally:
                    lock.execute("ROLLBACK")
                    lock.close()
                return
            p = subprocess.Popen(
                ["psql", "-X", "-q", "-h", self.pg.dir, "-U", "postgres",
                 "-d", self.pg_db, "-At"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True)
            p.stdin.write("BEGIN; LOCK TABLE events IN SHARE MODE;\n"
                          "SELECT 'locked';\n")
            p.stdin.flush()
            try:
                self.wait(lambda: p.stdout.readline().strip() == "locked",
                          what="write lock taken")
                yield
            finally:
                p.stdin.write("ROLLBACK;\n")
                p.stdin.close()
                p.wait(10)
        return held()

    def store_contents(self):
        """What the store keeps at rest, {name: bytes}: the SQLite files,
        or a dump of the PostgreSQL database ("pg_dump")."""
        if self.pg is not None:
            p = subprocess.run(["pg_dump", "-h", self.pg.dir, "-U",
                                "postgres", self.pg_db], capture_output=True,
                               check=True)
            return {"pg_dump": p.stdout}
        out = {}
        for f in os.listdir(self.state_dir):
            if f.startswith("gcrelay.db"):
                with open(os.path.join(self.state_dir, f), "rb") as fh:
                    out[f] = fh.read()
        return out

    def worker_pids(self):
        out = subprocess.run(["pgrep", "-P", str(self.gcrelay.pid)],
                             capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def dispatcher_pids(self):
        """The live dispatchers: children of the master whose pid logs
        with role "dispatcher", the one that logged last at the end."""
        children = set(self.worker_pids())
        pids = []
        for line in self.log().splitlines():
            if '"role":"dispatcher"' not in line:
                continue
            try:
                p = json.loads(line).get("pid")
            except ValueError:
                continue
            if p in children:
                if p in pids:
                    pids.remove(p)
                pids.append(p)
        return pids

    def wait(self, predicate, timeout=10.0, interval=0.05, what="condition"):
        deadline = time.monotonic() + timeout
        while True:
            v = predicate()
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError("%s not met within %.1fs" % (what, timeout))
            time.sleep(interval)

    # ---- tear-down ----------------------------------------------------------

    def stop_gcrelay(self, timeout=30):
        if self.gcrelay is None or self.gcrelay.poll() is not None:
            return self.gcrelay.returncode if self.gcrelay else None
        self.gcrelay.send_signal(signal.SIGTERM)
        try:
            return self.gcrelay.wait(timeout)
        except subprocess.TimeoutExpired:
            self.gcrelay.kill()
            self.gcrelay.wait()
            raise AssertionError("gcrelay did not stop on SIGTERM")

    def sanitizer_reports(self):
        out = []
        for path in sorted(glob.glob(os.path.join(self.reports, "*"))):
            with open(path, errors="replace") as f:
                text = f.read()
            if text.strip():
                out.append("%s:\n%s" % (path, text))
        return out

    def close(self):
        try:
            self.stop_gcrelay()
        finally:
            if self.nginx and self.nginx.poll() is None:
                self.nginx.send_signal(signal.SIGQUIT)
                try:
                    self.nginx.wait(10)
                except subprocess.TimeoutExpired:
                    self.nginx.kill()
            for p in self.procs:
                stop_sim(p)
        reports = self.sanitizer_reports()
        if reports:
            raise AssertionError("sanitizer/valgrind reports:\n" +
                                 "\n".join(reports)[:20000])
        if os.environ.get("GCRELAY_KEEP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.pg_owned:
                self.pg.drop_db(self.pg_db)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
