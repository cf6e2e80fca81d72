"""Two hosts on one PostgreSQL database: two gcrelay instances, each
behind its own nginx, sharing the database and the simulators.  Run by the
runner in its PostgreSQL pass only (there is no shared store on SQLite).
"""

import os
import subprocess
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
        # Each host learns the account's limit from a reply of its own.
        for s in (a, b):
            r = s.post_event(sample_event("consent_intent"))
            self.assertEqual(r.status, 202, r)
            s.wait(lambda: settled(s), timeout=20, what="warm-up delivered")
        a.emarsys.clear_requests()
        both(lambda: [a.post_event(sample_event("consent_intent"))
                      for _ in range(4)],
             lambda: [b.post_event(sample_event("consent_intent"))
                      for _ in range(4)])
        a.wait(lambda: settled(a), timeout=40, what="every delivery")
        calls = sorted(q["mono"] for q in a.emarsys.requests()
                       if q["path"].startswith("/api/v3/"))
        self.assertGreaterEqual(len(calls), 4, calls)
        # One every 550 ms: a call that left late shortens the next gap,
        # so look at spans of two gaps (1.1 s, less what scheduling and
        # the network move a call).
        spans = [round(z - x, 3) for x, z in zip(calls, calls[2:])]
        self.assertGreaterEqual(min(spans), 0.95, spans)
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
