"""The PostgreSQL store stopped and started under a running gcrelay:
intake answers 503 with nothing recorded, /healthz says why, and the
connection is re-established on its own.  Runs in the runner's PostgreSQL
pass only (it stops the shared throwaway cluster for a moment)."""

import os
import sys
import threading
import time
import unittest

from stack import Stack, sample_event
from test_twohost import (assert_each_once, awards_by_token, post_load,
                          triggers_by_token)


class DatabaseRestart(unittest.TestCase):
    def post(self, s, wid=None):
        wid = wid or "msg_" + os.urandom(6).hex()
        r = s.post_event(sample_event("offer_claimed"), webhook_id=wid)
        return wid, r

    def test_database_down_refuses_then_reconnects(self):
        s = Stack(workers=2)
        try:
            s.demo_brand()
            accepted = []
            for _ in range(3):
                wid, r = self.post(s)
                self.assertIn(r.status, (200, 202), r)
                accepted.append(wid)
            s.pg.stop()
            refused = []
            try:
                for _ in range(4):
                    wid, r = self.post(s)
                    self.assertEqual(r.status, 503, r)
                    self.assertEqual(r.json.get("code"), "store_unavailable",
                                     r)
                    refused.append(wid)
                    h = s.request("GET", "/healthz")
                    self.assertEqual(h.status, 503, h)
                    self.assertEqual(h.json["status"], "unavailable", h)
                    # Why: the database and its connection.
                    self.assertRegex(h.json["detail"],
                                     r"^database (unreachable|does not "
                                     r"answer): .*connection", h)
            finally:
                s.pg.start()
            # Each process reconnects on its own: no restart of gcrelay.
            s.wait(lambda: s.request("GET", "/healthz").status == 200,
                   timeout=20, what="healthy again")
            deadline = time.monotonic() + 20
            while True:
                wid, r = self.post(s)
                if r.status in (200, 202) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self.assertIn(r.status, (200, 202), r)
            ids = {row[0] for row in s.query("SELECT id FROM events")}
            self.assertEqual(set(accepted) | {wid}, ids)
            self.assertFalse(set(refused) & ids)
            # The sender retries a refused delivery: it goes through, once.
            again, r = self.post(s, refused[0])
            self.assertIn(r.status, (200, 202), r)
            self.assertEqual(s.query("SELECT count(*) FROM events WHERE "
                                     "id = ?", refused[0]), [(1,)])
            s.wait(lambda: s.query(
                "SELECT count(*) FROM deliveries WHERE status NOT IN "
                "('delivered', 'skipped')") == [(0,)], timeout=30,
                what="every accepted event delivered")
        finally:
            s.close()


