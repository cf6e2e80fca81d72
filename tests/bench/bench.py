#!/usr/bin/env python3
"""make bench: throughput and latency of gcrelay behind nginx, as ratios
against baselines measured in the same run.

    python3 tests/bench/bench.py --build build/release [--duration 5 ...]

One stack (tests/lib/stack.py: nginx + gcrelay + the Emarsys and Yotpo
simulators on loopback) serves every scenario; wrk (with tests/bench/
bench.lua) drives each one for --duration seconds after a --warmup run:

  1   static           nginx `return 200`, same server block   baseline
  2   healthz          GET /healthz through FastCGI            vs 1
  3   intake           POST /v1/events, brand without
                       destinations, unique signed ids         vs 2
  4   dup              POST /v1/events replaying ids that 3
                       recorded                                vs 3
  5   deliver          POST /v1/events delivered to both
                       simulators (offer_claimed)              vs 3
  6a  healthz-32       2 with the connections of 6             vs 2
  6   keepalive-stall  6a through a second nginx with
                       fastcgi_keep_conn on + upstream
                       keepalive (what the README warns
                       against), then an idle probe            vs 2

Then the canned-upstream scenarios of issue 8 (upstream_scenarios.py, each
on a fresh stack whose Emarsys and Yotpo are one canned nginx, canned.py):
fast, slow, health, drain, bigbrand, resources, printed with their goals.

Then the PostgreSQL scenarios of issue 10 (pg_scenarios.py, on a
throwaway cluster with fsync and synchronous_commit on), each against
SQLite run right before it: pg_intake (3 on PostgreSQL / 3 on SQLite),
pg_fast (fast on PostgreSQL / fast on SQLite, and round trips to the
database per delivered event from pg_stat_database and
pg_stat_statements), pg_twohost (two hosts on one database / one).

Pick a subset with --scenarios static,healthz,intake,dup,deliver,stall,
fast,slow,health,drain,bigbrand,resources,pg_intake,pg_fast,pg_twohost
(make bench BENCH_ARGS=...); --quick scales the canned scenarios' counts
down.

Signed requests are generated right before their run (fresh timestamps),
one file per wrk thread, sized from the warm-up's rate; requests beyond a
file's end repeat ids and are counted as reused.  For 5 the brand's
yotpo.max_rps is 100 (the maximum; gcrelay's Yotpo throttle bounds the
scenario) and the simulators' rate limits are raised out of the way.

The machines are shared and noisy: absolute numbers mean little, the
ratios are the figures to compare.  The exit status is non-zero only when
a scenario could not run as intended (wrk failed, or a scenario that must
answer 2xx saw other statuses, socket errors or stuck requests); never
because of speed.

The nginx configs are generated here (based on Stack.start_nginx) so that
the bench can add its static location, a compact access log (status and
request time, read per scenario) and the keep-alive variant.
"""

import argparse
import collections
import grp
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LUA = os.path.join(HERE, "bench.lua")
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

stack = None  # imported in main(), once GCRELAY_BUILD is set

NOBRAND = "bench-nodest"   # configured, without destinations
DELIVER_BRAND = "acme"     # wired to both simulators
YOTPO_MAX_RPS = 100        # the brand setting's upper bound
YOTPO_SIM_RPS = 100000     # the Yotpo sim's per-GUID limit for the bench
EMARSYS_SIM_RPM = 10000000  # the Emarsys sim's per-minute limit

# Scenario names for --scenarios: the wrk scenarios on the simulator stack
# (keys 1-6 in the report), then the canned-upstream ones
# (upstream_scenarios.py).
ALL_SCENARIOS = ["static", "healthz", "intake", "dup", "deliver", "stall",
                 "fast", "slow", "health", "drain", "bigbrand", "resources",
                 "pg_intake", "pg_fast", "pg_twohost"]
CANNED_SCENARIOS = {"fast", "slow", "health", "drain", "bigbrand",
                    "resources"}
PG_SCENARIOS = {"pg_intake", "pg_fast", "pg_twohost"}

NGINX_CONF = """
%(user)s
worker_processes %(nginx_workers)d;
daemon off;
pid %(nd)s/nginx.pid;
error_log %(nd)s/error.log warn;
events { worker_connections 4096; }
http {
  log_format bench '$status $request_method $uri $request_time';
  access_log %(nd)s/access.log bench;
  client_body_temp_path %(nd)s/body;
  fastcgi_temp_path %(nd)s/fastcgi;
  proxy_temp_path %(nd)s/proxy;
  uwsgi_temp_path %(nd)s/uwsgi;
  scgi_temp_path %(nd)s/scgi;
%(http)s
}
"""

# The shipped locations, plus the static baseline in the same server block.
MAIN_HTTP = """
  upstream gcrelay { server unix:%(sock)s; }
  upstream gcrelay_control { server unix:%(csock)s; }
  server {
    listen 127.0.0.1:%(port)d;
    include %(nd)s/gcrelay-locations.conf;
    location = /_bench/static {
      default_type application/json;
      return 200 '{"status":"ok"}';
    }
  }
"""

