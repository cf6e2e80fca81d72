"""Yotpo Loyalty destination (issue 5): exactly-once point awards.

Everything runs through nginx -> gcrelay -> the Yotpo simulator; every
test ends by asserting the simulator's point balance for the shopper.
"""

import os
import secrets
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))

from stack import Stack, sample_event  # noqa: E402

EMAIL = "jane.doe@example.com"          # sample_event's email, normalised
GUID = "demo_guid"
KEY = "demo_api_key"
ACTIONS = "/api/v2/actions"
CUSTOMERS = "/api/v2/customers"
TITLE = "20% OFF for Key Workers"       # sample_event's campaign_title


def token():
    return "TOK" + secrets.token_hex(6).upper()


def event(**over):
    """An offer_claimed for acme with a fresh token."""
    over.setdefault("token", token())
    return sample_event("offer_claimed", **over)


class YotpoCase(unittest.TestCase):
    """Helpers shared by the test classes; self.s is the stack."""

    s = None

    # ---- the simulator ----------------------------------------------------

    def merchant(self, guid=GUID):
        return self.s.yotpo.state()["merchants"][guid]

    def balance(self, email=EMAIL, guid=GUID):
        cust = self.merchant(guid)["customers"].get(email)
        return 0 if cust is None else cust["points_balance"]

    def awards(self, tok=None, guid=GUID):
        out = self.merchant(guid)["awards"]
        if tok is not None:
            out = [a for a in out
                   if a["history_title"].endswith("(ref %s)" % tok)]
        return out

    def posts(self):
        return self.s.yotpo.requests(path_prefix=ACTIONS, method="POST")

    def gets(self):
        return self.s.yotpo.requests(path_prefix=CUSTOMERS, method="GET")

    def fault(self, kind, **kw):
        kw.setdefault("method", "POST")
        kw.setdefault("path_prefix", ACTIONS)
        self.s.yotpo.fault(kind, **kw)

    def assert_sim_clean(self):
        st = self.s.yotpo.stats()
        self.assertEqual(st["internal_errors"], 0, st)
        self.assertEqual(st["credentials_in_query"], 0, st)
        self.assertEqual(st["credentials_in_body"], 0, st)

    # ---- gcrelay ----------------------------------------------------------

    def brand(self, yotpo):
        """Brand acme with only this Yotpo section."""
        self.s.put_brand("acme", {"name": "Acme UK", "yotpo": yotpo})

    def post(self, ev, webhook_id=None):
        webhook_id = webhook_id or "msg_" + secrets.token_hex(8)
        r = self.s.post_event(ev, webhook_id=webhook_id)
        self.assertIn(r.status, (200, 202), r)
        return webhook_id, r

    def detail(self, event_id):
        r = self.s.admin("GET", "/admin/v1/events/" + event_id)
        self.assertEqual(r.status, 200, r)
        return r.json

    def yotpo_delivery(self, event_id):
        d = [x for x in self.detail(event_id)["deliveries"]
             if x["destination"] == "yotpo"]
        self.assertEqual(len(d), 1)
        return d[0]

    def yotpo_attempts(self, event_id):
        return [a for a in self.detail(event_id)["attempts"]
                if a["destination"] == "yotpo"]

    def wait_status(self, event_id, status, timeout=15):
        def done():
            d = self.yotpo_delivery(event_id)
            return d if d["status"] == status else None
        try:
            return self.s.wait(done, timeout=timeout, interval=0.1,
                               what="yotpo delivery %s" % status)
        except AssertionError:
            raise AssertionError("delivery %s never became %s: %r\n%s" % (
                event_id, status, self.detail(event_id),
                self.s.log()[-4000:]))

    def wait_status_any(self, event_id, wanted, timeout=20):
        def done():
            d = self.yotpo_delivery(event_id)
            return d if d["status"] in wanted else None
        try:
            return self.s.wait(done, timeout=timeout, interval=0.1,
                               what="yotpo delivery in %r" % (wanted,))
        except AssertionError:
            raise AssertionError("delivery %s stuck: %r" % (
                event_id, self.detail(event_id)))

    def ledger(self, tok):
        return self.s.query("SELECT state, event_id FROM yotpo_ledger "
                            "WHERE brand = 'acme' AND token = ?", tok)

    def response_yotpo(self, r):
        d = [x for x in r.json["deliveries"] if x["destination"] == "yotpo"]
        self.assertEqual(len(d), 1, r)
        return d[0]


