"""make bench, part 3: the PostgreSQL store (issue 10).  bench.py drives
these after the SQLite scenarios, in the same run, on one throwaway
cluster started here and configured as a production one would be where it
matters for these figures: fsync on, synchronous_commit on (full_page_
writes on, wal_sync_method and shared_buffers at their defaults), on the
disk the stacks use; listening on a unix socket only.  pg_stat_statements
is preloaded (pg_stat_statements.track = top: statements the clients sent,
not those run inside functions) to count statements.

Each PostgreSQL figure is a ratio to the same scenario on SQLite run
right before it on the same kind of fresh stack (the machine is shared and
its load drifts over minutes); the ratio to the main run's figure (#3,
fast) is printed beside when those ran.

  pg_intake   intake without destinations (scenario 3 of bench.py, the
              same wrk run) on a fresh SQLite stack, then on a fresh
              PostgreSQL one: requests/s, PostgreSQL / SQLite.  Goal
              >= 0.5.  Round trips per recorded event as below.
  pg_fast     the canned-upstream *fast* scenario (offer_claimed over 20
              brands, canned upstreams answering at once, the whole
              offer_claimed path) on SQLite, then on PostgreSQL: delivered
              events/s, PostgreSQL / SQLite.  Goal >= 0.5.
              Round trips to the database per delivered event over the
              window from wrk's start until the canned upstream has been
              quiet for 1 s: gcrelay's own count
              (gcrelay_store_round_trips_total on /metrics: a BEGIN with
              its locks in one message is one, a pipelined batch is one);
              from PostgreSQL's own statistics, statements
              (pg_stat_statements calls), transactions (pg_stat_database
              xact_commit + xact_rollback of the stack's database), WAL
              flushes (pg_stat_wal, with track_wal_io_timing) and server
              time by statement kind, each / events fully delivered.
              The bench's own queries (psql, recognisable by the
              row_to_json wrapper of pgcluster.rows) are subtracted; the
              stack's idle rate (retrier and dispatcher polls, measured
              for 3 s before the window) is shown beside.  Fewer is better;
              reported, no goal.
  pg_twohost  two gcrelay + nginx stacks (hosts) on one database and one
              canned upstream, the fast load split between them (two wrk
              processes, half the connections each): delivered events/s of
              both / pg_fast's one host.  Reported; a 2-core machine that
              runs both hosts, PostgreSQL, nginx and wrk cannot show
              scaling, and the output says so.

--pg-fsync off runs the cluster without fsync (and without
synchronous_commit); every figure is then labelled as such.
"""

import copy
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
import json

import pgcluster
import upstream_scenarios as us

OWN_QUERY = "row_to_json(q)"   # pgcluster.rows wraps every bench query


class BenchCluster(pgcluster.Cluster):
    """pgcluster.Cluster with durable settings and pg_stat_statements."""

    fsync = True

    def start(self):
        durable = "on" if self.fsync else "off"
        self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-w",
                   "-l", os.path.join(self.dir, "server.log"), "-o",
                   "-k %s -c listen_addresses='' -c max_connections=300 "
                   "-c fsync=%s -c synchronous_commit=%s "
                   "-c full_page_writes=on "
                   "-c shared_preload_libraries=pg_stat_statements "
                   "-c pg_stat_statements.track=top "
                   "-c pg_stat_statements.track_utility=on "
                   "-c track_wal_io_timing=on"
                   % (self.dir, durable, durable), "start"])

    def settings(self):
        names = ("server_version", "fsync", "synchronous_commit",
                 "full_page_writes", "wal_sync_method", "shared_buffers",
                 "track_wal_io_timing",
                 "max_connections")
        return ", ".join("%s %s" % (n, self.psql("postgres", "SHOW %s" % n)
                                    .strip()) for n in names)