# What README and nginx/gcrelay-locations.conf warn against.
STALL_HTTP = """
  upstream gcrelay_keepalive {
    server unix:%(sock)s;
    keepalive %(keepalive)d;
  }
  server {
    listen 127.0.0.1:%(port)d;
    location = /healthz {
      include fastcgi_params;
      fastcgi_param REQUEST_ID $request_id;
      fastcgi_keep_conn on;
      fastcgi_pass gcrelay_keepalive;
    }
  }
"""


class Nginx:
    """One nginx process in its own prefix directory."""

    def __init__(self, s, name, port, http, nginx_workers):
        self.dir = os.path.join(s.dir, name)
        self.port = port
        os.mkdir(self.dir)
        s._chown(self.dir)
        shutil.copy("/etc/nginx/fastcgi_params", self.dir)
        shutil.copy(os.path.join(ROOT, "nginx", "gcrelay-locations.conf"),
                    self.dir)
        user = ""
        if s.user is not None:
            user = "user %s %s;" % (s.user.pw_name,
                                    grp.getgrgid(s.user.pw_gid).gr_name)
        self.access_log = os.path.join(self.dir, "access.log")
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(NGINX_CONF % {"user": user, "nd": self.dir,
                                  "nginx_workers": nginx_workers,
                                  "http": http})
        self.proc = subprocess.Popen(
            ["nginx", "-p", self.dir, "-c", self.conf],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "stderr"), "ab"),
            preexec_fn=s._preexec)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or \
                        time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start: " + open(
                        os.path.join(self.dir, "stderr")).read())
                time.sleep(0.02)

    def log_offset(self):
        try:
            return os.path.getsize(self.access_log)
        except OSError:
            return 0

    def statuses(self, offset):
        """Status counts of the access log lines written after offset, and
        the request times (s) of the 499 lines: how long the requests still
        unanswered when wrk stopped had waited."""
        counts, waited = collections.Counter(), []
        with open(self.access_log, "rb") as f:
            f.seek(offset)
            for line in f:
                parts = line.split()
                if parts:
                    counts[parts[0].decode()] += 1
                if len(parts) >= 4 and parts[0] == b"499":
                    waited.append(float(parts[3]))
        return counts, sorted(waited)

    def stop(self, timeout=5):
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def bench_stack_class():
    class BenchStack(stack.Stack):
        """A Stack whose nginx is the bench's config (shipped locations
        plus the static baseline and a compact access log)."""

        nginx_workers = 2

        def start_nginx(self):
            self.main_nginx = Nginx(self, "nginx", self.port, MAIN_HTTP % {
                "sock": self.socket_path, "csock": self.control_path,
                "port": self.port,
                "nd": os.path.join(self.dir, "nginx")}, self.nginx_workers)
            self.nginx = self.main_nginx.proc  # Stack.close() stops it

    return BenchStack


# ---- wrk ------------------------------------------------------------------

class Result:
    def __init__(self, key, title, url, conns):
        self.key = key
        self.title = title
        self.url = url
        self.conns = conns
        self.data = None        # GCRELAY_BENCH json
        self.cmd = ""
        self.failure = None     # why the scenario did not run as intended
        self.statuses = collections.Counter()
        self.notes = []
        self.ratio = None
        self.ratio_of = None
        self.unanswered = None  # (count, longest wait s) at wrk's stop
        self.stuck = 0  # unanswered at wrk's stop after more than timeout

    @property
    def rps(self):
        if not self.data or not self.data["duration_us"]:
            return 0.0
        return self.data["requests"] * 1e6 / self.data["duration_us"]

    @property
    def socket_errors(self):
        d = self.data or {}
        return sum(d.get(k, 0) for k in ("connect", "read", "write",
                                         "timeout"))

    @property
    def errors(self):
        return self.socket_errors + (self.data or {}).get("status", 0)


def wrk_cmd(a, url, conns, duration, timeout):
    return ["wrk", "-t", str(min(a.threads, conns)), "-c", str(conns),
            "-d", "%ds" % duration, "--timeout", "%ds" % timeout,
            "-s", LUA, url]


def run_wrk(a, url, conns, duration, timeout, pool=None):
    """Run wrk; returns (parsed GCRELAY_BENCH dict or None, command string,
    output)."""
    cmd = wrk_cmd(a, url, conns, duration, timeout)
    env = dict(os.environ)
    env.pop("GCRELAY_BENCH_POOL", None)
    shown = " ".join(shlex.quote(c) for c in cmd)
    if pool:
        env["GCRELAY_BENCH_POOL"] = pool
        shown = "GCRELAY_BENCH_POOL=%s %s" % (shlex.quote(pool), shown)
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True,
                           timeout=duration + timeout + 60)
    except subprocess.TimeoutExpired as e:
        return None, shown, "wrk did not finish: %s" % e
    out = p.stdout + p.stderr
    data = None
    for line in p.stdout.splitlines():
        if line.startswith("GCRELAY_BENCH "):
            data = json.loads(line[len("GCRELAY_BENCH "):])
    if p.returncode != 0:
        data = None
    return data, shown, out


