"""A throwaway PostgreSQL cluster for the tests: initdb in a temporary
directory as an unprivileged user, listening only on a unix socket in that
directory, stopped (and removed) at the end.

  c = Cluster(); c.create_db("x"); c.url("x"); c.rows("x", sql); c.stop()

shared() gives one cluster per test process: the one the runner started
(env GCRELAY_PG_DIR) or, when there is none, one started here and stopped
at exit.  Rows come back through psql as JSON, so integers are ints and
texts are strs, as the sqlite3 module gives them.
"""

import atexit
import glob
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time


def _bindir():
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    raise RuntimeError("PostgreSQL server binaries not found: install the "
                       "Debian package postgresql (deploy/deps.sh)")


def _user():
    """The unprivileged account the server runs as (initdb refuses root)."""
    if os.getuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user to run PostgreSQL as")


class Cluster:
    def __init__(self, dir=None, start=True):
        self.bin = _bindir()
        self.user = _user()
        self.owned = dir is None
        self.dir = dir or tempfile.mkdtemp(prefix="gcrelay-pg-")
        self.data = os.path.join(self.dir, "data")
        if start:
            self._init()
            self.start()

    def _run(self, args, **kw):
        kw.setdefault("check", True)
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        if self.user is not None:
            kw["user"] = self.user.pw_uid
            kw["group"] = self.user.pw_gid
            kw["extra_groups"] = []
        return subprocess.run(args, cwd=self.dir, **kw)

    def _init(self):
        os.chmod(self.dir, 0o755)  # gcrelay's user reaches the socket
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self._run([os.path.join(self.bin, "initdb"), "-D", self.data,
                   "-A", "trust", "-U", "postgres", "-N", "-E", "UTF8",
                   "--locale=C"])

    def start(self):
        # No TCP; fsync off: a test cluster, thrown away.
        self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-w",
                   "-l", os.path.join(self.dir, "server.log"), "-o",
                   "-k %s -c listen_addresses='' -F -c max_connections=300"
                   % self.dir, "start"])

    def stop(self, mode="fast"):
        self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-w",
                   "-m", mode, "stop"], check=False)

    def remove(self):
        self.stop()
        if self.owned:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db):
        """A libpq connection string for gcrelay's store.url."""
        return "host=%s dbname=%s user=postgres" % (self.dir, db)

    def psql(self, db, sql, *extra):
        p = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.dir,
             "-U", "postgres", "-d", db, "-At", *extra, "-c", sql],
            capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("psql: %s: %s" % (sql[:200], p.stderr.strip()))
        return p.stdout

    def create_db(self, db):
        self.psql("postgres", 'CREATE DATABASE "%s"' % db)

    def drop_db(self, db):
        with _sessions_lock:
            sess = _sessions.pop((self.dir, db), None)
        if sess is not None:
            sess.close()
        self.psql("postgres", 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)'
                  % db)

    def rows(self, db, sql):
        """Rows of a query as tuples (types kept through JSON)."""
        s = sql.strip().rstrip(";")
        if not s.lower().startswith(("select", "with", "values")):
            self.session(db).run(s)
            return []
        out = self.session(db).run("SELECT row_to_json(q)::text FROM (%s) q"
                                   % s)
        return [tuple(v for _, v in json.loads(
            line, object_pairs_hook=lambda p: p))
            for line in out if line]

    def session(self, db):
        """One psql per database for the tests' queries (a psql per query
        made the PostgreSQL pass of the suites several times slower)."""
        with _sessions_lock:
            key = (self.dir, db)
            if key not in _sessions:
                _sessions[key] = _Session(self, db)
            return _sessions[key]


_sessions = {}
_sessions_lock = threading.Lock()
_END = "__gcrelay_tests_end__"


class _Session:
    """A psql reading statements from a pipe; each statement commits on
    its own.  Started again when the server dropped it (a restart, a
    dropped database), and the statement sent again once."""

    def __init__(self, cluster, db):
        self.cluster, self.db = cluster, db
        self.lock = threading.Lock()
        self.p = None

    def _start(self):
        self.p = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=0", "-h",
             self.cluster.dir, "-U", "postgres", "-d", self.db, "-At"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1)

    def _once(self, sql):
        if self.p is None or self.p.poll() is not None:
            self._start()
        self.p.stdin.write("%s;\n\\echo %s\n" % (sql, _END))
        self.p.stdin.flush()
        out, err = [], []
        for line in self.p.stdout:
            line = line.rstrip("\n")
            if line == _END:
                return out, err
            if line.startswith(("psql:", "ERROR:", "FATAL:")):
                err.append(line)
            else:
                out.append(line)
        raise BrokenPipeError("psql ended: %s" % " ".join(out + err))

    def close(self):
        with self.lock:
            if self.p is not None:
                self.p.stdin.close()
                self.p.wait(10)
                self.p = None

    def run(self, sql):
        with self.lock:
            try:
                out, err = self._once(sql)
            except (BrokenPipeError, OSError):
                self.p = None
                out, err = self._once(sql)
        if err:
            raise RuntimeError("psql: %s: %s" % (sql[:200], " ".join(err)))
        return out


def literal(v):
    """v as an SQL literal (the test side's only way to pass values)."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, bytes):
        return "'\\x%s'::bytea" % v.hex()
    return "'%s'" % str(v).replace("'", "''")


def bind(sql, args):
    """Put args into the ? placeholders of sql (outside quotes)."""
    out, quoted, it = [], False, iter(args)
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        if ch == "?" and not quoted:
            out.append(literal(next(it)))
        else:
            out.append(ch)
    return "".join(out)


_shared = None


def shared():
    """The cluster for this process (see the module comment)."""
    global _shared
    if _shared is None:
        d = os.environ.get("GCRELAY_PG_DIR")
        if d:
            _shared = Cluster(dir=d, start=False)
        else:
            _shared = Cluster()
            os.environ["GCRELAY_PG_DIR"] = _shared.dir
            atexit.register(_shared.remove)
    return _shared


def wait_ready(c, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            c.psql("postgres", "SELECT 1")
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