class DatabaseRestartUnderLoad(unittest.TestCase):
    """PostgreSQL restarted while events keep arriving and being delivered
    (at intake and by the dispatcher): every event answered 2xx is
    delivered once, every one answered 503 is not recorded."""

    def test_restart_under_load(self):
        # budget_ms 2000: a lease lost with the connection expires in 17 s.
        s = Stack(workers=3, budget_ms=2000,
                  retry_schedule="[%s]" % ", ".join(["1"] * 30))
        try:
            self.run_restart(s)
        finally:
            s.close()

    def run_restart(self, s):
        s.put_brand("acme", {"name": "Acme", "emarsys": {
            "client_id": "demo_client", "client_secret": "demo_secret"},
            "yotpo": {"guid": "demo_guid", "api_key": "demo_api_key",
                      "max_rps": 100}})
        s.yotpo.config({"rate_limit_per_s": 1000})
        r = s.post_event(sample_event("consent_intent"))
        self.assertEqual(r.status, 200, r)
        # Replies slow enough that calls are in flight at the restart.
        s.emarsys.fault("delay", ms=150, method="POST",
                        path_prefix="/api/v3/event/", count=-1)
        s.yotpo.fault("delay", ms=150, method="POST",
                      path_prefix="/api/v2/actions", count=-1)
        events = [sample_event("offer_claimed") for _ in range(600)]
        answers = [None] * len(events)
        stop = threading.Event()
        ts = post_load(s, events, 4, answers, stop, backoff=0.2)
        try:
            s.wait(lambda: sum(1 for x in answers if x) >= 20, timeout=30,
                   what="load running")
            before = sum(1 for x in answers if x)
            t0 = time.monotonic()
            s.pg.stop()
            s.pg.start()
            restarted = time.monotonic() - t0
            # The load goes on until 30 events more were answered 2xx.
            s.wait(lambda: sum(1 for x in answers[before:] if x and
                               x[1] in (200, 202)) >= 30, timeout=60,
                   what="2xx answers again after the restart")
        except AssertionError:
            raise AssertionError("answers after the restart: %r\nlog:\n%s"
                                 % (answers[before:before + 40],
                                    s.log()[-5000:]))
        finally:
            stop.set()
            for t in ts:
                t.join(120)
        done = [(x, e) for x, e in zip(answers, events) if x is not None]
        statuses = {}
        for (_, st), _ in done:
            statuses[st] = statuses.get(st, 0) + 1
        sys.stderr.write("restart took %.1f s; answers %r\n"
                         % (restarted, statuses))
        self.assertEqual(set(statuses) - {200, 202, 503}, set(),
                         statuses)
        ok = [(w, e) for (w, st), e in done if st in (200, 202)]
        refused = [w for (w, st), _ in done if st == 503]
        t1 = time.monotonic()
        s.wait(lambda: s.query(
            "SELECT count(*) FROM deliveries WHERE status NOT IN "
            "('delivered', 'skipped')") == [(0,)], timeout=17 + 30,
            interval=0.2, what="every accepted event delivered")
        sys.stderr.write("all delivered %.1f s after the load ended\n"
                         % (time.monotonic() - t1))
        recorded = {w for w, in s.query("SELECT id FROM events")}
        self.assertEqual([w for w, _ in ok if w not in recorded], [])
        self.assertEqual([w for w in refused if w in recorded], [])
        assert_each_once(self, s, ok)


class FailedBatch(unittest.TestCase):
    """A run's results, attempts and event status go to PostgreSQL as one
    pipelined batch (BEGIN to COMMIT in one round trip).  When one of its
    statements fails, none of it is applied: the run's lease expires and
    a later run finishes the delivery, awarding nothing twice."""

    REFUSE = ("CREATE FUNCTION gc_refuse() RETURNS trigger LANGUAGE plpgsql "
              "AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; "
              "CREATE TRIGGER gc_refuse BEFORE INSERT ON attempts "
              "FOR EACH ROW EXECUTE FUNCTION gc_refuse()")

    def test_failed_statement_applies_nothing_then_finishes_once(self):
        # budget 1 s: leases last 16 s; sync_workers 0: the dispatcher
        # delivers
        s = Stack(workers=2, budget_ms=1000, sync_workers=0)
        try:
            s.demo_brand()
            s.pg.psql(s.pg_db, self.REFUSE)
            ev = sample_event("offer_claimed")
            r = s.post_event(ev, webhook_id="msg_batch")
            self.assertEqual(r.status, 202, r)
            s.wait(lambda: "could not store the outcome of msg_batch"
                   in s.log(), timeout=15, what="the refused finish")
            # The attempts insert came after the results in the batch:
            # those were rolled back with it.
            self.assertEqual(s.query(
                "SELECT destination, status, progress FROM deliveries "
                "ORDER BY destination"),
                [("emarsys", "pending", None), ("yotpo", "pending", None)])
            self.assertEqual(s.query("SELECT count(*) FROM attempts"),
                             [(0,)])
            self.assertEqual(s.query("SELECT status FROM events"),
                             [("pending",)])
            self.assertEqual(awards_by_token(s), {ev["token"]: 1})
            s.pg.psql(s.pg_db, "DROP TRIGGER gc_refuse ON attempts")
            s.wait(lambda: s.query(
                "SELECT count(*) FROM deliveries WHERE status = "
                "'delivered'") == [(2,)], timeout=40,
                what="delivered by a later run")
            self.assertEqual(s.query("SELECT status FROM events"),
                             [("delivered",)])
            self.assertGreater(s.query(
                "SELECT count(*) FROM attempts")[0][0], 0)
            # The ledger kept the award once; Emarsys is at least once.
            self.assertEqual(awards_by_token(s), {ev["token"]: 1})
            self.assertGreaterEqual(triggers_by_token(s).get(ev["token"], 0),
                                    1)
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