def write_pool(prefix, rows, threads):
    """rows: (webhook_id, ts, signature, body bytes); thread i gets every
    threads-th row in PREFIX.i."""
    files = [open("%s.%d" % (prefix, i), "wb") for i in range(threads)]
    try:
        for n, (wid, ts, sig, body) in enumerate(rows):
            if b"\n" in body or b"\t" in body:
                raise ValueError("body must be one line without tabs")
            files[n % threads].write(b"%s\t%d\t%s\t%s\n" % (
                wid.encode(), ts, sig.encode(), body))
    finally:
        for f in files:
            f.close()


def signed_rows(secret, items):
    """items: (webhook_id, body bytes).  Signed with one fresh timestamp."""
    ts = int(time.time())
    return [(wid, ts, stack.sign_webhook(secret, wid, ts, body), body)
            for wid, body in items]


def event_body(ev):
    return json.dumps(ev, separators=(",", ":")).encode()


# ---- the run ----------------------------------------------------------------

class Bench:
    def __init__(self, a, s):
        self.a = a
        self.s = s
        self.base = "http://127.0.0.1:%d" % s.port
        self.tmp = tempfile.mkdtemp(prefix="gcrelay-bench-")
        self.secret = s.webhook_secrets[0]
        self.results = {}
        self.seq = 0
        self.stall_probe = None

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def pool_size(self, rate, seconds):
        n = int(rate * seconds * self.a.pool_factor) + 200
        return max(self.a.threads, min(n, self.a.max_pool))

    def new_ids(self, tag, n):
        self.seq += 1
        return ["bench_%s_%d_%07d" % (tag, self.seq, i) for i in range(n)]

    def make_pool(self, name, items):
        prefix = os.path.join(self.tmp, name)
        write_pool(prefix, signed_rows(self.secret, items), self.a.threads)
        return prefix

    def scenario(self, key, title, url, conns=None, pool=None,
                 warm_pool=None, nginx=None, must_2xx=True, timeout=None):
        """Warm up, then measure.  pool/warm_pool are callables building a
        request pool (called right before their run, so timestamps are
        fresh)."""
        a = self.a
        conns = conns or a.connections
        timeout = timeout or a.timeout
        nginx = nginx or self.s.main_nginx
        r = Result(key, title, url, conns)
        self.results[key] = r
        print("[%s] %s ..." % (key, title), flush=True)
        try:
            return self._scenario(r, pool, warm_pool, nginx, must_2xx,
                                  timeout)
        except Exception:
            r.failure = traceback.format_exc()
            return r

    def _scenario(self, r, pool, warm_pool, nginx, must_2xx, timeout):
        a, url, conns = self.a, r.url, r.conns
        warm_rps = None
        if a.warmup > 0:
            wp = warm_pool() if warm_pool else None
            wdata, wshown, wout = run_wrk(a, url, conns, a.warmup, timeout,
                                          wp)
            if wdata is None:
                r.failure = "warm-up wrk failed: %s\n%s" % (wshown, wout)
                return r
            if wdata["duration_us"]:
                warm_rps = wdata["requests"] * 1e6 / wdata["duration_us"]
        p = pool(warm_rps) if pool else None
        time.sleep(0.2)  # let the warm-up's last log lines land
        off = nginx.log_offset()
        r.data, r.cmd, out = run_wrk(a, url, conns, a.duration, timeout, p)
        time.sleep(0.3)
        r.statuses, waited = nginx.statuses(off)
        if r.data is None:
            r.failure = "wrk failed:\n%s" % out
            return r
        # wrk exits with requests in flight; nginx logs those as 499.
        closed = r.statuses.get("499", 0)
        if closed and waited:
            r.notes.append("%d request(s) unanswered when wrk stopped "
                           "(nginx logged 499), waiting for %.3f s at the "
                           "median, %.3f s at most" % (
                               closed, waited[len(waited) // 2],
                               waited[-1]))
            r.unanswered = (closed, waited[-1])
            r.stuck = sum(1 for w in waited if w >= timeout)
        if not must_2xx:
            return r
        bad = {k: v for k, v in r.statuses.items()
               if not k.startswith("2") and k != "499"}
        if r.data["requests"] == 0:
            r.failure = "no request completed"
        elif r.data["status"] or bad:
            r.failure = "non-2xx responses: wrk %d, nginx %s" % (
                r.data["status"], dict(bad))
        elif r.socket_errors:
            r.failure = "socket errors: " + errors_text(r)
        elif r.stuck:
            r.failure = "%d request(s) unanswered for more than %d s" % (
                r.stuck, timeout)
        elif closed > conns:
            r.failure = "%d requests closed by the client (499)" % closed
        return r

    def run(self):
        a, s = self.a, self.s
        t0 = time.monotonic()
        want = a.selected.__contains__
        healthz_rps = 100.0

        # 1. static baseline
        if want("static"):
            self.scenario("1", "static: nginx return 200 (same server block)",
                          self.base + "/_bench/static")
        # 2. healthz
        if want("healthz"):
            self.scenario("2", "healthz: GET /healthz through FastCGI",
                          self.base + "/healthz")
            healthz_rps = max(self.results["2"].rps, 100.0)
        if want("intake"):
            self.run_intake(healthz_rps)
        if want("deliver"):
            self.run_deliver()
        if want("stall"):
            self.run_stall()
        print("[done] scenarios took %.0f s" % (time.monotonic() - t0),
              flush=True)

    def run_intake(self, healthz_rps):
        a, s = self.a, self.s

        # 3. intake, no destinations
        s.put_brand(NOBRAND, {"name": "Bench, no destinations"})
        intake_items = []

        def nodest_items(tag, n):
            items = []
            for wid in self.new_ids(tag, n):
                ev = stack.sample_event("offer_claimed", brand_slug=NOBRAND,
                                        token="T" + wid.upper())
                items.append((wid, event_body(ev)))
            return items

        def intake_pool(warm_rps):
            items = nodest_items("in", self.pool_size(
                warm_rps or healthz_rps, a.duration))
            intake_items.extend(items)
            return self.make_pool("intake", items)

        def intake_warm():
            return self.make_pool("intake-warm", nodest_items(
                "inw", self.pool_size(healthz_rps, a.warmup)))

        before = s.query("SELECT count(*) FROM events WHERE brand = ?",
                         NOBRAND)[0][0]
        r3 = self.scenario("3", "intake: POST /v1/events, brand without "
                           "destinations (unique ids)",
                           self.base + "/v1/events", pool=intake_pool,
                           warm_pool=intake_warm)
        if r3.data:
            after = s.query("SELECT count(*) FROM events WHERE brand = ?",
                            NOBRAND)[0][0]
            used = min(r3.data["sent"], r3.data["pool"])
            r3.notes.append("pool of %d signed requests, %d sent, %d of "
                            "them reused ids (duplicates)" % (
                                r3.data["pool"], r3.data["sent"],
                                r3.data["reused"]))
            r3.notes.append("%d events recorded by the store during the "
                            "run (warm-up included: %d)" % (
                                after - before - self.warm_count(), after -
                                before))
            if r3.data["reused"]:
                r3.notes.append("WARNING: the pool ran out; raise "
                                "--pool-factor (%d of %d unique)" % (
                                    used, r3.data["sent"]))
        intake_rps = max(r3.rps, 10.0)

        # 4. duplicates of recorded ids
        def dup_pool(warm_rps=None):
            recorded = set(x[0] for x in s.query(
                "SELECT id FROM events WHERE brand = ?", NOBRAND))
            items = [it for it in intake_items if it[0] in recorded]
            items = items[:max(a.threads, self.pool_size(intake_rps,
                                                          a.duration))]
            if not items:
                raise RuntimeError("no recorded event to replay")
            return self.make_pool("dup", items)

        if not a.selected.__contains__("dup"):
            return
        if r3.failure:
            print("[4] skipped: scenario 3 failed", flush=True)
            r4 = self.results["4"] = Result(
                "4", "dup: skipped (scenario 3 failed)", "-", a.connections)
            r4.notes.append("skipped: it replays the ids scenario 3 "
                            "recorded")
        else:
            r4 = self.scenario("4", "dup: POST /v1/events replaying "
                               "recorded webhook ids",
                               self.base + "/v1/events", pool=dup_pool,
                               warm_pool=dup_pool)
            if r4.data:
                after4 = s.query("SELECT count(*) FROM events WHERE "
                                 "brand = ?", NOBRAND)[0][0]
                r4.notes.append("%d distinct recorded ids replayed in a "
                                "cycle; events recorded meanwhile: %d" % (
                                    r4.data["pool"], after4 - after))
                if after4 != after:
                    r4.failure = "a replayed webhook id was recorded again"

    def run_deliver(self):
        a, s = self.a, self.s
        r3 = self.results.get("3")
        intake_rps = max(r3.rps, 10.0) if r3 else 100.0
        # 5. delivery to both simulators
        s.emarsys.config({"rate_limit_per_minute": EMARSYS_SIM_RPM})
        s.yotpo.config({"rate_limit_per_s": YOTPO_SIM_RPS})
        # gcrelay's Yotpo throttle is per brand: --deliver-brands N spreads
        # the events over N brands wired to the same simulator accounts.
        brands = [DELIVER_BRAND] + ["%s-%d" % (DELIVER_BRAND, i)
                                    for i in range(2, a.deliver_brands + 1)]
        in_brands = "e.brand IN (%s)" % ", ".join("?" * len(brands))
        for b in brands:
            s.put_brand(b, {
                "name": "Acme UK",
                "emarsys": {"client_id": "demo_client",
                            "client_secret": "demo_secret"},
                "yotpo": {"guid": "demo_guid", "api_key": "demo_api_key",
                          "max_rps": YOTPO_MAX_RPS}})
        s.emarsys.reset(keep_config=True)
        s.yotpo.reset(keep_config=True)

        def deliver_items(tag, n):
            items = []
            for i, wid in enumerate(self.new_ids(tag, n)):
                ev = stack.sample_event(
                    "offer_claimed", brand_slug=brands[i % len(brands)],
                    token="T" + wid.upper(),
                    email="bench.%s@example.com" % wid.replace("_", "."))
                items.append((wid, event_body(ev)))
            return items

        def deliver_pool(warm_rps):
            return self.make_pool("deliver", deliver_items(
                "dl", self.pool_size(warm_rps or intake_rps, a.duration)))

        def deliver_warm():
            return self.make_pool("deliver-warm", deliver_items(
                "dlw", self.pool_size(intake_rps, a.warmup)))

        r5 = self.scenario("5", "deliver: POST /v1/events to Emarsys + Yotpo "
                           "simulators (offer_claimed, distinct tokens)",
                           self.base + "/v1/events", pool=deliver_pool,
                           warm_pool=deliver_warm)
        r5.notes.append(
            "bench settings: %s yotpo.max_rps = %d (gcrelay spaces Yotpo "
            "calls per brand to at most that rate); "
            "Yotpo sim rate_limit_per_s = %d, Emarsys sim "
            "rate_limit_per_minute = %d" % (
                "brand %r" % brands[0] if len(brands) == 1 else
                "%d brands (%s), each" % (len(brands), ", ".join(brands)),
                YOTPO_MAX_RPS, YOTPO_SIM_RPS, EMARSYS_SIM_RPM))
        if r5.data:
            r5.notes.append("pool of %d, %d sent, %d reused ids" % (
                r5.data["pool"], r5.data["sent"], r5.data["reused"]))
            bound = len(brands) * YOTPO_MAX_RPS
            r5.notes.append("%.0f events/s against the Yotpo throttle's "
                            "bound of %d/s (brands x max_rps): %.0f%% of it"
                            % (r5.rps, bound, 100.0 * r5.rps / bound))
            # Requests still in flight when wrk stopped finish in gcrelay.
            def settled():
                return s.query(
                    "SELECT count(*) FROM deliveries d JOIN events e ON "
                    "e.id = d.event_id WHERE " + in_brands + " AND "
                    "d.status = 'pending'", *brands)[0][0] == 0
            try:
                s.wait(settled, timeout=15, what="in-flight deliveries done")
            except AssertionError as e:
                r5.notes.append("WARNING: %s" % e)
            rows = s.query(
                "SELECT d.destination, d.status, count(*) FROM deliveries d "
                "JOIN events e ON e.id = d.event_id WHERE " + in_brands +
                " GROUP BY 1, 2 ORDER BY 1, 2", *brands)
            r5.notes.append("deliveries in the store (warm-up and requests "
                            "in flight at the end included): " + ", ".join(
                "%s %s %d" % row for row in rows))
            ys, es = s.yotpo.stats(), s.emarsys.stats()
            r5.notes.append(
                "simulators: Yotpo awards %d, rate-limited %d; Emarsys "
                "triggers %d, rate-limited %d" % (
                    ys.get("awards", 0), ys.get("rate_limited", 0),
                    es.get("triggers", 0), es.get("rate_limited", 0)))
            undelivered = sum(n for _, st, n in rows
                              if st not in ("delivered", "skipped"))
            if undelivered:
                r5.notes.append("WARNING: %d deliveries not delivered"
                                % undelivered)

    def run_stall(self):
        a = self.a
        # 6a. control: healthz with the stall scenario's connections
        self.scenario("6a", "healthz-%d: GET /healthz, %d connections, shipped "
                      "config (control for 6)" % (a.stall_connections,
                                                  a.stall_connections),
                      self.base + "/healthz", conns=a.stall_connections)

        # 6. the stall: fastcgi_keep_conn + upstream keepalive
        if not a.no_stall:
            try:
                self.stall()
            except Exception:
                r = self.results.setdefault("6", Result(
                    "6", "stall: could not run", "-", a.stall_connections))
                r.failure = traceback.format_exc()

    def warm_count(self):
        # The warm-up pool of scenario 3 is recorded too; count its ids.
        return self.s.query(
            "SELECT count(*) FROM events WHERE brand = ? AND id LIKE "
            "'bench_inw_%'", NOBRAND)[0][0]

    def stall(self):
        a, s = self.a, self.s
        port = stack.free_port()
        ng = Nginx(s, "nginx-keepalive", port, STALL_HTTP % {
            "sock": s.socket_path, "port": port,
            "keepalive": a.stall_keepalive}, s.nginx_workers)
        r = None
        try:
            r = self.scenario(
                "6", "keepalive-stall: GET /healthz, %d connections, "
                "fastcgi_keep_conn on + upstream keepalive %d" % (
                    a.stall_connections, a.stall_keepalive),
                "http://127.0.0.1:%d/healthz" % port,
                conns=a.stall_connections, nginx=ng, must_2xx=False,
                timeout=a.stall_timeout)
            r.notes.append("wrk --timeout %ds (wrk counts a timeout only "
                           "when a late answer arrives; requests never "
                           "answered appear as nginx 499s above)"
                           % a.stall_timeout)
            if a.stall_probes:
                r.notes.append(self.probe(port, a.stall_probes,
                                          a.stall_timeout))
        finally:
            ng.stop()
        if r is None:
            return
        # The kept-alive connections are gone with that nginx: the shipped
        # config must be served again.
        t = time.monotonic()
        try:
            s.wait_healthy(timeout=a.recover_timeout)
            r.notes.append("after stopping the keep-alive nginx, /healthz "
                           "through the shipped config answered 200 within "
                           "%.2f s" % (time.monotonic() - t))
        except AssertionError:
            r.failure = ("gcrelay did not answer /healthz within %d s after "
                         "the keep-alive nginx stopped" % a.recover_timeout)


    def probe(self, port, n, timeout):
        """n sequential GET /healthz, each on a new client connection, on
        the keep-alive nginx once the load has stopped (its idle upstream
        connections still held)."""
        answered, timed_out, other, lat = 0, 0, collections.Counter(), []
        for _ in range(n):
            t = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", port,
                                              timeout=timeout)
            try:
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    answered += 1
                    lat.append((time.monotonic() - t) * 1e6)
                else:
                    other[resp.status] += 1
            except socket.timeout:
                timed_out += 1
            except OSError as e:
                other[type(e).__name__] += 1
            finally:
                conn.close()
        lat.sort()
        text = ("idle probe after the load: %d sequential requests on new "
                "connections: %d answered 200" % (n, answered))
        if lat:
            text += " (median %s, max %s)" % (fmt_lat(lat[len(lat) // 2]),
                                              fmt_lat(lat[-1]))
        text += ", %d unanswered after %d s" % (timed_out, timeout)
        if other:
            text += ", other: " + ", ".join("%s %d" % kv
                                            for kv in other.items())
        self.stall_probe = (n, answered, timed_out)
        return text


# ---- report -----------------------------------------------------------------

def fmt_lat(us):
    if us is None:
        return "-"
    if us < 1000:
        return "%.2fms" % (us / 1000.0)
    if us < 1000000:
        return "%.1fms" % (us / 1000.0)
    return "%.2fs" % (us / 1e6)


def errors_text(r):
    d = r.data or {}
    parts = ["%s %d" % (k, d[k]) for k in ("status", "connect", "read",
                                           "write", "timeout") if d.get(k)]
    return ", ".join(parts) or "none"


RATIOS = [  # (scenario, relative to, summary text)
    ("2", "1", "healthz through FastCGI vs nginx's own return 200"),
    ("3", "2", "intake (signature, validation, SQLite transaction) vs "
               "healthz"),
    ("4", "3", "duplicate webhook id vs first-time intake"),
    ("5", "3", "delivery to both simulators (Yotpo calls throttled to "
               "max_rps = %d per brand, %%(b)d brand(s)) vs intake without "
               "destinations" % YOTPO_MAX_RPS),
    ("6a", "2", "healthz with %(c)d connections vs %(c2)d"),
    ("6", "2", "healthz via fastcgi_keep_conn + keepalive vs shipped config"),
]


def report(a, results, store, probe):
    for key, of, _ in RATIOS:
        r, base = results.get(key), results.get(of)
        if r and base and r.data and base.data and base.rps > 0 and \
                not base.failure and (not r.failure or key == "6"):
            r.ratio, r.ratio_of = r.rps / base.rps, of
    order = ["1", "2", "3", "4", "5", "6a", "6"]
    rows = [("#", "scenario", "conns", "req/s", "p50", "p99", "errors",
             "stuck", "ratio")]
    for k in order:
        r = results.get(k)
        if r is None:
            continue
        d = r.data
        rows.append((
            k, r.title.split(":")[0], str(r.conns),
            "%.0f" % r.rps if d else "-",
            fmt_lat(d["p50_us"]) if d else "-",
            fmt_lat(d["p99_us"]) if d else "-",
            ("FAILED " if r.failure else "") + (
                str(r.errors) if d else "-" if r.failure else "skipped"),
            str(r.stuck) if d else "-",
            "%.3f x #%s" % (r.ratio, r.ratio_of) if r.ratio is not None
            else ("baseline" if k == "1" else "-")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for n, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i in (0, 1) else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()
    print("errors: non-2xx/3xx and connect/read/write/timeout errors as wrk "
          "counts them.\nstuck: requests still unanswered when wrk stopped, "
          "after waiting longer than wrk's --timeout\n(nginx logged them as "
          "499 with their wait; wrk does not count them).\np50/p99: wrk's "
          "latency percentiles, answered requests only.  ratio: req/s vs "
          "the scenario named.")
    print()
    for k in order:
        r = results.get(k)
        if r is None:
            continue
        print("[%s] %s" % (k, r.title))
        print("    url %s, %d connections" % (r.url, r.conns))
        if r.cmd:
            print("    %s" % r.cmd)
        if r.data:
            d = r.data
            print("    %d requests in %.2f s; p50 %s p90 %s p99 %s max %s; "
                  "errors: %s" % (d["requests"], d["duration_us"] / 1e6,
                                  fmt_lat(d["p50_us"]), fmt_lat(d["p90_us"]),
                                  fmt_lat(d["p99_us"]), fmt_lat(d["max_us"]),
                                  errors_text(r)))
        if r.statuses:
            print("    nginx statuses: " + ", ".join(
                "%s %d" % kv for kv in sorted(r.statuses.items())))
        for note in r.notes:
            print("    " + note)
        if r.failure:
            print("    FAILED: " + r.failure.rstrip().replace("\n", "\n    "))
    print()
    print("store after the run: %s" % store)
    print()
    print("ratios (requests/s of a scenario / requests/s of its reference, "
          "same run):")
    for key, of, text in RATIOS:
        r, base = results.get(key), results.get(of)
        if r is None or base is None:
            continue
        text = text % {"c": r.conns, "c2": base.conns,
                       "b": a.deliver_brands}
        if r.ratio is None:
            print("  #%s / #%s: no ratio: a scenario failed or did not run "
                  "(%s)" % (key, of, text))
            continue
        extra = ""
        if key == "6" and r.data:
            extra = "; errors: %s" % errors_text(r)
            if r.unanswered:
                extra += "; %d unanswered at the end, waiting up to " \
                         "%.1f s" % r.unanswered
            c = results.get("6a")
            if c and c.data and c.rps > 0:
                extra += "; %.3f x the same connection count without " \
                         "keep-alive (#6a)" % (r.rps / c.rps)
            if probe:
                extra += "; idle probe: %d of %d answered, %d unanswered " \
                         "after %d s" % (probe[1], probe[0], probe[2],
                                         a.stall_timeout)
        print("  #%s / #%s = %.3f  %s (%.0f vs %.0f req/s, p50 %s vs %s%s)"
              % (key, of, r.ratio, text, r.rps, base.rps,
                 fmt_lat(r.data["p50_us"]), fmt_lat(base.data["p50_us"]),
                 extra))


def store_summary(s):
    size = {}
    for suffix in ("", "-wal", "-shm"):
        try:
            size[suffix] = os.path.getsize(s.db_path + suffix) / 1048576.0
        except OSError:
            size[suffix] = 0.0
    counts = {t: s.query("SELECT count(*) FROM %s" % t)[0][0]
              for t in ("events", "deliveries", "attempts")}
    return "%.1f MiB (db %.1f + wal %.1f + shm %.1f); %d events, %d " \
           "deliveries, %d attempts" % (
               sum(size.values()), size[""], size["-wal"], size["-shm"],
               counts["events"], counts["deliveries"], counts["attempts"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--workers", type=int, default=2,
                    help="gcrelay workers (default 2)")
    ap.add_argument("--nginx-workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--connections", type=int, default=16,
                    help="wrk connections for scenarios 1-5")
    ap.add_argument("--duration", type=int, default=5,
                    help="seconds measured per scenario")
    ap.add_argument("--warmup", type=int, default=1,
                    help="seconds of warm-up before each scenario (0: none)")
    ap.add_argument("--timeout", type=int, default=10,
                    help="wrk --timeout (s) for scenarios 1-5 and 6a")
    ap.add_argument("--stall-connections", type=int, default=32)
    ap.add_argument("--stall-keepalive", type=int, default=32)
    ap.add_argument("--stall-timeout", type=int, default=2,
                    help="wrk --timeout (s) for the stall scenario")
    ap.add_argument("--stall-probes", type=int, default=8,
                    help="sequential requests sent to the keep-alive nginx "
                    "after its load (0: none)")
    ap.add_argument("--recover-timeout", type=int, default=15)
    ap.add_argument("--no-stall", action="store_true",
                    help="skip scenario 6")
    ap.add_argument("--deliver-brands", type=int, default=1,
                    help="brands scenario 5 spreads its events over (the "
                    "Yotpo throttle is per brand; default 1: %s)"
                    % DELIVER_BRAND)
    ap.add_argument("--pool-factor", type=float, default=2.0,
                    help="signed requests generated per request expected "
                    "from the warm-up's rate")
    ap.add_argument("--max-pool", type=int, default=200000)
    ap.add_argument("--keep", action="store_true",
                    help="keep the stack's directory (logs, store)")
    ap.add_argument("--scenarios", default="all",
                    help="comma-separated subset of: %s (default all; "
                    "dup needs intake; fast and slow use intake's figure "
                    "as their baseline and add it; health adds slow and "
                    "an outage)" % ",".join(ALL_SCENARIOS))
    ap.add_argument("--pg-fsync", choices=("on", "off"), default="on",
                    help="the PostgreSQL scenarios' cluster: fsync and "
                    "synchronous_commit (default on, as in production; "
                    "off labels every figure [fsync OFF])")
    ap.add_argument("--dispatchers", type=int, default=None,
                    help="delivery.dispatchers of the canned and "
                    "PostgreSQL scenarios' stacks, on both backends "
                    "(default: gcrelay's, 1); printed with the figures")
    ap.add_argument("--quick", action="store_true",
                    help="scale the canned scenarios' counts and caps down "
                    "(development)")
    ap.add_argument("--slow-connections", type=int, default=64)
    ap.add_argument("--drain-events", type=int, default=None,
                    help="offer_claimed events queued in the outage (2 "
                    "deliveries each; default 10000, --quick 1000)")
    ap.add_argument("--fill-cap", type=int, default=None,
                    help="s allowed to queue the drain's events (default "
                    "150, --quick 40)")
    ap.add_argument("--drain-cap", type=int, default=None,
                    help="s the drain is measured at most (default 60, "
                    "--quick 20)")
    ap.add_argument("--big-events", type=int, default=None,
                    help="default 20000, --quick 2000")
    ap.add_argument("--big-cap", type=int, default=None,
                    help="s measured at most (default 120, --quick 40)")
    ap.add_argument("--resource-events", type=int, default=None,
                    help="default 100000, --quick 5000")
    ap.add_argument("--resource-cap", type=int, default=None,
                    help="s allowed to send them (default 300, --quick 60)")
    a = ap.parse_args()
    quick = a.quick
    for name, full, small in (("drain_events", 10000, 1000),
                              ("fill_cap", 150, 40), ("drain_cap", 60, 20),
                              ("big_events", 20000, 2000),
                              ("big_cap", 120, 40),
                              ("resource_events", 100000, 5000),
                              ("resource_cap", 300, 60)):
        if getattr(a, name) is None:
            setattr(a, name, small if quick else full)
    if a.scenarios == "all":
        sel = set(ALL_SCENARIOS)
    else:
        sel = set(x.strip() for x in a.scenarios.split(",") if x.strip())
        bad = sel - set(ALL_SCENARIOS)
        if bad:
            ap.error("unknown scenario(s): %s" % ", ".join(sorted(bad)))
    if sel & {"fast", "slow", "health"}:
        sel.add("intake")   # their baseline
    if "dup" in sel:
        sel.add("intake")
    if "pg_twohost" in sel:
        sel.add("pg_fast")   # its one-host figure
    if a.no_stall:
        sel.discard("stall")
    a.selected = sel
    if a.connections < a.threads or a.stall_connections < a.threads:
        ap.error("connections must be at least --threads")
    if a.deliver_brands < 1 or a.duration < 1 or a.threads < 1:
        ap.error("--deliver-brands, --duration and --threads must be >= 1")

    print("command: python3 " + " ".join(shlex.quote(x) for x in sys.argv))
    if shutil.which("wrk") is None:
        print("bench: wrk not found (Debian: apt-get install wrk)")
        return 2
    os.environ["GCRELAY_BUILD"] = os.path.abspath(a.build)
    if a.keep:
        os.environ["GCRELAY_KEEP"] = "1"
    sys.modules.setdefault("bench", sys.modules[__name__])
    global stack
    import stack as stack_module
    stack = stack_module
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True,
                                 text=True).stdout.splitlines()[:1]
    print("build %s; gcrelay workers %d, nginx workers %d; wrk %d threads, "
          "%d connections, %d s after %d s warm-up; %d CPUs, load %s" % (
              a.build, a.workers, a.nginx_workers, a.threads, a.connections,
              a.duration, a.warmup, os.cpu_count(),
              " ".join("%.2f" % x for x in os.getloadavg())))
    if a.dispatchers is not None:
        print("delivery.dispatchers = %d in the canned and PostgreSQL "
              "scenarios' stacks (both backends)" % a.dispatchers)
    if wrk_version:
        print(wrk_version[0].strip())
    cls = bench_stack_class()
    cls.nginx_workers = a.nginx_workers
    # Long retry delays: the retrier must not run during the bench.
    s = cls(workers=a.workers, budget_ms=8000, http_timeout_ms=3000,
            retry_schedule="[300, 600]", reconcile_after_s=10)
    b = None
    cb = None
    pgb = None
    failed = []
    try:
        print("stack in %s (nginx on 127.0.0.1:%d)" % (s.dir, s.port),
              flush=True)
        print("scenarios: %s" % ", ".join(x for x in ALL_SCENARIOS
                                           if x in a.selected))
        b = Bench(a, s)
        b.run()
        store = store_summary(s)
        if s.gcrelay.poll() is not None:
            print("FAILED: gcrelay exited with %d" % s.gcrelay.returncode)
            failed.append("gcrelay")
        if a.selected & CANNED_SCENARIOS:
            import upstream_scenarios
            cb = upstream_scenarios.CannedBench(b, stack, cls)
            t0 = time.monotonic()
            cb.run(a.selected)
            print("[done] canned scenarios took %.0f s" % (
                time.monotonic() - t0), flush=True)
        if a.selected & PG_SCENARIOS:
            import pg_scenarios
            pgb = pg_scenarios.PgBench(b, stack, cls, cb)
            t0 = time.monotonic()
            try:
                pgb.run(a.selected)
            finally:
                pgb.close()
            print("[done] PostgreSQL scenarios took %.0f s" % (
                time.monotonic() - t0), flush=True)
        if b.results:
            report(a, b.results, store, b.stall_probe)
        if cb:
            upstream_scenarios.report(cb.results)
            failed += [k for k, r in cb.results.items() if r.failure]
        if pgb:
            pg_scenarios.report(pgb.results)
            failed += [k for k, r in pgb.results.items() if r.failure]
        print("load average after: %s" % " ".join(
            "%.2f" % x for x in os.getloadavg()))
        failed += [k for k, r in b.results.items() if r.failure]
    finally:
        if b:
            b.close()
        s.close()
    if failed:
        print("bench: FAILED scenario(s): %s" % ", ".join(sorted(failed)))
        return 1
    print("bench: all scenarios ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
