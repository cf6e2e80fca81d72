"""Two hosts on one PostgreSQL database: two gcrelay instances, each
behind its own nginx, sharing the database and the simulators.  Run by the
runner in its PostgreSQL pass only (there is no shared store on SQLite).
"""

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import unittest

from stack import BUILD, Stack, sample_event

GCRELAY = os.path.join(BUILD, "gcrelay")


def both(fa, fb):
    """Run fa and fb at the same instant; their results."""
    out = [None, None]
    errors = []
    gate = threading.Barrier(2)

    def run(i, f):
        try:
            gate.wait(10)
            out[i] = f()
        except Exception as e:  # reported below, never lost
            errors.append(e)
    ts = [threading.Thread(target=run, args=(i, f))
          for i, f in enumerate((fa, fb))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    if errors:
        raise errors[0]
    return out


def slow_poll(stack, interval_ms=10000):
    """Rewrite stack's config so its dispatcher looks for due work only
    every interval_ms when nobody wakes it (before it starts)."""
    with open(stack.config_path) as f:
        text = f.read()
    old = "retrier = { interval_ms = 200; };"
    assert old in text, "stack.py's retrier line changed"
    with open(stack.config_path, "w") as f:
        f.write(text.replace(old, "retrier = { interval_ms = %d; };"
                             % interval_ms))


def settled(stack, wid):
    """Every delivery of wid delivered or skipped."""
    rows = stack.query("SELECT status FROM deliveries WHERE event_id = ?",
                       wid)
    return rows and all(r[0] in ("delivered", "skipped") for r in rows)


def triggers_by_token(stack, account="demo_client"):
    """token -> Emarsys triggers applied (deduplicated ones are not in the
    simulator's state)."""
    out = {}
    for t in stack.emarsys.state()["accounts"][account]["triggers"]:
        data = t.get("data") or {}
        if isinstance(data, str):
            data = json.loads(data)
        out[data.get("token")] = out.get(data.get("token"), 0) + 1
    return out


def awards_by_token(stack, guid="demo_guid"):
    """token -> Yotpo awards made."""
    out = {}
    for a in stack.yotpo.state()["merchants"][guid]["awards"]:
        m = re.search(r"\(ref ([^)]+)\)$", a["history_title"] or "")
        tok = m.group(1) if m else None
        out[tok] = out.get(tok, 0) + 1
    return out


def assert_each_once(test, stack, ok):
    """Every answered event of ok [(webhook id, event)] triggered and
    awarded exactly once, and nothing at all made twice, answered or not
    (after half a second for the last calls to land)."""
    time.sleep(0.5)
    trig, awards = triggers_by_token(stack), awards_by_token(stack)
    tokens = [e["token"] for _, e in ok]
    test.assertEqual({t: trig.get(t) for t in tokens},
                     {t: 1 for t in tokens})
    test.assertEqual({t: awards.get(t) for t in tokens},
                     {t: 1 for t in tokens})
    test.assertEqual([t for t, n in trig.items() if n > 1], [])
    test.assertEqual([t for t, n in awards.items() if n > 1], [])


def post_load(stack, events, threads, answers, stop=None, backoff=0):
    """Post events to stack from threads; answers[i] = (webhook id, HTTP
    status or None when the connection failed).  stop: an Event that
    ends the load early; backoff: seconds a thread waits after an answer
    other than 2xx, as a sender does."""
    nxt = iter(range(len(events)))
    lock = threading.Lock()

    def run():
        while stop is None or not stop.is_set():
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            wid = "msg_%d_%s" % (i, secrets.token_hex(6))
            try:
                r = stack.post_event(events[i], webhook_id=wid)
                answers[i] = (wid, r.status)
            except Exception:  # noqa: BLE001 -- a dead host: no answer
                answers[i] = (wid, None)
            if answers[i][1] not in (200, 202):
                time.sleep(backoff)
    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    return ts


class TwoHosts(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.a = Stack(workers=2)
        try:
            cls.b = Stack(workers=2, peer=cls.a)
        except Exception:
            cls.a.close()
            raise
        cls.a.demo_brand()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.b.close()
        finally:
            cls.a.close()

    def awards(self, token):
        st = self.a.yotpo.state()["merchants"]["demo_guid"]["awards"]
        return [x for x in st if token in (x.get("history_title") or "")]

    def test_same_webhook_id_to_both_hosts_recorded_once(self):
        for i in range(6):
            ev = sample_event("offer_claimed")
            wid = "msg_two_%d_%d" % (os.getpid(), i)
            ra, rb = both(lambda: self.a.post_event(ev, webhook_id=wid),
                          lambda: self.b.post_event(ev, webhook_id=wid))
            for r in (ra, rb):
                self.assertIn(r.status, (200, 202), r)
                self.assertEqual(r.json["id"], wid, r)
            # One of the two recorded it, the other saw it recorded.
            self.assertEqual(
                sorted(bool(r.json.get("duplicate")) for r in (ra, rb)),
                [False, True], (ra, rb))
            self.assertEqual(self.a.query(
                "SELECT count(*) FROM events WHERE id = ?", wid), [(1,)])
            self.assertEqual(self.a.query(
                "SELECT count(*) FROM deliveries WHERE event_id = ?", wid),
                [(2,)])
            # Both hosts answer the same outcome once it is settled.
            self.a.wait(lambda: self.a.query(
                "SELECT status FROM events WHERE id = ?", wid) ==
                [("delivered",)], timeout=20, what="delivered")
            ga = self.a.admin("GET", "/admin/v1/events/" + wid)
            gb = self.b.admin("GET", "/admin/v1/events/" + wid)
            self.assertEqual(ga.status, 200, ga)
            self.assertEqual(ga.json["status"], gb.json["status"])
            self.assertEqual(ga.json["deliveries"], gb.json["deliveries"])
            self.assertEqual(len(self.awards(ev["token"])), 1)

    def test_one_award_across_hosts(self):
        # Two webhooks (two ids) for the same verification, one per host,
        # at once: Yotpo is awarded once.
        for _ in range(4):
            ev = sample_event("offer_claimed")
            ra, rb = both(lambda: self.a.post_event(ev),
                          lambda: self.b.post_event(ev))
            for r in (ra, rb):
                self.assertIn(r.status, (200, 202), r)
            self.a.wait(lambda: self.a.query(
                "SELECT count(*) FROM yotpo_ledger WHERE token = ? AND "
                "state = 'done'", ev["token"]) == [(1,)], timeout=20,
                what="award recorded")
            time.sleep(0.5)
            self.assertEqual(len(self.awards(ev["token"])), 1)


    def test_brand_change_on_one_host_reaches_the_other(self):
        # B's workers keep the brand's document once read; a change made
        # through A (or B's own admin worker) reaches B's next events.
        def yotpo_on_b(n):
            out = []
            for _ in range(n):
                r = self.b.post_event(sample_event("offer_claimed",
                                                   brand_slug="memo"))
                self.assertIn(r.status, (200, 202), r)
                dl = {d["destination"]: d for d in r.json["deliveries"]}
                out.append(dl["yotpo"]["status"])
            return out
        self.a.demo_brand("memo")
        # Every worker of B (two) has read it.
        self.assertNotIn("skipped", yotpo_on_b(6))
        self.a.demo_brand("memo", yotpo=False)
        time.sleep(0.2)  # the notification's way to B (milliseconds)
        self.assertEqual(yotpo_on_b(6), ["skipped"] * 6)
        self.b.demo_brand("memo")
        time.sleep(0.2)
        self.assertNotIn("skipped", yotpo_on_b(6))
        r = self.a.admin("DELETE", "/admin/v1/brands/memo")
        self.assertIn(r.status, (200, 204), r)
        time.sleep(0.2)
        for _ in range(4):
            r = self.b.post_event(sample_event("offer_claimed",
                                               brand_slug="memo"))
            self.assertEqual(r.status, 404, r)
            self.assertEqual(r.json["code"], "unknown_brand", r)


class WakeAcrossHosts(unittest.TestCase):
    """Work recorded on one host wakes the other hosts' dispatchers at once
    (LISTEN/NOTIFY), not at their next poll."""

    POLL_MS = 10000

    def test_event_on_b_delivered_by_a_at_once(self):
        # sync_workers 0: intake only records, a dispatcher delivers.  Both
        # poll every 10 s; B's dispatcher is stopped, so only A's can take
        # what B records, and only a wake-up across hosts makes it quick.
        a = Stack(workers=2, sync_workers=0, start=False)
        try:
            b = Stack(workers=2, sync_workers=0, start=False, peer=a)
            try:
                for s in (a, b):
                    slow_poll(s, self.POLL_MS)
                a.start()
                b.start()
                self.run_wake(a, b)
            finally:
                b.close()
        finally:
            a.close()

    def run_wake(self, a, b):
        a.demo_brand()
        a.wait(lambda: len(b.dispatcher_pids()) == 1, timeout=10,
               what="B's dispatcher started")
        (stopped,) = b.dispatcher_pids()
        # Let B's dispatcher finish its first (start-up) look, so that it
        # is stopped holding no transaction.
        time.sleep(0.5)
        os.kill(stopped, signal.SIGSTOP)
        try:
            for i in range(3):
                # A's own intake wakes A's dispatcher (the pipe); once it
                # has claimed that, its next poll is 10 s away.
                t0 = time.monotonic()
                r = a.post_event(sample_event("offer_claimed"))
                self.assertEqual(r.status, 202, r)
                a.wait(lambda: settled(a, r.json["id"]), timeout=5,
                       interval=0.02, what="A's own event delivered")
                sys.stderr.write("A's event %d delivered by A in %.3f s\n"
                                 % (i, time.monotonic() - t0))
                ev = sample_event("offer_claimed")
                t0 = time.monotonic()
                r = b.post_event(ev)
                self.assertEqual(r.status, 202, r)
                wid = r.json["id"]
                b.wait(lambda: settled(b, wid), timeout=15,
                       interval=0.02, what="B's event delivered")
                took = time.monotonic() - t0
                sys.stderr.write("B's event %d delivered by A in %.3f s\n"
                                 % (i, took))
                # Well before A's 10 s poll: woken by B's NOTIFY.
                self.assertLess(took, 3.0, "B's event %d took %.2f s" %
                                (i, took))
                self.assertEqual(len(self.awards(a, ev["token"])), 1)
        finally:
            os.kill(stopped, signal.SIGCONT)

    def awards(self, a, token):
        st = a.yotpo.state()["merchants"]["demo_guid"]["awards"]
        return [x for x in st if token in (x.get("history_title") or "")]


class HostLost(unittest.TestCase):
    """kill -9 one host (master and every child) mid-load: the other
    finishes every delivery the dead one accepted, once its leases expire,
    with no award or trigger made twice."""

    BUDGET_MS = 2000  # leases: 2 s + 15 s

    def test_kill_9_host_mid_load_other_finishes_each_once(self):
        # sync_workers 0: A's intake records and its dispatcher delivers,
        # so A dies holding leases on work in flight.
        a = Stack(workers=2, sync_workers=0, budget_ms=self.BUDGET_MS,
                  retry_schedule="[%s]" % ", ".join(["1"] * 30))
        try:
            b = Stack(workers=2, sync_workers=0, budget_ms=self.BUDGET_MS,
                      peer=a, retry_schedule="[%s]" % ", ".join(["1"] * 30))
            try:
                self.run_kill(a, b)
            finally:
                b.close()
        finally:
            a.close()

    def run_kill(self, a, b):
        a.put_brand("acme", {"name": "Acme", "emarsys": {
            "client_id": "demo_client", "client_secret": "demo_secret"},
            "yotpo": {"guid": "demo_guid", "api_key": "demo_api_key",
                      "max_rps": 100}})
        a.yotpo.config({"rate_limit_per_s": 1000})
        # Warm up (token, field ids) so the load is only triggers and
        # awards.
        r = a.post_event(sample_event("consent_intent"))
        self.assertIn(r.status, (200, 202), r)
        a.wait(lambda: settled(a, r.json["id"]), timeout=10,
               what="warm-up delivered")
        # Slow replies: work stays in flight on A when it dies.
        a.emarsys.fault("delay", ms=700, method="POST",
                        path_prefix="/api/v3/event/", count=-1)
        a.yotpo.fault("delay", ms=700, method="POST",
                      path_prefix="/api/v2/actions", count=-1)
        # Enough that A is still taking them in when it dies.
        events = [sample_event("offer_claimed") for _ in range(600)]
        answers = [None] * len(events)
        ts = post_load(a, events, 4, answers)

        def in_flight():
            posted = sum(1 for x in answers if x is not None)
            pending = [q for q in a.emarsys.requests() + a.yotpo.requests()
                       if q["outcome"] == "pending"]
            return posted >= 60 and len(pending) >= 5
        a.wait(in_flight, timeout=30, interval=0.02,
               what="A loaded, with calls in flight")
        # The host dies at once: every process frozen, then killed.
        pids = a.worker_pids() + [a.gcrelay.pid]
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        for p in pids:
            os.kill(p, signal.SIGKILL)
        killed_at = time.monotonic()
        a.gcrelay.wait(10)
        for t in ts:
            t.join(120)
        a.emarsys.clear_faults()
        a.yotpo.clear_faults()
        ok = [(w, e) for (w, st), e in zip(answers, events)
              if st in (200, 202)]
        sys.stderr.write("A answered %d of %d 2xx before it died; "
                         "statuses %r\n" % (len(ok), len(events), sorted(
                             {st for _, st in answers}, key=str)))
        self.assertGreaterEqual(len(ok), 60)
        self.assertLess(len(ok), len(events), "A died after the load")
        held = b.query("SELECT count(*) FROM deliveries WHERE "
                       "lease_owner IS NOT NULL")[0][0]
        self.assertGreater(held, 0, "A held no lease when it died")
        (sending,), = b.query("SELECT count(*) FROM yotpo_ledger WHERE "
                              "state = 'sending'")
        sys.stderr.write("A died with %d deliveries leased, %d awards "
                         "sent but not known to be made\n" % (held, sending))

        # B finishes everything recorded (what A answered 2xx and any it
        # recorded but could not answer), within lease + a margin.
        def done():
            (n,), = b.query("SELECT count(*) FROM deliveries WHERE status "
                            "NOT IN ('delivered', 'skipped')")
            return n == 0
        b.wait(done, timeout=self.BUDGET_MS / 1000 + 15 + 25, interval=0.2,
               what="every delivery finished by B")
        took = time.monotonic() - killed_at
        sys.stderr.write("B finished A's %d leased deliveries %.1f s after "
                         "the kill\n" % (held, took))
        recorded = {w for w, in b.query("SELECT id FROM events")}
        for w, _ in ok:
            self.assertIn(w, recorded)
        assert_each_once(self, a, ok)
        for w, e in ok:
            self.assertEqual(b.query("SELECT state, event_id FROM "
                                     "yotpo_ledger WHERE token = ?",
                                     e["token"]), [("done", w)])


class HoldAcrossHosts(unittest.TestCase):
    def test_429_on_one_host_holds_the_other(self):
        # Emarsys answers host A 429 with a reset 3 s ahead.  Events then
        # sent to host B must not call Emarsys before the reset.
        a = Stack(workers=2, sync_budget_ms=1000)
        try:
            b = Stack(workers=2, sync_budget_ms=1000, peer=a)
            try:
                self.run_hold(a, b)
            finally:
                b.close()
        finally:
            a.close()

    def run_hold(self, a, b):
        # Emarsys: its holds live in each host's shared memory, so only
        # the store can carry one to the other host.  (Yotpo's pacing is
        # already in the store's throttle table.)
        a.put_brand("acme", {"name": "Acme", "emarsys": {
            "client_id": "demo_client", "client_secret": "demo_secret"}})
        # Warm up: the token and field ids cached (in the store) first, so
        # nothing but the hold can keep B from calling.
        for kind in ("consent_intent", "offer_claimed"):
            r = a.post_event(sample_event(kind))
            self.assertEqual(r.status, 200, r)
        a.emarsys.clear_requests()
        a.emarsys.fault("rate_limit", reset_in=3, path_prefix="/api/v3/")
        r = a.post_event(sample_event("offer_claimed"))
        self.assertEqual(r.status, 202, r)
        limited = [q for q in a.emarsys.requests() if q["status"] == 429]
        self.assertEqual(len(limited), 1)
        # Stored on the wall clock: another host's monotonic clock starts
        # at its own boot, so a monotonic time would mean nothing there.
        (until,), = a.query("SELECT until_ms FROM account_holds WHERE "
                            "account = 'emarsys:demo_client'")
        self.assertLess(abs(until - (time.time() + 3) * 1000), 5000, until)
        for _ in range(4):
            r = b.post_event(sample_event("offer_claimed"))
            self.assertIn(r.status, (200, 202), r)
        b.wait(lambda: b.query(
            "SELECT count(*) FROM deliveries WHERE status NOT IN "
            "('delivered', 'skipped')") == [(0,)], timeout=30,
            what="every delivery delivered")
        early = [(q["seq"], q["method"], q["path"], q["early_ms"])
                 for q in a.emarsys.requests() if q.get("before_reset")]
        self.assertEqual(early, [], "calls before the reset another host "
                         "was told of (%s)" % limited[0].get("reset_at"))
        self.assertEqual(a.emarsys.stats()["calls_before_reset"], 0)


class PaceAcrossHosts(unittest.TestCase):
    def test_two_hosts_pace_one_emarsys_account_together(self):
        """Emarsys allows 120 calls a minute per account: paced at 90% by
        both hosts together (one call every 550 ms), not by each."""
        a = Stack(workers=2, sync_budget_ms=0)
        try:
            b = Stack(workers=2, sync_budget_ms=0, peer=a)
            try:
                self.run_pace(a, b)
            finally:
                b.close()
        finally:
            a.close()

    def run_pace(self, a, b):
        a.put_brand("acme", {"name": "Acme", "emarsys": {
            "client_id": "demo_client", "client_secret": "demo_secret"}})
        a.emarsys.config({"rate_limit_per_minute": 120})

        def settled(s):
            return s.query("SELECT count(*) FROM deliveries WHERE status "
                           "NOT IN ('delivered', 'skipped')") == [(0,)]
        # Each host learns the account's limit from a reply of its own:
        # the other host's dispatcher, woken by LISTEN/NOTIFY, must not
        # take its warm-up event, so it is stopped meanwhile.
        for s, other in ((a, b), (b, a)):
            frozen = other.dispatcher_pids()
            self.assertTrue(frozen, "no dispatcher found on the other host")
            for p in frozen:
                os.kill(p, signal.SIGSTOP)
            try:
                r = s.post_event(sample_event("consent_intent"))
                self.assertEqual(r.status, 202, r)
                s.wait(lambda: settled(s), timeout=20,
                       what="warm-up delivered")
            finally:
                for p in frozen:
                    os.kill(p, signal.SIGCONT)
        a.emarsys.clear_requests()
        both(lambda: [a.post_event(sample_event("consent_intent"))
                      for _ in range(4)],
             lambda: [b.post_event(sample_event("consent_intent"))
                      for _ in range(4)])
        a.wait(lambda: settled(a), timeout=40, what="every delivery")
        calls = sorted(q["mono"] for q in a.emarsys.requests()
                       if q["path"].startswith("/api/v3/"))
        self.assertGreaterEqual(len(calls), 7, calls)
        # One every 550 ms between them (each host alone would send one
        # every 550 ms, 275 ms together).  A call that left late shortens
        # the next gap, so look at the mean and at spans of two gaps
        # (1.1 s, less what a loaded machine delays a call).
        # Both hosts learned the limit in the warm-up; the first call of
        # the run may still follow the warm-up's last closely.
        calls = calls[1:]
        mean = (calls[-1] - calls[0]) / (len(calls) - 1)
        spans = [round(z - x, 3) for x, z in zip(calls, calls[2:])]
        self.assertGreaterEqual(mean, 0.5, spans)
        self.assertGreaterEqual(min(spans), 0.75, spans)
        self.assertEqual(a.emarsys.stats()["rate_limited"], 0)


class Migration(unittest.TestCase):
    def test_two_hosts_starting_at_once_migrate_once(self):
        a = Stack(workers=1, start=False)
        try:
            b = Stack(workers=1, start=False, peer=a)
            try:
                both(a.start, b.start)
                logs = a.log() + b.log()
                self.assertEqual(logs.count("applied migration 1\""), 1,
                                 logs[-4000:])
                self.assertEqual(a.query(
                    "SELECT version FROM gcrelay_schema"),
                    b.query("SELECT version FROM gcrelay_schema"))
            finally:
                b.close()
        finally:
            a.close()

    def test_migrate_command_and_newer_schema_refused(self):
        s = Stack(workers=1, start=False)
        try:
            r = subprocess.run([GCRELAY, "migrate", "-c", s.config_path],
                               capture_output=True, text=True,
                               user=s.user.pw_uid if s.user else None)
            self.assertEqual(r.returncode, 0, r.stderr)
            (v,), = s.query("SELECT version FROM gcrelay_schema")
            self.assertGreaterEqual(v, 5)
            s.query("UPDATE gcrelay_schema SET version = 999")
            r = subprocess.run([GCRELAY, "migrate", "-c", s.config_path],
                               capture_output=True, text=True,
                               user=s.user.pw_uid if s.user else None)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("database schema version 999 is newer than this "
                          "gcrelay", r.stderr + s.log())
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
