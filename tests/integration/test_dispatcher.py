"""The dispatcher and the bounded intake (issue 8), through nginx ->
gcrelay -> the simulators: what the sync budget cuts short finishes in the
dispatcher, a 429 holds every process's calls to that account until its
reset, circuits open and close, a killed dispatcher loses nothing and
repeats nothing, and a backlog drains with many calls in flight.

Each test has a stack of its own (the options differ) and asserts what
users see: HTTP answers, what reached the simulators (one trigger applied
per event at Emarsys, one award per token at Yotpo) and the store.
"""

import json
import os
import re
import secrets
import signal
import threading
import time
import unittest

from stack import Stack, sample_event

EMAIL = "jane.doe@example.com"          # sample_event's email, normalised
ACCOUNT = "demo_client"
GUID = "demo_guid"
ACTIONS = "/api/v2/actions"
LONG_SCHEDULE = "[%s]" % ", ".join(["1"] * 30)
CIRCUIT_RE = re.compile(r'^gcrelay_circuit_open\{brand="([^"]*)",'
                        r'destination="([^"]*)",state="([^"]*)"\} 1$', re.M)


class DispatcherCase(unittest.TestCase):
    """Helpers; self.s is the test's stack."""

    s = None

    def tearDown(self):
        if self.s is not None:
            try:
                for sim in (self.s.emarsys, self.s.yotpo):
                    self.assertEqual(sim.stats()["internal_errors"], 0)
            finally:
                self.s.close()
                self.s = None

    def stack(self, **kw):
        self.s = Stack(**kw)
        return self.s

    # ---- gcrelay ----------------------------------------------------------

    def brand(self, slug="acme", emarsys=True, yotpo=True, max_rps=100):
        doc = {"name": "Brand " + slug}
        if emarsys:
            doc["emarsys"] = {"client_id": ACCOUNT,
                              "client_secret": "demo_secret"}
        if yotpo:
            doc["yotpo"] = {"guid": GUID, "api_key": "demo_api_key",
                            "max_rps": max_rps}
        self.s.put_brand(slug, doc)

    def post(self, ev, wid=None):
        """(webhook id, response, seconds taken)."""
        wid = wid or "msg_" + secrets.token_hex(8)
        t0 = time.monotonic()
        r = self.s.post_event(ev, webhook_id=wid)
        took = time.monotonic() - t0
        self.assertIn(r.status, (200, 202), r)
        return wid, r, took

    def post_many(self, events, threads=8):
        """Post concurrently; returns [(wid, response, seconds)] in order."""
        out = [None] * len(events)
        errors = []
        nxt = iter(range(len(events)))
        lock = threading.Lock()

        def run():
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                try:
                    wid = "msg_%d_%s" % (i, secrets.token_hex(6))
                    t0 = time.monotonic()
                    r = self.s.post_event(events[i], webhook_id=wid)
                    out[i] = (wid, r, time.monotonic() - t0)
                except Exception as exc:          # noqa: BLE001
                    errors.append(exc)
        ts = [threading.Thread(target=run) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        for wid, r, _ in out:
            self.assertIn(r.status, (200, 202), r)
        return out

    def detail(self, wid):
        r = self.s.admin("GET", "/admin/v1/events/" + wid)
        self.assertEqual(r.status, 200, r)
        return r.json

    def statuses(self, wids):
        """{(event_id, destination): status} from the store."""
        marks = ",".join("?" * len(wids))
        rows = self.s.query("SELECT event_id, destination, status FROM "
                            "deliveries WHERE event_id IN (%s)" % marks,
                            *wids)
        return {(e, d): st for e, d, st in rows}

    def wait_delivered(self, wids, timeout=30):
        """Every delivery of these events delivered or skipped."""
        last = {}

        def done():
            last.clear()
            last.update(self.statuses(wids))
            return last and all(st in ("delivered", "skipped")
                                for st in last.values())
        try:
            self.s.wait(done, timeout=timeout, interval=0.2,
                        what="all deliveries delivered")
        except AssertionError:
            stuck = {k: v for k, v in last.items()
                     if v not in ("delivered", "skipped")}
            sample = sorted(stuck)[:3]
            raise AssertionError(
                "%d of %d deliveries not delivered after %ds: %r\n"
                "first stuck event: %s\nlog tail:\n%s" % (
                    len(stuck), len(last), timeout, sample,
                    json.dumps(self.detail(sample[0][0]))[:3000]
                    if sample else "", self.s.log()[-6000:]))

    def response_dest(self, r, dest):
        d = [x for x in r.json["deliveries"] if x["destination"] == dest]
        self.assertEqual(len(d), 1, r)
        return d[0]

    def metrics_circuits(self):
        r = self.s.request("GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        return CIRCUIT_RE.findall(r.raw.decode())

    def health(self):
        r = self.s.request("GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        return r.json

    def dispatcher_pid(self):
        """The live dispatcher: a child of the master whose pid logs with
        role "dispatcher" (the latest such pid)."""
        pids = self.s.dispatcher_pids()
        return pids[-1] if pids else None

    # ---- the simulators ---------------------------------------------------

    def triggers_by_token(self):
        """token -> number of triggers Emarsys applied (deduplicated
        ones are not in the state)."""
        out = {}
        st = self.s.emarsys.state()["accounts"][ACCOUNT]
        for t in st["triggers"]:
            data = t.get("data") or {}
            if isinstance(data, str):
                data = json.loads(data)
            tok = data.get("token")
            out[tok] = out.get(tok, 0) + 1
        return out

    def awards_by_token(self):
        out = {}
        for a in self.s.yotpo.state()["merchants"][GUID]["awards"]:
            m = re.search(r"\(ref ([^)]+)\)$", a["history_title"] or "")
            tok = m.group(1) if m else None
            out[tok] = out.get(tok, 0) + 1
        return out

    def balance(self, email=EMAIL):
        cust = self.s.yotpo.state()["merchants"][GUID]["customers"].get(email)
        return 0 if cust is None else cust["points_balance"]

    def ledger(self, tok):
        return self.s.query("SELECT state, event_id FROM yotpo_ledger "
                            "WHERE token = ?", tok)

    def early_calls(self, sim):
        return [(r["seq"], r["method"], r["path"], r["early_ms"])
                for r in sim.requests() if r.get("before_reset")]

    def warm_up(self, slug="acme"):
        """One delivered consent so the Emarsys token and ids are cached;
        clears the records."""
        wid, r, _ = self.post(sample_event("consent_intent",
                                           brand_slug=slug))
        self.assertEqual(r.status, 200, r)
        self.s.emarsys.clear_requests()
        self.s.yotpo.clear_requests()


class SyncBudgetTest(DispatcherCase):
    def test_delivery_outliving_sync_budget_finishes_in_dispatcher(self):
        # The award is applied 1.5 s after it arrives; the intake cuts it
        # at 1 s, so its outcome is unknown: the dispatcher reads the
        # history after reconcile_after_s (3 s, when the award is visible)
        # and must not award again.  The trigger is also applied late and
        # retried by the dispatcher with the same trigger_id.
        self.stack(workers=2, sync_budget_ms=1000, reconcile_after_s=3)
        self.s.yotpo.config({"rate_limit_per_s": 1000})
        self.brand()
        self.warm_up()
        self.s.emarsys.fault("delay", ms=1500, method="POST",
                             path_prefix="/api/v3/event/")
        self.s.yotpo.fault("delay", ms=1500, method="POST",
                           path_prefix=ACTIONS)
        ev = sample_event("offer_claimed")
        wid, r, took = self.post(ev)
        self.assertEqual(r.status, 202, r)
        self.assertLess(took, 1.0 + 1.5, r)
        self.assertGreaterEqual(took, 0.9, r)
        self.assertEqual(r.json["status"], "accepted", r)
        for dest in ("emarsys", "yotpo"):
            self.assertNotEqual(self.response_dest(r, dest)["status"],
                                "delivered", r)
        self.wait_delivered([wid], timeout=20)
        self.assertEqual(self.detail(wid)["status"], "delivered")
        # Emarsys: the trigger went twice (cut, then the dispatcher) with
        # one trigger_id and was applied once.
        trig = self.s.emarsys.requests(path_prefix="/api/v3/event/",
                                       method="POST")
        self.assertGreaterEqual(len(trig), 2, trig)
        self.assertEqual(len({q["json"]["trigger_id"] for q in trig}), 1)
        self.assertEqual(self.triggers_by_token().get(ev["token"]), 1)
        self.assertEqual(self.s.emarsys.stats()["deduplicated_triggers"],
                         len(trig) - 1)
        # Yotpo: one award, points once, the ledger done by this event.
        self.assertEqual(self.awards_by_token(), {ev["token"]: 1},
                         [(q["method"], q["path"], q["status"], q["outcome"])
                          for q in self.s.yotpo.requests()])
        self.assertEqual(self.balance(), 100)
        self.assertEqual(self.ledger(ev["token"]), [("done", wid)])
        # The dispatcher finished it, not the worker.
        self.assertRegex(self.s.log(), r'"role":"dispatcher".*"event":"%s"'
                         % wid)


class HoldTest(DispatcherCase):
    def test_429_holds_every_process_until_the_reset(self):
        # Emarsys and Yotpo answer one event 429 with a reset 3 s ahead.
        # Then 9 events arrive at once on 3 workers: neither the workers
        # nor the dispatcher may call either account before the reset.
        self.stack(workers=3, sync_budget_ms=1000)
        self.s.yotpo.config({"rate_limit_per_s": 1000})
        self.brand()
        self.warm_up()
        self.s.emarsys.fault("rate_limit", reset_in=3,
                             path_prefix="/api/v3/")
        self.s.yotpo.fault("status", status=429, method="POST",
                           path_prefix=ACTIONS,
                           headers={"ratelimit-limit": "5",
                                    "ratelimit-remaining": "0",
                                    "ratelimit-reset": "3",
                                    "Retry-After": "3"},
                           body={"error": "Too Many Requests"})
        first = sample_event("offer_claimed")
        wid0, r0, took0 = self.post(first)
        self.assertEqual(r0.status, 202, r0)
        self.assertLess(took0, 2.5, r0)
        limited_em = [q for q in self.s.emarsys.requests()
                      if q["status"] == 429]
        limited_yo = [q for q in self.s.yotpo.requests()
                      if q["status"] == 429]
        self.assertEqual(len(limited_em), 1)
        self.assertEqual(len(limited_yo), 1)
        events = [sample_event("offer_claimed") for _ in range(9)]
        res = self.post_many(events, threads=9)
        for _, r, took in res:
            self.assertLess(took, 2.5, r)
        wids = [wid0] + [w for w, _, _ in res]
        self.wait_delivered(wids, timeout=25)
        em_early = self.early_calls(self.s.emarsys)
        yo_early = self.early_calls(self.s.yotpo)
        self.assertEqual((em_early, yo_early), ([], []),
                         "calls before the announced reset (seq, method, "
                         "path, ms early); Emarsys reset at %s, Yotpo at "
                         "%s\n%s" % (limited_em[0].get("reset_at"),
                                     limited_yo[0].get("reset_at"),
                                     self.s.log()[-6000:]))
        self.assertEqual(self.s.emarsys.stats()["calls_before_reset"], 0)
        self.assertEqual(self.s.yotpo.stats()["calls_before_reset"], 0)
        self.assertEqual(self.s.emarsys.stats()["rate_limited"], 1)
        tokens = [first["token"]] + [e["token"] for e in events]
        trig = self.triggers_by_token()
        self.assertEqual({t: trig.get(t) for t in tokens},
                         {t: 1 for t in tokens})
        self.assertEqual(self.awards_by_token(), {t: 1 for t in tokens})
        self.assertEqual(self.balance(), 100 * len(tokens))
        # Every Emarsys call after the 429 came at or after its reset.
        for q in self.s.emarsys.requests(path_prefix="/api/v3/"):
            if q["seq"] > limited_em[0]["seq"]:
                self.assertGreaterEqual(q["time"], limited_em[0]["reset_at"])


class CircuitTest(DispatcherCase):
    def test_circuit_opens_skips_sync_then_probe_closes_it(self):
        self.stack(workers=2, circuit_open_s=3, retry_schedule=LONG_SCHEDULE)
        self.brand("cb", yotpo=False)
        self.brand("other", yotpo=False)
        self.warm_up("cb")
        self.s.emarsys.fault("status", status=503, path_prefix="/api/v3/",
                             count=-1, body={"replyCode": 1,
                                             "replyText": "unavailable"})
        wids = []
        # Consecutive 503s open the circuit (5 by default); the intake
        # still tries each of these itself.
        for _ in range(8):
            wid, r, _ = self.post(sample_event("consent_intent",
                                               brand_slug="cb"))
            self.assertEqual(r.status, 202, r)
            wids.append(wid)
            if ("cb", "emarsys", "open") in self.metrics_circuits():
                break
        self.s.wait(lambda: ("cb", "emarsys", "open")
                    in self.metrics_circuits(), timeout=5,
                    what="the cb/emarsys circuit open")
        self.assertIn({"brand": "cb", "destination": "emarsys",
                       "state": "open"}, self.health()["open_circuits"])
        # Open: the intake answers at once, without calling Emarsys.
        before = len(self.s.emarsys.requests())
        wid, r, took = self.post(sample_event("consent_intent",
                                              brand_slug="cb"))
        wids.append(wid)
        self.assertEqual(r.status, 202, r)
        self.assertLess(took, 0.5, r)
        self.assertEqual(r.json["status"], "accepted", r)
        self.assertEqual(self.response_dest(r, "emarsys")["status"],
                         "pending", r)
        # Only another brand's circuit is unaffected: it is still closed
        # (its calls fail too, but it has had no failure yet).
        self.assertNotIn(("other", "emarsys", "open"),
                         self.metrics_circuits())
        self.assertLessEqual(len(self.s.emarsys.requests()) - before, 1)
        # The fault ends: after the open period a probe succeeds, the
        # circuit closes and everything is delivered once.
        self.s.emarsys.clear_faults()
        self.wait_delivered(wids, timeout=25)
        self.s.wait(lambda: not [c for c in self.metrics_circuits()
                                 if c[0] == "cb"], timeout=10,
                    what="the cb circuit closed (metrics line gone)")
        self.assertEqual(self.health()["open_circuits"], [])
        # A new event goes through the intake again.
        wid, r, _ = self.post(sample_event("consent_intent",
                                           brand_slug="cb"))
        self.assertEqual(r.status, 200, r)
        wids.append(wid)
        tokens = [self.detail(w)["event"]["token"] for w in wids]
        trig = self.triggers_by_token()
        self.assertEqual({t: trig.get(t) for t in tokens},
                         {t: 1 for t in tokens})


class KillTest(DispatcherCase):
    def test_kill_9_dispatcher_mid_batch_completes_each_once(self):
        # budget_ms 1000: leases last 16 s.  sync_workers 0: the intake
        # only records, the dispatcher delivers everything.
        self.stack(workers=2, budget_ms=1000, sync_workers=0,
                   reconcile_after_s=1, retry_schedule=LONG_SCHEDULE)
        self.s.yotpo.config({"rate_limit_per_s": 1000})
        self.brand()
        self.warm_up_dispatched()
        self.s.emarsys.fault("delay", ms=700, method="POST",
                             path_prefix="/api/v3/event/", count=-1)
        self.s.yotpo.fault("delay", ms=700, method="POST",
                           path_prefix=ACTIONS, count=-1)
        events = [sample_event("offer_claimed") for _ in range(50)]
        res = self.post_many(events, threads=8)
        for _, r, _ in res:
            self.assertEqual(r.status, 202, r)
        wids = [w for w, _, _ in res]

        def in_flight():
            n = [q for q in self.s.emarsys.requests() + self.s.yotpo.requests()
                 if q["outcome"] == "pending"]
            return len(n) >= 5
        self.s.wait(in_flight, timeout=10, interval=0.02,
                    what="the dispatcher holding calls")
        pid = self.dispatcher_pid()
        self.assertIsNotNone(pid, "no dispatcher pid in the log")
        os.kill(pid, signal.SIGKILL)
        self.s.emarsys.clear_faults()
        self.s.yotpo.clear_faults()
        # The supervisor starts a new one.
        self.s.wait(lambda: self.dispatcher_alive_other_than(pid),
                    timeout=10, what="a new dispatcher")
        self.assertIn("dispatcher %d killed by signal 9" % pid, self.s.log())
        self.wait_delivered(wids, timeout=45)
        tokens = [e["token"] for e in events]
        trig = self.triggers_by_token()
        self.assertEqual({t: trig.get(t) for t in tokens},
                         {t: 1 for t in tokens})
        self.assertEqual(self.awards_by_token(), {t: 1 for t in tokens})
        self.assertEqual(self.balance(), 100 * len(tokens))
        for e, w in zip(events, wids):
            self.assertEqual(self.ledger(e["token"]), [("done", w)])

    def warm_up_dispatched(self):
        """One consent delivered by the dispatcher, so that the token is
        cached before the test's load; the offer's external event and
        verified_at fields are not: the load's deliveries resolve them,
        one at a time."""
        wid, r, _ = self.post(sample_event("consent_intent"))
        self.wait_delivered([wid], timeout=10)
        self.s.emarsys.clear_requests()
        self.s.yotpo.clear_requests()

    def dispatcher_alive_other_than(self, old):
        h = self.health()
        return h["dispatcher"]["alive"] and \
            old not in self.s.worker_pids() and \
            len(self.s.worker_pids()) >= 4


class BacklogTest(DispatcherCase):
    def test_backlog_drains_concurrently(self):
        self.stack(workers=2, retry_schedule=LONG_SCHEDULE, concurrency=64)
        self.s.emarsys.config({"rate_limit_per_minute": 100000})
        self.brand("bl", yotpo=False)
        self.warm_up("bl")
        self.s.emarsys.fault("status", status=503, path_prefix="/api/v3/",
                             count=-1)
        events = [sample_event("consent_intent", brand_slug="bl")
                  for _ in range(200)]
        t0 = time.monotonic()
        res = self.post_many(events, threads=8)
        for _, r, _ in res:
            self.assertEqual(r.status, 202, r)
        self.assertLess(time.monotonic() - t0, 20)
        wids = [w for w, _, _ in res]
        st = {k: v for k, v in self.statuses(wids).items()
              if k[1] == "emarsys"}
        self.assertEqual(len(st), 200)
        self.assertEqual([k for k, v in st.items() if v == "delivered"], [])
        self.assertIn(("bl", "emarsys", "open"), self.metrics_circuits())
        # The fault ends; each call now takes 250 ms.  400 calls one at a
        # time would take 100 s.  (The first matching fault wins, so the
        # 503 goes before the delay comes.)
        self.s.emarsys.clear_requests()
        self.s.emarsys.clear_faults()
        self.s.emarsys.fault("delay", ms=250, path_prefix="/api/v3/",
                             count=-1)
        t1 = time.monotonic()
        self.wait_delivered(wids, timeout=40)
        drained = time.monotonic() - t1
        reqs = [q for q in self.s.emarsys.requests(path_prefix="/api/v3/")
                if q["done_mono"] is not None]
        # Most in flight at once, from the arrival and reply times.
        marks = sorted([(q["mono"], 1) for q in reqs] +
                       [(q["done_mono"], -1) for q in reqs])
        cur = peak = 0
        for _, d in marks:
            cur += d
            peak = max(peak, cur)
        ok = [q for q in reqs if q["status"] == 200]
        self.assertGreater(peak, 4, "at most %d calls in flight" % peak)
        self.assertLess(drained, 0.25 * len(ok) / 4,
                        "%.1fs for %d calls of 250 ms" % (drained, len(ok)))
        tokens = [e["token"] for e in events]
        trig = self.triggers_by_token()
        self.assertEqual({t: trig.get(t) for t in tokens},
                         {t: 1 for t in tokens})


class IdsTest(DispatcherCase):
    def test_paced_account_resolves_missing_ids_once(self):
        """A brand's first 40 offer_claimed events reach the dispatcher
        at once, its Emarsys account paced at its live limit (600 a
        minute: a call every 110 ms) and its verified_at field and
        external event still to be created.  One delivery at a time
        resolves them (the others wait for its ids): the fields are
        listed and the field created once, not once per delivery, and
        none of them lists at every turn of the pace without ever getting
        to create (which on the old code left them all undelivered)."""
        self.stack(workers=2, sync_workers=0, retry_schedule=LONG_SCHEDULE)
        self.s.emarsys.config({"rate_limit_per_minute": 600})
        self.s.yotpo.config({"rate_limit_per_s": 1000})
        self.brand()
        events = [sample_event("offer_claimed") for _ in range(40)]
        wids = [w for w, _, _ in self.post_many(events, threads=8)]
        self.wait_delivered(wids, timeout=60)
        reqs = self.s.emarsys.requests(path_prefix="/api/v3/")
        calls = [(q["method"], q["path"].split("?")[0]) for q in reqs]
        count = {k: calls.count(k) for k in set(calls)}
        self.assertLessEqual(count.get(("GET", "/api/v3/field/translate/en"),
                                       0), 2, count)
        self.assertLessEqual(count.get(("GET", "/api/v3/event"), 0), 2,
                             count)
        # the event's two verified_at fields, and its external event
        created = sorted((q["path"], q["json"]["name"]) for q in reqs
                         if q["method"] == "POST" and
                         q["path"] in ("/api/v3/field", "/api/v3/event"))
        self.assertEqual(created, [
            ("/api/v3/event", "gocertify_offer_claimed"),
            ("/api/v3/field", "gocertify_key_worker_verified_at"),
            ("/api/v3/field", "gocertify_nhs_worker_verified_at")])
        self.assertEqual(self.early_calls(self.s.emarsys), [])
        self.assertEqual(self.s.emarsys.stats()["rate_limited"], 0)
        tokens = [e["token"] for e in events]
        self.assertEqual(self.triggers_by_token(), {t: 1 for t in tokens})
        self.assertEqual(self.awards_by_token(), {t: 1 for t in tokens})


class PacedBrandTest(DispatcherCase):
    def test_paced_brand_holds_no_transfer(self):
        """Two transfers; a brand whose Yotpo pace allows 1.8 awards a
        second has a backlog, and another brand's events come after it.
        Deliveries waiting for their pacing slot hold no transfer: the
        dispatcher takes the other brand's events and delivers them
        while most of the paced backlog still waits."""
        self.stack(workers=2, sync_workers=0, concurrency=2,
                   retry_schedule=LONG_SCHEDULE)
        self.s.emarsys.config({"rate_limit_per_minute": 100000})
        # gcrelay's own pacing is the limit here (both brands are one
        # merchant of the simulator)
        self.s.yotpo.config({"rate_limit_per_s": 1000})
        self.brand("paced", max_rps=2)
        self.brand("other")
        paced = [sample_event("offer_claimed", brand_slug="paced")
                 for _ in range(12)]
        other = [sample_event("offer_claimed", brand_slug="other")
                 for _ in range(12)]
        pw = [w for w, _, _ in self.post_many(paced, threads=4)]
        ow = [w for w, _, _ in self.post_many(other, threads=4)]
        self.wait_delivered(ow, timeout=30)
        waiting = sorted(e for (e, d), st in self.statuses(pw).items()
                         if d == "yotpo" and st != "delivered")
        # 12 awards at 1.8/s take 6 s; one event at a time, the other
        # brand would have waited for nearly all of them.
        self.assertGreaterEqual(len(waiting), 5, waiting)
        self.wait_delivered(pw, timeout=60)
        tokens = [e["token"] for e in paced + other]
        self.assertEqual(self.awards_by_token(), {t: 1 for t in tokens})
        self.assertEqual(self.triggers_by_token(), {t: 1 for t in tokens})


class LedgerStatesTest(DispatcherCase):
    def test_replies_that_come_together_are_recorded_together(self):
        """A dispatcher held while intake records 8 awards claims them
        in one go, and their replies come in close together: their
        ledger states are stored (together where they come in one
        step), and every award's key ends "done" for its event, with no
        state that could not be recorded."""
        self.stack(workers=2, sync_workers=0)
        self.s.yotpo.config({"rate_limit_per_s": 1000})
        slugs = ["b%d" % i for i in range(8)]
        for slug in slugs:
            self.brand(slug)
        self.s.yotpo.fault("delay", ms=300, method="POST",
                           path_prefix=ACTIONS, count=-1)
        events = [sample_event("offer_claimed", brand_slug=s)
                  for s in slugs]
        # Held while intake records them all: it then claims them in
        # one go, and their awards are answered together.
        pid = self.dispatcher_pid()
        self.assertIsNotNone(pid, "no dispatcher pid in the log")
        os.kill(pid, signal.SIGSTOP)
        try:
            wids = [w for w, _, _ in self.post_many(events, threads=8)]
        finally:
            os.kill(pid, signal.SIGCONT)
        self.wait_delivered(wids, timeout=30)
        for e, w in zip(events, wids):
            self.assertEqual(self.ledger(e["token"]), [("done", w)])
        self.assertNotIn("cannot record", self.s.log())


class RoomTest(DispatcherCase):
    def test_claims_again_as_soon_as_a_run_makes_room(self):
        """Two transfers and a retrier interval of 10 s: a backlog that
        intake handed over is claimed each time a finished run makes
        room, not once per interval (which would take about a minute
        for these 12 events)."""
        self.stack(workers=2, sync_workers=0, concurrency=2,
                   retrier_interval_ms=10000)
        self.s.emarsys.config({"rate_limit_per_minute": 100000})
        self.brand("acme", yotpo=False)
        events = [sample_event("consent_intent") for _ in range(12)]
        t0 = time.monotonic()
        wids = [w for w, _, _ in self.post_many(events, threads=4)]
        self.wait_delivered(wids, timeout=90)
        took = time.monotonic() - t0
        self.assertLess(took, 8.0, "12 events took %.1f s" % took)


if __name__ == "__main__":
    unittest.main()