def round_trips(stack):
    """gcrelay's own count of requests sent to PostgreSQL and waited for
    (gcrelay_store_round_trips_total on /metrics; a pipelined batch of
    statements is one)."""
    text = stack.request("GET", "/metrics").raw.decode()
    for line in text.splitlines():
        if line.startswith("gcrelay_store_round_trips_total "):
            return int(line.split()[1])
    raise RuntimeError("no gcrelay_store_round_trips_total on /metrics")


class Snap:
    def __init__(self, c, db, stacks=()):
        self.t = time.monotonic()
        # each /metrics read is itself a round trip or two (store check)
        self.rts = sum(round_trips(s) for s in stacks)
        self.xacts = c.rows("postgres", "SELECT xact_commit + xact_rollback "
                            "FROM pg_stat_database WHERE datname = %s"
                            % pgcluster.literal(db))[0][0]
        # WAL flushes (cluster-wide: only the one stack measured runs)
        self.wal_sync, self.wal_sync_ms = c.rows(
            "postgres", "SELECT wal_sync, wal_sync_time FROM pg_stat_wal")[0]
        rows = c.rows(
            "postgres", "SELECT s.query, sum(s.calls)::bigint, "
            "sum(s.total_exec_time)::float8 FROM "
            "pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = %s GROUP BY 1" % pgcluster.literal(db))
        self.calls = {q: n for q, n, _ in rows}
        self.exec_ms = {q: float(ms) for q, _, ms in rows}


class Window:
    """PostgreSQL's counters between two snapshots of one database, the
    bench's own queries taken out: each is session_xacts transactions
    (measured when the cluster starts)."""

    def __init__(self, a, b, session_xacts):
        self.seconds = b.t - a.t
        self.wal_sync = b.wal_sync - a.wal_sync
        self.wal_sync_ms = b.wal_sync_ms - a.wal_sync_ms
        calls = {q: n - a.calls.get(q, 0) for q, n in b.calls.items()}
        self.calls = {q: n for q, n in calls.items() if n > 0}
        self.exec_ms = {q: ms - a.exec_ms.get(q, 0.0)
                        for q, ms in b.exec_ms.items() if q in self.calls}
        self.own = sum(n for q, n in self.calls.items() if OWN_QUERY in q)
        self.statements = sum(n for q, n in self.calls.items()
                              if OWN_QUERY not in q)
        # gcrelay sends BEGIN and its advisory lock(s) as one message
        # (one round trip, two statements counted) and ends with a
        # prepared COMMIT or ROLLBACK, which PostgreSQL 15's
        # pg_stat_statements does not count: one of each per lock call,
        # so the round trips are the statements counted.
        self.locks = sum(n for q, n in self.calls.items()
                         if "pg_advisory_xact_lock" in q)
        self.round_trips = b.rts - a.rts
        self.own_xacts = int(round(self.own * session_xacts))
        self.xacts = b.xacts - a.xacts - self.own_xacts

    def top(self, n=16):
        rows = sorted(((c, q) for q, c in self.calls.items()
                       if OWN_QUERY not in q), reverse=True)
        return rows[:n]

    def top_time(self, n=8):
        rows = sorted(((ms, q) for q, ms in self.exec_ms.items()
                       if OWN_QUERY not in q), reverse=True)
        return rows[:n]


def short(q, width=90):
    q = " ".join(q.split())
    return q if len(q) <= width else q[:width - 3] + "..."