class YotpoAwardTest(YotpoCase):
    """One stack with the default timings; the simulator is reset and the
    brand restored before every test."""

    @classmethod
    def setUpClass(cls):
        cls.s = Stack(workers=2)

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def setUp(self):
        self.s.yotpo.reset()
        self.s.demo_brand(emarsys=False)

    # ---- 1. the request ---------------------------------------------------

    def test_award_request_is_exact(self):
        ev = event()
        wid, r = self.post(ev)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["status"], "delivered")
        self.assertEqual(self.response_yotpo(r)["status"], "delivered")
        posts = self.posts()
        self.assertEqual(len(posts), 1, posts)
        p = posts[0]
        self.assertEqual(p["path"], ACTIONS)
        self.assertEqual(p["query_string"], "")
        self.assertEqual(p["headers"]["x-guid"], GUID)
        self.assertEqual(p["headers"]["x-api-key"], KEY)
        self.assertEqual(p["headers"]["content-type"], "application/json")
        self.assertEqual(p["json"], {
            "type": "CustomAction",
            "customer_email": EMAIL,
            "action_name": "gocertify-students",
            "created_at": "2026-11-21T10:15:00Z",
            "history_title": "%s (ref %s)" % (TITLE, ev["token"]),
        })
        self.assertEqual(p["status"], 200)
        self.assertEqual(self.s.yotpo.stats()["requests"], 1)
        self.assertEqual(self.ledger(ev["token"]), [("done", wid)])
        self.assert_sim_clean()
        self.assertEqual(self.balance(), 100)

    def test_long_non_ascii_title_is_cut_on_a_character(self):
        # 79 ASCII bytes then a 2-byte character: a byte cut at 80 would
        # leave half a UTF-8 sequence, which no JSON encoder accepts.
        title = "x" * 79 + "\u00e9t\u00e9 pour les \u00e9tudiants"
        ev = event(campaign_title=title)
        wid, r = self.post(ev)
        self.assertEqual(r.status, 200, r)
        posts = self.posts()
        self.assertEqual(len(posts), 1)
        self.assertEqual(posts[0]["json"]["history_title"],
                         "x" * 79 + " (ref %s)" % ev["token"])
        self.assertEqual(self.balance(), 100)

    # ---- 2. brand action mapping ------------------------------------------

    def test_brand_action_mapping(self):
        self.brand({"guid": GUID, "api_key": KEY,
                    "actions": {"students": "gocertify-uni"}})
        self.s.yotpo.config({"merchants": {GUID: {"rules": {
            "gocertify-uni": 40, "gocertify-seniors": 7}}}})
        self.post(event(campaign_slug="students"))
        self.post(event(campaign_slug="seniors"))
        names = [p["json"]["action_name"] for p in self.posts()]
        self.assertEqual(names, ["gocertify-uni", "gocertify-seniors"])
        self.assertEqual(self.merchant()["ignored_actions"], [])
        self.assertEqual(self.balance(), 47)

    # ---- 3. skips ---------------------------------------------------------

    def test_skips_send_nothing(self):
        cases = [
            (sample_event("consent_intent"),
             "nothing to award on consent_intent"),
            (event(email=None),
             "event has no email; Yotpo identifies customers by email"),
            (event(campaign_slug=None),
             "event has no campaign_slug, so no Custom Action to trigger"),
        ]
        for ev, why in cases:
            with self.subTest(why=why):
                wid, r = self.post(ev)
                self.assertEqual(r.status, 200, r)
                d = self.response_yotpo(r)
                self.assertEqual(d["status"], "skipped", r)
                self.assertEqual(d["reason"], why)
                self.assertEqual(self.yotpo_delivery(wid)["reason"], why)
                self.assertEqual(self.yotpo_attempts(wid), [])
        self.assertEqual(self.s.yotpo.stats()["requests"], 0)
        self.assertEqual(self.balance(), 0)

    # ---- 4. exactly once ----------------------------------------------------

    def test_same_webhook_id_twice_awards_once(self):
        ev = event()
        wid, r1 = self.post(ev)
        _, r2 = self.post(ev, webhook_id=wid)
        self.assertEqual(r1.status, 200, r1)
        self.assertEqual(r2.status, 200, r2)
        self.assertIs(r2.json.get("duplicate"), True, r2)
        self.assertEqual(self.response_yotpo(r2)["status"], "delivered")
        self.assertEqual(len(self.posts()), 1)
        self.assertEqual(self.balance(), 100)

    def test_same_token_new_webhook_id_is_skipped(self):
        ev = event()
        w1, r1 = self.post(ev)
        w2, r2 = self.post(ev)
        self.assertEqual(r2.status, 200, r2)
        d = self.response_yotpo(r2)
        self.assertEqual(d["status"], "skipped", r2)
        self.assertIn("already awarded", d["reason"])
        self.assertIn(w1, d["reason"])
        self.assertEqual(self.yotpo_delivery(w1)["status"], "delivered")
        self.assertEqual(len(self.posts()), 1)
        self.assertEqual(self.ledger(ev["token"]), [("done", w1)])
        self.assertEqual(self.balance(), 100)

    def test_concurrent_deliveries_of_one_token_award_once(self):
        ev = event()
        n = 12
        results = [None] * n
        ids = ["msg_conc_%s_%d" % (ev["token"], i) for i in range(n)]

        def send(i):
            try:
                results[i] = self.s.post_event(ev, webhook_id=ids[i])
            except Exception as e:  # reported below
                results[i] = e

        threads = [threading.Thread(target=send, args=(i,))
                   for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for r in results:
            self.assertNotIsInstance(r, Exception, r)
            self.assertIn(r.status, (200, 202), r)
        statuses = {}
        for wid in ids:
            d = self.wait_status_any(wid, ("delivered", "skipped"))
            statuses.setdefault(d["status"], []).append(wid)
            self.assertNotEqual(d["status"], "failed", d)
        self.assertEqual(len(statuses.get("delivered", [])), 1, statuses)
        self.assertEqual(len(statuses.get("skipped", [])), n - 1, statuses)
        self.assertEqual(self.ledger(ev["token"]),
                         [("done", statuses["delivered"][0])])
        self.assertEqual(len(self.posts()), 1, self.posts())
        self.assertEqual(len(self.awards(ev["token"])), 1)
        self.assertEqual(self.balance(), 100)

    # ---- 6. 429 storm -----------------------------------------------------

    def test_429_storm_awards_each_token_once(self):
        self.fault("status", status=429, count=6,
                   headers={"ratelimit-reset": "1"},
                   body={"error": "Too Many Requests"})
        evs = [event(email="shopper%d@example.com" % i) for i in range(4)]
        results = [None] * len(evs)

        def send(i):
            results[i] = self.s.post_event(evs[i])

        threads = [threading.Thread(target=send, args=(i,))
                   for i in range(len(evs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        ids = []
        for r in results:
            self.assertIsNotNone(r)
            self.assertIn(r.status, (200, 202), r)
            ids.append(r.json["id"])
        for wid in ids:
            self.wait_status(wid, "delivered", timeout=30)
        self.assertEqual(self.s.yotpo.faults(), [])
        st = [p["status"] for p in self.posts()]
        self.assertEqual(st.count(429), 6, st)
        self.assertEqual(st.count(200), 4, st)
        for i, ev in enumerate(evs):
            self.assertEqual(len(self.awards(ev["token"])), 1)
            self.assertEqual(self.ledger(ev["token"])[0][0], "done")
            self.assertEqual(self.balance("shopper%d@example.com" % i), 100)
        self.assertEqual(len(self.awards()), 4)

    # ---- 7. throttle ------------------------------------------------------

    def test_throttle_keeps_a_burst_under_the_limit(self):
        n = 15
        evs = [event(email="burst%d@example.com" % i) for i in range(n)]
        results = [None] * n

        def send(i):
            results[i] = self.s.post_event(evs[i])

        threads = [threading.Thread(target=send, args=(i,))
                   for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for r in results:
            self.assertIsNotNone(r)
            self.assertEqual(r.status, 200, r)
        posts = self.posts()
        self.assertEqual(len(posts), n)
        self.assertEqual(self.s.yotpo.stats()["rate_limited"], 0)
        times = sorted(p["mono"] for p in posts)
        for i, t0 in enumerate(times):
            within = [t for t in times[i:] if t < t0 + 1.0]
            self.assertLessEqual(
                len(within), 5, "POSTs within 1 s of %.3f: %r" % (
                    t0, [round(t - t0, 3) for t in within]))
        for i in range(n):
            self.assertEqual(self.balance("burst%d@example.com" % i), 100)

    # ---- 8. retry classes ---------------------------------------------------

    def test_423_is_retried_and_awarded_once(self):
        self.fault("status", status=423, body={"error": "record busy"})
        ev = event()
        wid, r = self.post(ev)
        d = self.wait_status(wid, "delivered")
        self.assertNotIn("warning", d)
        st = [(p["status"], p["applied"]) for p in self.posts()]
        self.assertEqual(st, [(423, False), (200, True)])
        self.assertEqual([a["http_status"] for a in self.yotpo_attempts(wid)],
                         [423, 200])
        self.assertEqual(self.balance(), 100)

    # 500 (not applied) is in YotpoUnknownOutcomeTest: it is reconciled
    # before it is sent again.

    def check_permanent(self, ev, status, text, fix):
        """A permanent rejection: failed at once with the status and the
        excerpt, nothing awarded, key released; after fix() an operator's
        redelivery awards exactly once."""
        wid, r = self.post(ev)
        self.assertEqual(r.status, 202, r)
        d = self.response_yotpo(r)
        self.assertEqual(d["status"], "failed", r)
        self.assertIn("HTTP %d" % status, d["reason"])
        self.assertIn(text, d["reason"])
        d = self.yotpo_delivery(wid)
        self.assertEqual((d["status"], d["runs"]), ("failed", 1), d)
        self.assertIn("HTTP %d" % status, d["reason"])
        self.assertIn(text, d["reason"])
        att = self.yotpo_attempts(wid)
        self.assertEqual(len(att), 1, att)
        self.assertEqual(att[0]["step"], "award")
        self.assertEqual(att[0]["http_status"], status)
        self.assertIn(text, att[0]["excerpt"])
        self.assertEqual(len(self.posts()), 1)
        self.assertEqual(self.ledger(ev["token"]), [])
        self.assertEqual(self.awards(), [])
        self.assertEqual(self.balance(), 0)
        fix()
        r = self.s.admin("POST", "/admin/v1/events/%s/redeliver" % wid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["requeued"], 1, r)
        # The dispatcher delivers it within moments.
        d = self.wait_status(wid, "delivered")
        self.assertEqual(self.ledger(ev["token"]), [("done", wid)])
        self.assertEqual(len(self.awards(ev["token"])), 1)
        self.assertEqual(self.balance(), 100)

    def test_permanent_400_403_422_fail_at_once(self):
        for status in (400, 403, 422):
            with self.subTest(status=status):
                self.s.yotpo.reset()
                text = "sim refuses with %d" % status
                self.fault("status", status=status, body={"error": text})
                self.check_permanent(event(), status, text, lambda: None)

    def test_permanent_401_bad_api_key_then_redeliver(self):
        self.brand({"guid": GUID, "api_key": "wrong_api_key"})

        def fix():
            self.s.demo_brand(emarsys=False)

        self.check_permanent(event(), 401, "unauthorized", fix)
        self.assertEqual(self.s.yotpo.stats()["unauthorized"], 1)

    def test_permanent_404_unknown_action_then_redeliver(self):
        self.s.yotpo.config({"merchants": {GUID: {"unknown_action": "404"}}})

        def fix():
            self.s.yotpo.config({"merchants": {GUID: {"rules": {
                "gocertify-alumni": 100}}}})

        self.check_permanent(event(campaign_slug="alumni"), 404,
                             "no active campaign matches action_name", fix)
        self.assertEqual(self.s.yotpo.stats()["unknown_actions"], 1)

    # ---- 9. secrets ---------------------------------------------------------

    def test_secrets_never_leak(self):
        guid = "guid-" + secrets.token_hex(12)
        key = "key-" + secrets.token_hex(16)
        self.s.yotpo.config({"merchants": {guid: {
            "api_key": key, "rules": {"gocertify-students": 100}}}})
        self.brand({"guid": guid, "api_key": key})
        # A success, a permanent failure and a reconciliation (GET).
        ok, _ = self.post(event())
        self.fault("status", status=401, body={"error": "unauthorized"})
        bad, r = self.post(event())
        self.assertEqual(self.response_yotpo(r)["status"], "failed")
        self.fault("status", status=500)
        recon, _ = self.post(event())
        self.wait_status(recon, "delivered")
        self.assertEqual(len(self.gets()), 3)  # reconcile_reads
        for p in self.posts() + self.gets():
            self.assertEqual(p["headers"]["x-api-key"], key)
            self.assertEqual(p["query_string"].find(key), -1)
        self.assert_sim_clean()

        r = self.s.admin("GET", "/admin/v1/brands/acme")
        self.assertEqual(r.status, 200, r)
        self.assertNotIn(key.encode(), r.raw)
        self.assertNotIn(guid.encode(), r.raw)
        self.assertNotEqual(r.json["yotpo"]["api_key"], key)
        self.assertTrue(r.json["yotpo"]["api_key"].endswith(key[-4:]), r)
        for wid in (ok, bad, recon):
            r = self.s.admin("GET", "/admin/v1/events/" + wid)
            self.assertNotIn(key.encode(), r.raw)
        log = self.s.log()
        self.assertIn('"destination":"yotpo"', log)
        self.assertNotIn(key, log)
        self.assertNotIn(guid, log)
        stored = self.s.store_contents()
        self.assertIn("gcrelay.db" if self.s.pg is None else "pg_dump",
                      stored)
        for f, data in stored.items():
            self.assertNotIn(key.encode(), data, f)
            self.assertNotIn(guid.encode(), data, f)
        self.assertEqual(self.balance(guid=guid), 200)


class YotpoUnknownOutcomeTest(YotpoCase):
    """An award whose outcome gcrelay did not see: reconciled through the
    customer's history, never blindly sent again.

    One worker whose connection to Yotpo is already open (a warm-up award
    in setUp), as in production where connections are kept alive."""

    @classmethod
    def setUpClass(cls):
        cls.s = Stack(workers=1, http_timeout_ms=1000, reconcile_after_s=1)
        cls.s.demo_brand(emarsys=False)

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def setUp(self):
        self.s.yotpo.reset()
        _, r = self.post(event(email="warm.up@example.com"))
        self.assertEqual(r.status, 200, r)
        self.s.yotpo.reset()

    def check_reconciled(self, ev, wid):
        """Delivered after the retrier found the reference, one award."""
        d = self.wait_status(wid, "delivered")
        self.assertIn("history", d.get("warning", ""), d)
        gets = self.gets()
        self.assertEqual(len(gets), 1, gets)
        g = gets[0]
        self.assertEqual(g["query"], {"customer_email": EMAIL,
                                      "with_history": "true"})
        self.assertEqual(g["headers"]["x-guid"], GUID)
        self.assertEqual(g["headers"]["x-api-key"], KEY)
        self.assertEqual(g["status"], 200)
        self.assertEqual(self.ledger(ev["token"]), [("done", wid)])
        self.assertEqual(len(self.posts()), 1, self.posts())
        self.assertEqual(len(self.awards()), 1)
        steps = [(a["step"], a.get("http_status"))
                 for a in self.yotpo_attempts(wid)]
        self.assertEqual(steps[-1], ("reconcile", 200), steps)
        self.assert_sim_clean()
        self.assertEqual(self.balance(), 100)

    def check_unknown(self, ev, wid, r):
        """Right after the first run: retrying, ledger unknown."""
        self.assertEqual(r.status, 202, r)
        d = self.response_yotpo(r)
        self.assertEqual(d["status"], "retrying", r)
        self.assertIn("unknown", d["reason"])
        self.assertEqual(self.ledger(ev["token"]), [("unknown", wid)])

    def test_timeout_after_apply_is_reconciled(self):
        # Applied at once, answered 2.5 s later: after http.timeout_ms.
        self.fault("delay_after_apply", ms=2500)
        ev = event()
        wid, r = self.post(ev)
        self.check_unknown(ev, wid, r)
        att = self.yotpo_attempts(wid)
        self.assertEqual(len(att), 1, att)
        self.assertEqual((att[0]["step"], att[0]["outcome"]),
                         ("award", "maybe_sent"))
        self.assertNotIn("http_status", att[0])
        self.assertLess(att[0]["latency_ms"], 2000, att)
        # Yotpo did award; gcrelay only saw a timeout.
        self.assertEqual(self.balance(), 100)
        self.check_reconciled(ev, wid)

    def test_drop_after_apply_is_reconciled(self):
        # Applied, then the kept-alive connection closes without a reply.
        # Sending the POST again on a new connection would award twice.
        self.fault("drop_after_apply")
        ev = event()
        wid, r = self.post(ev)
        self.assertEqual(len(self.posts()), 1, self.posts())
        self.check_unknown(ev, wid, r)
        self.check_reconciled(ev, wid)

    def test_500_after_apply_is_reconciled(self):
        self.fault("status_after_apply", status=502,
                   body={"error": "bad gateway"})
        ev = event()
        wid, r = self.post(ev)
        self.check_unknown(ev, wid, r)
        self.assertEqual(self.balance(), 100)
        self.check_reconciled(ev, wid)

    def test_500_before_apply_is_sent_again_after_the_check(self):
        self.fault("status", status=500, body={"error": "boom"})
        ev = event()
        wid, r = self.post(ev)
        self.check_unknown(ev, wid, r)
        self.assertEqual(self.balance(), 0)
        d = self.wait_status(wid, "delivered")
        self.assertNotIn("warning", d)
        recs = self.s.yotpo.requests()
        seq = [(x["method"], x["path"], x["status"]) for x in recs]
        # Absent only after yotpo.reconcile_reads (3) reads, the first
        # after reconcile_after_s (1 s), the last at the end of the
        # window (3 s by default): one empty read licenses nothing.
        self.assertEqual(seq, [("POST", ACTIONS, 500),
                               ("GET", CUSTOMERS, 404),
                               ("GET", CUSTOMERS, 404),
                               ("GET", CUSTOMERS, 404),
                               ("POST", ACTIONS, 200)])
        # Measured from when gcrelay sent the award, a few ms before the
        # simulator saw it arrive.
        self.assertGreaterEqual(recs[1]["mono"] - recs[0]["mono"], 0.95)
        self.assertGreaterEqual(recs[3]["mono"] - recs[0]["mono"], 2.95)
        self.assertEqual(recs[4]["json"], recs[0]["json"])
        self.assertEqual(self.ledger(ev["token"]), [("done", wid)])
        self.assertEqual(len(self.awards()), 1)
        self.assertEqual(self.balance(), 100)

    def test_new_webhook_id_while_unknown_does_not_award_again(self):
        self.fault("status_after_apply", status=500)
        ev = event()
        w1, r1 = self.post(ev)
        self.check_unknown(ev, w1, r1)
        # The same verification again, under a new webhook id, before the
        # retrier has reconciled the first one.
        w2, r2 = self.post(ev)
        self.assertIn(r2.status, (200, 202), r2)
        # Whichever reconciles first: the award is the first event's.
        self.wait_status(w1, "delivered")
        d2 = self.wait_status(w2, "skipped")
        self.assertIn("already awarded", d2["reason"])
        self.assertIn(w1, d2["reason"])
        self.assertEqual(len(self.posts()), 1, self.posts())
        self.assertEqual(self.ledger(ev["token"])[0][0], "done")
        self.assertEqual(len(self.awards()), 1)
        self.assertEqual(self.balance(), 100)

    def test_other_email_same_token_reconciles_the_first_customer(self):
        # The uncertain award was for a@; a new webhook id for the same
        # verification names b@.  The check must look at a@'s history
        # (where the award is), not b@'s (empty), or it would award twice.
        self.fault("status_after_apply", status=500)
        ev = event(email="first@example.com")
        w1, r1 = self.post(ev)
        self.check_unknown(ev, w1, r1)
        ev2 = dict(ev, email="second@example.com")
        w2, r2 = self.post(ev2)
        self.assertIn(r2.status, (200, 202), r2)
        for wid in (w1, w2):
            self.wait_status_any(wid, ("delivered", "skipped"))
        self.assertEqual({g["query"]["customer_email"] for g in self.gets()},
                         {"first@example.com"})
        self.assertEqual(len(self.posts()), 1, self.posts())
        self.assertEqual(self.balance("first@example.com"), 100)

    def test_resend_for_another_email_is_reconciled_for_that_email(self):
        # a@'s call failed without applying; b@'s event (same token) finds
        # a@'s history empty and sends for b@, which applies but answers
        # 500.  The next check must look at b@ (where the award is), or a
        # third call would award twice.
        self.fault("status", status=500)
        self.fault("status_after_apply", status=500)
        ev = event(email="a@example.com")
        w1, r1 = self.post(ev)
        self.check_unknown(ev, w1, r1)
        ev2 = dict(ev, email="b@example.com")
        w2, r2 = self.post(ev2)
        # b@'s call is the one that counts; a@'s delivery is skipped.
        self.wait_status(w2, "delivered", timeout=20)
        self.wait_status(w1, "skipped", timeout=20)
        posts = self.posts()
        self.assertEqual([p["json"]["customer_email"] for p in posts],
                         ["a@example.com", "b@example.com"], posts)
        self.assertEqual(len(self.awards()), 1)
        self.assertEqual(self.balance("b@example.com"), 100)
        self.assertEqual(self.balance("a@example.com"), 0)

    def test_reconcile_looks_up_an_email_that_needs_escaping(self):
        email = "o'brien+gold&co=1@example.com"
        self.fault("status_after_apply", status=500)
        ev = event(email=email.upper())
        wid, r = self.post(ev)
        self.check_unknown(ev, wid, r)
        d = self.wait_status(wid, "delivered")
        self.assertIn("history", d.get("warning", ""), d)
        gets = self.gets()
        self.assertEqual(len(gets), 1, gets)
        self.assertEqual(gets[0]["query"]["customer_email"], email)
        self.assertEqual(gets[0]["status"], 200)
        self.assertEqual(len(self.posts()), 1)
        self.assertEqual(self.balance(email), 100)

    def test_refused_history_check_keeps_the_award_unknown(self):
        # Awarded, but gcrelay saw a 500; then the key is revoked, so the
        # check gets 401.  The delivery fails for an operator, but the key
        # stays "unknown": after the fix, a redelivery checks again
        # instead of sending a second award.
        self.fault("status_after_apply", status=500)
        ev = event()
        wid, r = self.post(ev)
        self.check_unknown(ev, wid, r)
        self.brand({"guid": GUID, "api_key": "revoked_api_key"})
        try:
            d = self.wait_status(wid, "failed")
            self.assertIn("history check", d["reason"])
            self.assertEqual([(g["status"], g["headers"]["x-api-key"])
                              for g in self.gets()],
                             [(401, "revoked_api_key")])
            self.assertEqual(self.ledger(ev["token"]), [("unknown", wid)])
        finally:
            self.s.demo_brand(emarsys=False)
        r = self.s.admin("POST", "/admin/v1/events/%s/redeliver" % wid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["requeued"], 1, r)
        d = self.wait_status(wid, "delivered")
        self.assertIn("history", d.get("warning", ""), d)
        self.assertEqual([g["status"] for g in self.gets()], [401, 200])
        self.assertEqual(len(self.posts()), 1, self.posts())
        self.assertEqual(self.ledger(ev["token"]), [("done", wid)])
        self.assertEqual(len(self.awards()), 1)
        self.assertEqual(self.balance(), 100)


class YotpoSlowHistoryTest(YotpoCase):
    """Yotpo's writes become readable only after a delay; and a call cut
    by the delivery budget (not by http.timeout_ms) is an unknown outcome
    too."""

    @classmethod
    def setUpClass(cls):
        cls.s = Stack(workers=2, http_timeout_ms=5000, reconcile_after_s=3,
                      budget_ms=2500)
        cls.s.demo_brand(emarsys=False)

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def setUp(self):
        self.s.yotpo.reset()

    def test_reconcile_waits_until_the_history_is_visible(self):
        # Readable 2 s after the write.  The retry schedule alone would
        # run the delivery again 1 s after the failure: a check then would
        # see 404, conclude "absent" and award twice.
        self.s.yotpo.config({"visibility_delay_s": 2})
        self.fault("status_after_apply", status=503)
        ev = event()
        wid, r = self.post(ev)
        self.assertEqual(r.status, 202, r)
        self.assertEqual(self.ledger(ev["token"]), [("unknown", wid)])
        d = self.wait_status(wid, "delivered", timeout=20)
        self.assertIn("history", d.get("warning", ""), d)
        gets = self.gets()
        self.assertEqual([g["status"] for g in gets], [200], gets)
        post = self.posts()[0]
        self.assertGreaterEqual(gets[0]["mono"] - post["mono"], 2.0)
        self.assertEqual(len(self.posts()), 1)
        self.assertEqual(len(self.awards()), 1)
        self.assertEqual(self.ledger(ev["token"]), [("done", wid)])
        self.assertEqual(self.balance(), 100)

    def test_write_shown_later_than_one_read_is_awarded_once(self):
        # Applied, then 503; readable only 5 s later.  The first read
        # (3 s after the call) misses it; the ones up to the window
        # (yotpo.reconcile_window_s, 9 s) find it: no second award.
        self.s.yotpo.config({"visibility_delay_s": 5})
        self.fault("status_after_apply", status=503)
        ev = event()
        wid, r = self.post(ev)
        self.assertEqual(r.status, 202, r)
        d = self.wait_status(wid, "delivered", timeout=30)
        self.assertIn("history", d.get("warning", ""), d)
        gets = self.gets()
        self.assertEqual([g["status"] for g in gets][-1], 200, gets)
        self.assertIn(404, [g["status"] for g in gets], gets)
        self.assertEqual(len(self.posts()), 1)
        self.assertEqual(len(self.awards()), 1)
        self.assertEqual(self.ledger(ev["token"]), [("done", wid)])
        self.assertEqual(self.balance(), 100)

    def test_call_cut_by_the_budget_is_reconciled(self):
        # Answered after 4 s: past the 2.5 s budget, within http.timeout_ms.
        self.fault("delay_after_apply", ms=4000)
        ev = event()
        wid, r = self.post(ev)
        self.assertEqual(r.status, 202, r)
        self.assertEqual(self.response_yotpo(r)["status"], "retrying", r)
        att = self.yotpo_attempts(wid)
        self.assertEqual((att[0]["outcome"], len(att)), ("maybe_sent", 1))
        self.assertLess(att[0]["latency_ms"], 3500, att)
        self.assertEqual(self.ledger(ev["token"]), [("unknown", wid)])
        self.assertEqual(self.balance(), 100)
        d = self.wait_status(wid, "delivered", timeout=20)
        self.assertIn("history", d.get("warning", ""), d)
        self.assertEqual(len(self.posts()), 1)
        self.assertEqual([g["status"] for g in self.gets()], [200])
        self.assertEqual(len(self.awards()), 1)
        self.assertEqual(self.balance(), 100)


if __name__ == "__main__":
    unittest.main()