class PgMeter:
    """meter(phase, stack, result) for CannedBench.fast and the others:
    "begin" measures 3 s of idle first, "end" closes the window."""

    # A backend that goes idle within 1 s of its last flush of statistics
    # sends the rest only after PGSTAT_IDLE_INTERVAL (10 s, PostgreSQL
    # 15): wait that out at both ends so that transactions and WAL
    # flushes land in the window they belong to (pg_stat_statements
    # counts at once).
    SETTLE_S = 11.0

    def __init__(self, cluster, session_xacts, idle_s=3.0):
        self.c = cluster
        self.session_xacts = session_xacts
        self.idle_s = idle_s
        self.idle = self.window = None

    def __call__(self, phase, s, r, hosts=None):
        """hosts: every stack on the database (default: s alone), whose
        round trips are summed."""
        hosts = hosts or [s]
        if phase == "begin":
            time.sleep(self.SETTLE_S)   # the warm-up's statistics
            a = Snap(self.c, s.pg_db, hosts)
            time.sleep(self.idle_s)
            self.begin = Snap(self.c, s.pg_db, hosts)
            self.idle = Window(a, self.begin, self.session_xacts)
        else:
            time.sleep(self.SETTLE_S)
            self.window = Window(self.begin, Snap(self.c, s.pg_db, hosts),
                                 self.session_xacts)

    def figures(self, r, events, what):
        w, idle = self.window, self.idle
        if w is None or not events:
            r.figure("round trips per " + what, "not measured (%d events)"
                     % events, "report; fewer is better", None)
            return
        ix = idle.xacts / idle.seconds
        irt = idle.round_trips / idle.seconds
        net_x = (w.xacts - ix * w.seconds) / events
        net_rt = (w.round_trips - irt * w.seconds) / events
        r.figure("round trips per " + what,
                 "%.2f (%d in %.1f s / %d events; net of the idle rate: "
                 "%.2f)" % (w.round_trips / events, w.round_trips,
                            w.seconds, events, net_rt),
                 "report; fewer is better", None)
        r.figure("transactions per " + what,
                 "%.2f (%d; net of the idle rate: %.2f; of them write "
                 "transactions: %.2f)" % (w.xacts / events, w.xacts, net_x,
                                          w.locks / events),
                 "report; fewer is better", None)
        r.figure("statements per " + what,
                 "%.2f (%d; pg_stat_statements)" % (
                     w.statements / events, w.statements),
                 "report", None)
        r.notes.append("round trips = gcrelay_store_round_trips_total on "
                       "the stack's /metrics: requests gcrelay sent to "
                       "PostgreSQL and waited for (a BEGIN with its write "
                       "locks in one message is one; a pipelined batch of "
                       "statements, BEGIN to COMMIT, is one); statements = "
                       "pg_stat_statements calls (a simple-protocol "
                       "COMMIT/ROLLBACK, %d here at most, is not counted)"
                       % w.locks)
        r.figure("WAL flushes per " + what,
                 "%.2f, %.2f ms each on average (%d in the window; "
                 "pg_stat_wal, track_wal_io_timing)" % (
                     w.wal_sync / events,
                     w.wal_sync_ms / w.wal_sync if w.wal_sync else 0.0,
                     w.wal_sync), "report", None)
        r.notes.append("transactions = pg_stat_database xact_commit + "
                       "xact_rollback of the stack's database: each "
                       "statement outside BEGIN is one")
        r.notes.append("idle stack before the window: %.1f transactions/s, "
                       "%.1f round trips/s (retrier and dispatcher polls, "
                       "autovacuum)" % (ix, irt))
        r.notes.append("bench's own queries in the window (subtracted): %d "
                       "statements, %d transactions" % (w.own, w.own_xacts))
        r.notes.append("statements per %s by kind (top 16 of %d):" % (
            what, len(w.calls)))
        for n, q in w.top():
            r.notes.append("  %6.2f  %s" % (n / events, short(q)))
        r.notes.append("server time per %s by kind, ms (pg_stat_statements "
                       "total_exec_time; top 8; all kinds: %.3f):" % (
                           what, sum(w.exec_ms.values()) / events))
        for ms, q in w.top_time():
            r.notes.append("  %7.3f  %s" % (ms / events, short(q)))


class PgBench:
    def __init__(self, bench, stack_mod, base_cls, sqlite_canned):
        self.b = bench
        self.a = bench.a
        self.stack = stack_mod
        self.base_cls = base_cls
        self.sqlite_canned = sqlite_canned   # CannedBench that ran fast
        self.cb = us.CannedBench(bench, stack_mod, base_cls)
        self.results = self.cb.results
        self.cluster = None
        self.label = ""
        self.session_xacts = 2.0

    # ---- cluster ------------------------------------------------------------

    def start_cluster(self):
        BenchCluster.fsync = self.a.pg_fsync == "on"
        self.label = "" if BenchCluster.fsync else " [fsync OFF]"
        c = BenchCluster()
        pgcluster._shared = c
        os.environ["GCRELAY_PG_DIR"] = c.dir
        c.psql("postgres", "CREATE EXTENSION IF NOT EXISTS "
               "pg_stat_statements")
        self.cluster = c
        # What one bench query adds to xact_commit: one autocommit
        # statement, one transaction, in the psql pgcluster keeps per
        # database (started before any window: the fill and the counts
        # before it); a psql of its own per query (older pgcluster) adds
        # its start-up's.  Either way a handful among tens of thousands.
        self.session_xacts = 1.0 if hasattr(pgcluster.Cluster,
                                            "session") else 2.0
        if self.stack.STORE != "sqlite":
            print("WARNING: GCRELAY_STORE=%s: the baselines are not SQLite"
                  % self.stack.STORE)
        print("PostgreSQL cluster in %s: %s; one bench query (its "
              "psql) = %.1f transaction(s)%s" % (
            c.dir, c.settings(), self.session_xacts,
            "" if BenchCluster.fsync else
            "  -- NOT durable: figures labelled [fsync OFF]"), flush=True)

    def close(self):
        if self.cluster is not None:
            self.cluster.remove()

    def run(self, selected):
        self.start_cluster()
        if "pg_intake" in selected:
            self.cb.scenario("pg_intake", "pg_intake: intake without "
                             "destinations on PostgreSQL vs SQLite%s"
                             % self.label, self.intake)
        if "pg_fast" in selected or "pg_twohost" in selected:
            self.cb.scenario("pg_fast", "pg_fast: the fast scenario on "
                             "PostgreSQL vs SQLite; round trips per "
                             "delivered event%s" % self.label, self.fast)
        if "pg_twohost" in selected:
            self.cb.scenario("pg_twohost", "pg_twohost: two hosts on one "
                             "database, the fast load split between them, "
                             "vs one host%s" % self.label, self.twohost)

    # ---- scenarios ----------------------------------------------------------

    def intake_on(self, store, r, meter=None):
        """Scenario 3 of bench.py on a fresh stack of the given store;
        returns (its Result, events recorded, warm-up included)."""
        import bench as bench_mod
        a = copy.copy(self.a)
        a.selected = {"intake"}   # run_intake: no dup scenario here
        s = bench_mod.bench_stack_class()(
            workers=a.workers, budget_ms=8000, http_timeout_ms=3000,
            retry_schedule="[300, 600]", reconcile_after_s=10, store=store,
            webhook_secrets=list(self.b.s.webhook_secrets))
        pb = bench_mod.Bench(a, s)
        self.b.seq += 1000
        pb.seq = self.b.seq   # ids distinct from the other runs'
        try:
            s.put_brand(bench_mod.NOBRAND, {"name": "Bench, no "
                                            "destinations"})
            before = s.query("SELECT count(*) FROM events")[0][0]
            if meter:
                meter("begin", s, r)
            sq = self.b.results.get("2")
            pb.run_intake(max(sq.rps, 100.0) if sq and sq.data else 1000.0)
            if meter:
                meter("end", s, r)
            events = s.query("SELECT count(*) FROM events")[0][0] - before
            r3 = pb.results["3"]
            r.cmds.append(r3.cmd)
            name = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[store]
            r.notes += ["%s intake: %s" % (name, n) for n in r3.notes]
            if r3.failure or not r3.data:
                r.failure = "intake on %s failed: %s" % (name, r3.failure)
            else:
                d = r3.data
                r.notes.append("%s intake: %d requests in %.2f s (%.0f/s), "
                               "p50 %.1f ms, p99 %.1f ms" % (
                                   name, d["requests"],
                                   d["duration_us"] / 1e6, r3.rps,
                                   d["p50_us"] / 1000, d["p99_us"] / 1000))
            return r3, events
        finally:
            pb.close()
            s.close()

    def intake(self, r):
        # SQLite right before PostgreSQL, on the same kind of fresh stack:
        # the machine is shared and its load drifts over minutes.
        lite, _ = self.intake_on("sqlite", r)
        meter = PgMeter(self.cluster, self.session_xacts)
        pg, events = self.intake_on("postgresql", r, meter)
        if r.failure:
            return
        r.value = pg.rps
        ratio = pg.rps / lite.rps
        r.figure("intake requests/s, PostgreSQL / SQLite",
                 "%.3f (%.0f/s vs %.0f/s; p50 %.1f vs %.1f ms)" % (
                     ratio, pg.rps, lite.rps, pg.data["p50_us"] / 1000,
                     lite.data["p50_us"] / 1000), ">= 0.5", ratio >= 0.5)
        base = self.b.results.get("3")
        if base is not None and not base.failure and base.data:
            r.notes.append("vs #3 (SQLite, the main stack, earlier in the "
                           "run): %.3f (%.0f/s)" % (pg.rps / base.rps,
                                                    base.rps))
        meter.figures(r, events, "recorded event")
        r.notes.append("round trips counted over warm-up and run: %d "
                       "events recorded" % events)

    def fast(self, r):
        # SQLite's fast right before PostgreSQL's (see intake).
        lite = us.CR("pg_fast", "")
        self.cb.fast(lite, store="sqlite")
        r.cmds += lite.cmds
        r.notes += ["SQLite: " + n for n in lite.notes]
        if lite.failure:
            r.failure = "fast on SQLite: " + lite.failure
            return
        meter = PgMeter(self.cluster, self.session_xacts)
        self.cb.fast(r, store="postgresql", meter=meter)
        if r.value is None:
            return
        ratio = r.value / lite.value if lite.value else 0.0
        r.figure("delivered events/s, PostgreSQL / SQLite",
                 "%.3f (%.1f/s vs %.1f/s)" % (ratio, r.value, lite.value),
                 ">= 0.5", ratio >= 0.5)
        sq = self.sqlite_canned.results.get("fast") \
            if self.sqlite_canned else None
        if sq is not None and sq.value and not sq.failure:
            r.notes.append("vs fast (SQLite, earlier in the run): %.3f "
                           "(%.1f/s)" % (r.value / sq.value, sq.value))
        meter.figures(r, getattr(r, "delivered_all", 0), "delivered event")

    def twohost(self, r):
        a, cb = self.a, self.cb
        one = self.results.get("pg_fast")
        s1 = cb.new_stack(store="postgresql")
        s2 = None
        meter = PgMeter(self.cluster, self.session_xacts)
        try:
            brands = cb.brands(s1, tag="two")
            s2 = cb.new_stack(peer=s1)
            hosts = (s1, s2)
            for i, s in enumerate(hosts):
                cb.fill(s, cb.items("tw%d" % i, max(100, us.BRANDS * 5),
                                    brands), r, 60, conns=a.connections,
                        what="warm-up events on host %d" % (i + 1))
            # Each host's pool as big as one host's: it must not run out.
            base = cb.intake_rps() or us.NO_BASELINE_RPS
            conns = max(1, a.connections // 2)
            threads = max(1, a.threads // 2)
            a1 = copy.copy(a)
            a1.threads = threads
            from bench import wrk_cmd, write_pool, signed_rows
            runs = []
            for i, s in enumerate(hosts):
                items = cb.items("two%d" % i, self.b.pool_size(
                    base, a.duration), brands)
                prefix = os.path.join(self.b.tmp, "two%d" % i)
                write_pool(prefix, signed_rows(self.b.secret, items), threads)
                cmd = wrk_cmd(a1, "http://127.0.0.1:%d/v1/events" % s.port,
                              conns, a.duration, a.timeout)
                r.cmds.append("GCRELAY_BENCH_POOL=%s %s" % (
                    shlex.quote(prefix), " ".join(shlex.quote(c)
                                                  for c in cmd)))
                runs.append((s, items, prefix, cmd))
            off = s1.canned.log_offset()
            hosts = [run[0] for run in runs]
            meter("begin", s1, r, hosts)
            procs = [subprocess.Popen(
                cmd, env=dict(os.environ, GCRELAY_BENCH_POOL=prefix),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for _, _, prefix, cmd in runs]
            outs = [p.communicate(timeout=a.duration + a.timeout + 60)[0]
                    for p in procs]
            t1 = int(time.time() * 1000)
            us.wait_quiet(s1.canned, off)
            meter("end", s1, r, hosts)
            datas = []
            for p, out in zip(procs, outs):
                d = None
                for line in out.splitlines():
                    if line.startswith("GCRELAY_BENCH "):
                        d = json.loads(line[len("GCRELAY_BENCH "):])
                if p.returncode != 0 or d is None:
                    raise RuntimeError("wrk failed:\n%s" % out[-2000:])
                datas.append(d)
            t0 = t1 - max(d["duration_us"] for d in datas) // 1000
            done = all_done = 0
            for (s, items, _, _), d in zip(runs, datas):
                like = us.id_range(items)
                n = us.delivered_in(s1, like, t0, t1 + 500)
                done += n
                all_done += us.delivered_in(s1, like, 0, 1 << 62)
                r.notes.append("host %s: wrk %d requests in %.2f s (%.0f/s), "
                               "p50 %.1f ms, p99 %.1f ms, errors %s; %d "
                               "events delivered in the window" % (
                                   s.port, d["requests"],
                                   d["duration_us"] / 1e6,
                                   d["requests"] * 1e6 / d["duration_us"],
                                   d["p50_us"] / 1000, d["p99_us"] / 1000,
                                   {k: d[k] for k in ("status", "connect",
                                                      "read", "write",
                                                      "timeout") if d[k]},
                                   n))
                if d["status"]:
                    r.failure = "%d non-2xx answers from host %s" % (
                        d["status"], s.port)
            rps = done * 1000.0 / max(1, t1 - t0)
            r.value = rps
            if one is None or not one.value:
                r.figure("delivered events/s, 2 hosts", "%.1f/s (no one-"
                         "host figure)" % rps, "report", None)
            else:
                r.figure("delivered events/s, 2 hosts / 1 host",
                         "%.3f (%.1f/s vs %.1f/s)" % (
                             rps / one.value, rps, one.value),
                         "report (no scaling can show on this machine)",
                         None)
            r.notes.append("NOTE: this machine has %d CPUs, shared by both "
                           "hosts' gcrelay and nginx, PostgreSQL, the canned "
                           "upstream and wrk: it cannot show scaling; the "
                           "figure shows what a second host costs or gives "
                           "when nothing is added but contention "
                           "(SKIP LOCKED claims, CPU)"
                           % os.cpu_count())
            meter.figures(r, all_done, "delivered event")
            r.notes.append("canned upstream: " + us.canned.summarize_calls(
                s1.canned.calls(off)))
        finally:
            if s2 is not None:
                s2.close()
            s1.close()


def report(results):
    if not results:
        return
    print()
    print("PostgreSQL scenarios (same run; goals; speed never fails the "
          "run):")
    for r in results.values():
        print("[%s] %s" % (r.key, r.title))
        for name, value, goal, met in r.figures:
            print("    %-44s %s  goal %s: %s" % (
                name, value, goal, {True: "met", False: "NOT met",
                                    None: "-"}[met]))
        for c in r.cmds:
            print("    cmd: " + c)
        for n in r.notes:
            print("    " + n)
        if r.failure:
            print("    FAILED: " + r.failure.rstrip().replace("\n", "\n    "))
