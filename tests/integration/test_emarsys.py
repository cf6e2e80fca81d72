"""The Emarsys destination (issue 4), through nginx -> gcrelay -> the
Emarsys simulator: the exact requests of a delivery and their order, the
contact and triggers that result, id and token caching, connection reuse,
brand overrides, and each fault of reference/emarsys-api.md with the
outcome an operator sees (HTTP answer, delivery row, recorded attempts)
and what reached the simulator.

Every test uses a brand of its own, so nothing gcrelay cached (token,
field and event ids) carries over from another test; the simulators are
reset before each test, and a test ends only when none of its deliveries
is left for the retrier.
"""

import base64
import json
import math
import secrets
import threading
import time
import unittest

from stack import Stack, sample_event

EMAIL = "jane.doe@example.com"  # sample_event's " Jane.Doe@Example.com "
MOBILE = "+447700900123"  # sample_event's "+44 7700 900123"
SMS_ID = "12817"  # the simulator's default Mobile SMS Opt-in field
ACCOUNT = "demo_client"
BASIC = "Basic " + base64.b64encode(b"demo_client:demo_secret").decode()
KW_FIELD = "gocertify_key_worker_verified_at"
NHS_FIELD = "gocertify_nhs_worker_verified_at"
STUDENT_FIELD = "gocertify_student_verified_at"
CONSENT = "gocertify_consent_intent"
CLAIMED = "gocertify_offer_claimed"
IFRAME = "https://www.customer-website/keyworkers"


def payload(ev, slug, date):
    """The Gocertify payload of sample_event ev, in DESIGN.md's key order
    (user_country from the +44 mobile; iframe_parent_url when sent)."""
    out = {"type": ev["type"]}
    for k in ("pending_group_type", "pending_group_parent",
              "pending_group_child"):
        if k in ev:
            out[k] = ev[k]
    out.update({"token": ev["token"], "subid": ev["subid"],
                "brand_slug": slug, "brand_country": "GB",
                "user_country": "GB", "campaign_id": 1234,
                "campaign_title": "20% OFF for Key Workers",
                "campaign_url": "https://secure.gocertify.me/at/acme"})
    if "iframe_parent_url" in ev:
        out["iframe_parent_url"] = ev["iframe_parent_url"]
    out["date"] = date
    return out


class EmarsysCase(unittest.TestCase):
    """One stack per class; a fresh brand and reset simulators per test."""

    stack_options = {}
    serial = 0

    @classmethod
    def setUpClass(cls):
        cls.s = Stack(**cls.stack_options)

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def setUp(self):
        self.s.emarsys.reset()
        self.s.yotpo.reset()
        EmarsysCase.serial += 1
        self.slug = "em-%d" % EmarsysCase.serial

    def tearDown(self):
        # Nothing may be left for the retrier to send during the next test.
        self.s.wait(lambda: not self.s.query(
            "SELECT 1 FROM deliveries WHERE status IN "
            "('pending', 'retrying')"), timeout=15,
            what="no delivery pending or retrying")
        self.assertEqual(self.s.emarsys.stats()["internal_errors"], 0)

    # ---- helpers ----------------------------------------------------------

    def brand(self, yotpo=False, **emarsys):
        em = {"client_id": ACCOUNT, "client_secret": "demo_secret"}
        em.update(emarsys)
        doc = {"name": "Brand " + self.slug, "emarsys": em}
        if yotpo:
            doc["yotpo"] = {"guid": "demo_guid", "api_key": "demo_api_key"}
        self.s.put_brand(self.slug, doc)

    def account(self, **cfg):
        """Patch the simulator's demo account."""
        self.s.emarsys.config({"accounts": {ACCOUNT: cfg}})

    def event(self, kind="consent_intent", **over):
        return sample_event(kind, brand_slug=self.slug, **over)

    def post(self, ev, status):
        wid = "msg_" + secrets.token_hex(8)
        r = self.s.post_event(ev, webhook_id=wid)
        self.assertEqual(r.status, status, r)
        return wid, r.json

    def detail(self, wid):
        r = self.s.admin("GET", "/admin/v1/events/" + wid)
        self.assertEqual(r.status, 200, r)
        return r.json

    def delivery(self, wid, dest="emarsys"):
        return [d for d in self.detail(wid)["deliveries"]
                if d["destination"] == dest][0]

    def attempts(self, wid, dest="emarsys"):
        """(step, outcome, http_status, reply_code) of each attempt."""
        return [(a["step"], a["outcome"], a.get("http_status"),
                 a.get("reply_code"))
                for a in self.detail(wid)["attempts"]
                if a["destination"] == dest]

    def wait_status(self, wid, status, dest="emarsys", timeout=10):
        def reached():
            d = self.delivery(wid, dest)
            return d if d["status"] == status else None
        return self.s.wait(reached, timeout=timeout,
                           what="%s delivery %s" % (dest, status))

    def calls(self, reqs=None):
        """(method, path) of the Emarsys requests, in arrival order."""
        if reqs is None:
            reqs = self.s.emarsys.requests()
        return [(q["method"], q["path"]) for q in reqs]

    def state(self):
        return self.s.emarsys.state()["accounts"][ACCOUNT]

    def field_id(self, name):
        ids = [f["id"] for f in self.state()["fields"] if f["name"] == name]
        self.assertEqual(len(ids), 1, "field %s: %r" % (name, ids))
        return ids[0]

    def event_id(self, name):
        ids = [e["id"] for e in self.state()["events"] if e["name"] == name]
        self.assertEqual(len(ids), 1, "event %s: %r" % (name, ids))
        return ids[0]

    def trigger_path(self, name):
        return "/api/v3/event/%d/trigger" % self.event_id(name)

    def warm_up(self, kind="consent_intent", **over):
        """One delivered event so the token and ids are cached; clears the
        simulator's records (not its state)."""
        self.post(self.event(kind, **over), 200)
        self.s.emarsys.clear_requests()

    def assert_no_empty_strings(self):
        for q in self.s.emarsys.requests():
            self.assertNotIn('""', q["body"], q)
        st = self.s.emarsys.stats()
        self.assertEqual(st["cleared_values"], 0)
        for c in self.state()["contacts"]:
            self.assertEqual(c["cleared"], [], c)


class DeliveryTest(EmarsysCase):
    """The requests of a delivery, caching, overrides and most faults."""

    # ---- 1, 2: what a delivery sends --------------------------------------

    def test_consent_intent_exact_requests_and_contact(self):
        self.brand()
        ev = self.event(iframe_parent_url=IFRAME,
                        occurred_at="2026-11-21T10:15:00Z")
        wid, body = self.post(ev, 200)
        self.assertEqual(body["status"], "delivered")
        self.assertEqual(body["deliveries"], [
            {"destination": "emarsys", "status": "delivered", "runs": 1},
            {"destination": "yotpo", "status": "skipped",
             "reason": "yotpo is not configured for this brand", "runs": 0}])

        reqs = self.s.emarsys.requests()
        trigger = self.trigger_path(CONSENT)
        self.assertEqual(
            [(q["method"], q["path"], q["query_string"]) for q in reqs],
            [("POST", "/oauth2/token", ""),
             ("GET", "/api/v3/field/translate/en", ""),
             ("GET", "/api/v3/event", ""),
             ("POST", "/api/v3/event", ""),
             ("PUT", "/api/v3/contact/", "create_if_not_exists=1"),
             ("POST", trigger, "")])
        tok = reqs[0]
        self.assertEqual(tok["headers"]["authorization"], BASIC)
        self.assertEqual(tok["headers"]["content-type"],
                         "application/x-www-form-urlencoded")
        self.assertEqual(tok["body"], "grant_type=client_credentials")
        bearer = reqs[1]["headers"]["authorization"]
        self.assertRegex(bearer, r"^Bearer \S{16,}$")
        for q in reqs[1:]:
            self.assertEqual(q["headers"]["authorization"], bearer, q)
            self.assertEqual(q["headers"]["content-type"],
                             "application/json", q)
            self.assertEqual(q["headers"]["accept"], "application/json", q)
            self.assertEqual(q["status"], 200, q)
        self.assertEqual(reqs[1]["body"], "")
        self.assertEqual(reqs[2]["body"], "")
        self.assertEqual(reqs[3]["json"], {"name": CONSENT})
        self.assertEqual(reqs[4]["json"], {
            "key_id": "3",
            "contacts": [{"3": EMAIL, "31": 1, "37": MOBILE, SMS_ID: 1}]})
        sent = reqs[5]["json"]
        self.assertEqual(sorted(sent),
                         ["data", "external_id", "key_id", "trigger_id"])
        self.assertEqual(sent["key_id"], "3")
        self.assertEqual(sent["external_id"], EMAIL)
        self.assertRegex(sent["trigger_id"], r"^\S{8,}$")
        want = payload(ev, self.slug, "2026-11-21T10:15:00Z")
        self.assertEqual(list(sent["data"].items()), list(want.items()))

        # What the account now holds: fields set, nothing cleared.
        st = self.state()
        self.assertEqual(len(st["contacts"]), 1)
        contact = st["contacts"][0]
        self.assertEqual(contact["fields"],
                         {"3": EMAIL, "31": 1, "37": MOBILE, SMS_ID: 1})
        self.assertEqual(contact["cleared"], [])
        self.assertEqual(contact["writes"], 1)
        self.assertEqual(len(st["triggers"]), 1)
        t = st["triggers"][0]
        self.assertEqual((t["event_name"], t["external_id"], t["contact_id"],
                          t["trigger_id"], t["data"]),
                         (CONSENT, EMAIL, contact["id"], sent["trigger_id"],
                          want))
        stats = self.s.emarsys.stats()
        self.assertEqual((stats["cleared_values"], stats["triggers"],
                          stats["contacts_created"], stats["events_created"],
                          stats["fields_created"], stats["tokens_issued"]),
                         (0, 1, 1, 1, 0, {ACCOUNT: 1}))
        # Every request is an attempt of the delivery, in order.
        self.assertEqual(self.attempts(wid), [
            ("token", "response", 200, None),
            ("list_fields", "response", 200, "0"),
            ("list_events", "response", 200, "0"),
            ("create_event", "response", 200, "0"),
            ("upsert_contact", "response", 200, "0"),
            ("trigger_event", "response", 200, "0")])
        # The access token never reaches the attempt records.
        token = bearer.split()[1]
        self.assertNotIn(token, json.dumps(self.detail(wid)))
        self.assertNotIn(token, self.s.log())

    def test_offer_claimed_creates_verified_at_fields_and_event(self):
        self.brand()
        ev = self.event("offer_claimed",
                        occurred_at="2026-11-21T23:30:00-05:00")
        wid, body = self.post(ev, 200)
        self.assertEqual(self.delivery(wid)["status"], "delivered")

        reqs = self.s.emarsys.requests()
        kw, nhs = self.field_id(KW_FIELD), self.field_id(NHS_FIELD)
        self.assertEqual(self.calls(reqs), [
            ("POST", "/oauth2/token"),
            ("GET", "/api/v3/field/translate/en"),
            ("POST", "/api/v3/field"),
            ("POST", "/api/v3/field"),
            ("GET", "/api/v3/event"),
            ("POST", "/api/v3/event"),
            ("PUT", "/api/v3/contact/"),
            ("POST", self.trigger_path(CLAIMED))])
        self.assertEqual(reqs[2]["json"],
                         {"name": KW_FIELD, "application_type": "date"})
        self.assertEqual(reqs[3]["json"],
                         {"name": NHS_FIELD, "application_type": "date"})
        self.assertEqual(reqs[5]["json"], {"name": CLAIMED})
        # 23:30 at UTC-5 is the 22nd in UTC.  Claiming an offer is no
        # consent: no opt-in values.
        self.assertEqual(reqs[6]["json"], {
            "key_id": "3",
            "contacts": [{"3": EMAIL, "37": MOBILE, str(kw): "2026-11-22",
                          str(nhs): "2026-11-22"}]})
        sent = reqs[7]["json"]
        self.assertEqual((sent["key_id"], sent["external_id"]), ("3", EMAIL))
        want = payload(ev, self.slug, "2026-11-22T04:30:00Z")
        self.assertEqual(list(sent["data"].items()), list(want.items()))

        st = self.state()
        types = {f["name"]: f["application_type"] for f in st["fields"]}
        self.assertEqual((types[KW_FIELD], types[NHS_FIELD]),
                         ("date", "date"))
        self.assertEqual(st["contacts"][0]["fields"][str(kw)], "2026-11-22")
        self.assertEqual(st["contacts"][0]["fields"][str(nhs)], "2026-11-22")
        self.assertEqual([t["event_name"] for t in st["triggers"]], [CLAIMED])
        self.assertEqual(self.s.emarsys.stats()["fields_created"], 2)
        self.assert_no_empty_strings()

    def test_offer_claimed_group_type_only_uses_existing_field(self):
        # The account already has the field (other case): found by name,
        # not created.
        self.account(fields=[{"name": "GOCERTIFY_Student_Verified_At",
                              "application_type": "date", "id": 15001}])
        self.brand()
        ev = self.event("offer_claimed", pending_group_type="Student",
                        pending_group_parent=None, pending_group_child=None,
                        occurred_at="2026-01-31T00:30:00+01:00")
        wid, _ = self.post(ev, 200)
        reqs = self.s.emarsys.requests()
        self.assertEqual(self.calls(reqs), [
            ("POST", "/oauth2/token"),
            ("GET", "/api/v3/field/translate/en"),
            ("GET", "/api/v3/event"),
            ("POST", "/api/v3/event"),
            ("PUT", "/api/v3/contact/"),
            ("POST", self.trigger_path(CLAIMED))])
        self.assertEqual(reqs[4]["json"]["contacts"],
                         [{"3": EMAIL, "37": MOBILE, "15001": "2026-01-30"}])
        self.assertEqual(list(reqs[5]["json"]["data"].items()),
                         list(payload(ev, self.slug,
                                      "2026-01-30T23:30:00Z").items()))
        self.assertEqual(self.s.emarsys.stats()["fields_created"], 0)

    # ---- 3: caching and connection reuse ----------------------------------

    def test_ids_and_token_cached_connections_reused(self):
        self.brand()
        trigger_ids = set()
        for i in range(10):
            self.post(self.event(), 200)
            reqs = self.s.emarsys.requests()
            self.s.emarsys.clear_requests()
            if i > 0:  # no token, list or create call any more
                self.assertEqual(self.calls(reqs), [
                    ("PUT", "/api/v3/contact/"),
                    ("POST", self.trigger_path(CONSENT))], "event %d" % i)
            else:
                self.assertEqual(len(reqs), 6, reqs)
            trigger_ids.add(reqs[-1]["json"]["trigger_id"])
        self.assertEqual(len(trigger_ids), 10)  # one per event
        # A second kind needs its own event id (and the field ids), not a
        # new token; a second event of that kind needs nothing.
        self.post(self.event("offer_claimed"), 200)
        self.assertEqual(self.calls(), [
            ("GET", "/api/v3/field/translate/en"),
            ("POST", "/api/v3/field"),
            ("POST", "/api/v3/field"),
            ("GET", "/api/v3/event"),
            ("POST", "/api/v3/event"),
            ("PUT", "/api/v3/contact/"),
            ("POST", self.trigger_path(CLAIMED))])
        self.s.emarsys.clear_requests()
        self.post(self.event("offer_claimed"), 200)
        self.assertEqual(self.calls(), [
            ("PUT", "/api/v3/contact/"),
            ("POST", self.trigger_path(CLAIMED))])
        stats = self.s.emarsys.stats()
        self.assertEqual(stats["tokens_issued"], {ACCOUNT: 1})
        self.assertEqual(stats["triggers"], 12)
        self.assertEqual(stats["requests"], 6 + 9 * 2 + 7 + 2)
        # Kept-alive connections: at most one per worker.
        self.assertLessEqual(stats["connections"], self.s.workers)
        self.assertEqual(self.state()["contacts"][0]["writes"], 12)

    def test_token_refreshed_before_expiry(self):
        # A token with less than a minute left is not used: each event
        # gets a fresh one before any API call, so no call sees a 401.
        self.s.emarsys.config({"token_ttl": 30})
        self.brand()
        for _ in range(3):
            self.post(self.event(), 200)
        stats = self.s.emarsys.stats()
        self.assertEqual(stats["tokens_issued"], {ACCOUNT: 3})
        self.assertEqual(stats["unauthorized"], 0)

    def test_token_without_expires_in_lasts_an_hour(self):
        self.s.emarsys.config({"omit_expires_in": True})
        self.brand()
        for _ in range(3):
            self.post(self.event(), 200)
        stats = self.s.emarsys.stats()
        self.assertEqual(stats["tokens_issued"], {ACCOUNT: 1})
        self.assertEqual(stats["unauthorized"], 0)

    def test_ids_as_numbers_and_errors_as_list(self):
        # Reference 3.1 quirks: numeric ids and an empty errors [].
        self.account(ids_as_numbers=True, errors_as_list=True)
        self.brand()
        wid, _ = self.post(self.event("offer_claimed",
                                      pending_group_parent=None,
                                      pending_group_child=None,
                                      pending_group_type="Student"), 200)
        reqs = self.s.emarsys.requests()
        sid = self.field_id(STUDENT_FIELD)
        self.assertEqual(reqs[-2]["json"]["contacts"][0][str(sid)],
                         "2026-11-21")
        self.assertEqual(reqs[-1]["path"], self.trigger_path(CLAIMED))
        self.assertEqual(self.delivery(wid)["status"], "delivered")

    # ---- 4: brand overrides -----------------------------------------------

    def test_key_field_mobile(self):
        self.brand(key_field="mobile")
        self.post(self.event(), 200)
        reqs = self.s.emarsys.requests()
        self.assertEqual(reqs[-2]["json"], {
            "key_id": "37",
            "contacts": [{"37": MOBILE, "3": EMAIL, "31": 1, SMS_ID: 1}]})
        sent = reqs[-1]["json"]
        self.assertEqual((sent["key_id"], sent["external_id"]),
                         ("37", MOBILE))
        self.assertEqual(self.state()["triggers"][0]["key_id"], 37)

    def test_key_field_mobile_without_mobile_is_skipped(self):
        self.brand(key_field="mobile")
        wid, body = self.post(self.event(mobile=None), 200)
        d = self.delivery(wid)
        self.assertEqual(d["status"], "skipped")
        self.assertIn("no mobile", d["reason"])
        self.assertEqual(self.s.emarsys.requests(), [])

    def test_sms_field_from_brand_config_needs_no_field_list(self):
        # The account's SMS field has a name the lookup would not find;
        # the brand's fields.sms_opt_in names it.
        self.account(sms_field_id=20001, sms_field_name="SMS consent")
        self.brand(fields={"sms_opt_in": 20001})
        self.post(self.event(), 200)
        reqs = self.s.emarsys.requests()
        self.assertEqual(self.calls(reqs), [
            ("POST", "/oauth2/token"),
            ("GET", "/api/v3/event"),
            ("POST", "/api/v3/event"),
            ("PUT", "/api/v3/contact/"),
            ("POST", self.trigger_path(CONSENT))])
        self.assertEqual(reqs[3]["json"]["contacts"],
                         [{"3": EMAIL, "31": 1, "37": MOBILE, "20001": 1}])

    def test_sms_field_found_case_insensitively(self):
        self.account(sms_field_id=20002, sms_field_name="MOBILE SMS OPT-IN")
        self.brand()
        wid, _ = self.post(self.event(), 200)
        reqs = self.s.emarsys.requests()
        self.assertEqual(reqs[-2]["json"]["contacts"],
                         [{"3": EMAIL, "31": 1, "37": MOBILE, "20002": 1}])
        self.assertNotIn("warning", self.delivery(wid))

    def test_account_without_sms_field_delivers_with_warning(self):
        self.account(sms_field_id=None)
        self.brand()
        for i in range(2):
            wid, body = self.post(self.event(), 200)
            d = self.delivery(wid)
            self.assertEqual(d["status"], "delivered")
            self.assertIn("no Mobile SMS Opt-in field", d["warning"])
            reqs = self.s.emarsys.requests()
            self.s.emarsys.clear_requests()
            self.assertEqual(reqs[-2]["json"]["contacts"],
                             [{"3": EMAIL, "31": 1, "37": MOBILE}])
            # The second event knows the account has none: no list.
            lists = [q for q in reqs if q["path"].startswith("/api/v3/field")]
            self.assertEqual(len(lists), 1 - i)
        self.assert_no_empty_strings()

    def test_missing_sms_field_is_looked_for_again_later(self):
        # The account had no SMS module; an hour later it may have one.
        self.account(sms_field_id=None)
        self.brand()
        self.post(self.event(), 200)
        with self.s.db() as c:
            c.execute("UPDATE emarsys_ids SET remote_id = 'none:1' WHERE "
                      "kind = 'field' AND name = 'mobile sms opt-in'")
        self.account(sms_field_id=12817)
        self.s.emarsys.clear_requests()
        wid, body = self.post(self.event(), 200)
        d = self.delivery(wid)
        self.assertEqual(d["status"], "delivered")
        self.assertNotIn("warning", d)
        reqs = self.s.emarsys.requests()
        self.assertTrue(any(q["path"] == "/api/v3/field/translate/en"
                            for q in reqs))
        upsert = [q for q in reqs if q["path"].startswith("/api/v3/contact")]
        self.assertEqual(upsert[0]["json"]["contacts"][0]["12817"], 1)

    # ---- 5: faults ----------------------------------------------------------

    def test_expired_token_refreshed_once_and_retried(self):
        self.brand()
        self.warm_up()
        self.s.emarsys.fault("expire_tokens", path_prefix="/api/v3/contact")
        wid, body = self.post(self.event(), 200)
        self.assertEqual(self.delivery(wid)["status"], "delivered")
        reqs = self.s.emarsys.requests()
        self.assertEqual(
            [(m, p, q["status"]) for (m, p), q in zip(self.calls(reqs), reqs)],
            [("PUT", "/api/v3/contact/", 401),
             ("POST", "/oauth2/token", 200),
             ("PUT", "/api/v3/contact/", 200),
             ("POST", self.trigger_path(CONSENT), 200)])
        self.assertNotEqual(reqs[0]["headers"]["authorization"],
                            reqs[2]["headers"]["authorization"])
        self.assertEqual(self.attempts(wid), [
            ("upsert_contact", "response", 401, None),
            ("token", "response", 200, None),
            ("upsert_contact", "response", 200, "0"),
            ("trigger_event", "response", 200, "0")])
        self.assertEqual(self.s.emarsys.stats()["tokens_issued"],
                         {ACCOUNT: 2})
        # The refreshed token is cached for the next event.
        self.s.emarsys.clear_requests()
        self.post(self.event(), 200)
        self.assertEqual(len(self.s.emarsys.requests()), 2)

    def test_second_401_after_refresh_fails(self):
        self.brand()
        self.warm_up()
        self.s.emarsys.fault("expire_tokens", path_prefix="/api/v3/contact",
                             count=2)
        wid, body = self.post(self.event(), 202)
        d = self.delivery(wid)
        self.assertEqual(d["status"], "failed")
        self.assertIn("401", d["reason"])
        self.assertEqual([a[:3] for a in self.attempts(wid)], [
            ("upsert_contact", "response", 401),
            ("token", "response", 200),
            ("upsert_contact", "response", 401)])
        self.assertEqual(len(self.s.emarsys.requests()), 3)
        # Neither refused token stays cached: the next event fetches a
        # new one instead of sending a token known to be refused.
        self.assertEqual(self.s.query(
            "SELECT 1 FROM emarsys_tokens WHERE brand = ?", self.slug), [])
        self.s.emarsys.clear_requests()
        wid, body = self.post(self.event(), 200)
        self.assertEqual(self.calls()[0], ("POST", "/oauth2/token"))
        self.assertEqual(self.attempts(wid)[0][:3],
                         ("token", "response", 200))

    def test_bad_client_secret_fails_permanently(self):
        self.brand(client_secret="not-the-secret")
        wid, body = self.post(self.event(), 202)
        self.assertEqual(body["status"], "accepted")
        d = self.delivery(wid)
        self.assertEqual(d["status"], "failed")
        self.assertIn("refused the client credentials", d["reason"])
        self.assertNotIn("next_attempt_at", d)
        self.assertEqual(self.attempts(wid),
                         [("token", "response", 401, None)])
        self.assertEqual(self.calls(), [("POST", "/oauth2/token")])
        self.assertEqual(self.s.emarsys.stats()["tokens_rejected"], 1)
        self.assertEqual(self.detail(wid)["status"], "failed")
        self.assertNotIn("not-the-secret", self.s.log())

    def test_rate_limited_waits_for_reset_and_succeeds(self):
        self.brand()
        self.warm_up()
        self.s.emarsys.fault("rate_limit", reset_in=1,
                             path_prefix="/api/v3/contact")
        t0 = time.monotonic()
        wid, body = self.post(self.event(), 200)
        self.assertLess(time.monotonic() - t0, self.s.budget_ms / 1000)
        reqs = self.s.emarsys.requests()
        self.assertEqual([(q["method"], q["status"]) for q in reqs],
                         [("PUT", 429), ("PUT", 200), ("POST", 200)])
        # Not before the announced X-RateLimit-Reset (whole seconds).
        self.assertGreaterEqual(reqs[1]["time"],
                                math.ceil(reqs[0]["time"] + 1))
        self.assertEqual(self.attempts(wid), [
            ("upsert_contact", "response", 429, "7003"),
            ("upsert_contact", "response", 200, "0"),
            ("trigger_event", "response", 200, "0")])
        self.assertEqual(self.delivery(wid)["status"], "delivered")

    def _trigger_500_then_retrier(self, kind, dedup):
        self.brand()
        self.warm_up()
        self.s.emarsys.fault(kind, status=500, method="POST",
                             path_prefix="/api/v3/event/")
        wid, body = self.post(self.event(), 202)
        self.assertEqual(body["status"], "accepted")
        d = self.delivery(wid)
        self.assertEqual(d["status"], "retrying")
        self.assertIn("500", d["reason"])
        self.assertIn("next_attempt_at", d)
        self.assertEqual(self.attempts(wid), [
            ("upsert_contact", "response", 200, "0"),
            ("trigger_event", "response", 500, "1")])
        d = self.wait_status(wid, "delivered")
        self.assertEqual(d["runs"], 2)
        self.assertNotIn("reason", d)
        # The contact was upserted by the first run: only the trigger
        # is left (the delivery's stored progress).
        self.assertEqual(self.attempts(wid)[2:], [
            ("trigger_event", "response", 200, "0")])
        self.assertEqual(len(self.s.emarsys.requests(
            path_prefix="/api/v3/contact")), 1)
        triggers = self.s.emarsys.requests(path_prefix="/api/v3/event/")
        self.assertEqual(len(triggers), 2)
        self.assertEqual(triggers[0]["json"]["trigger_id"],
                         triggers[1]["json"]["trigger_id"])
        st = self.state()
        self.assertEqual(len(st["triggers"]), 2)  # warm-up + this one
        self.assertEqual(st["triggers"][1]["trigger_id"],
                         triggers[0]["json"]["trigger_id"])
        self.assertEqual(self.s.emarsys.stats()["deduplicated_triggers"],
                         dedup)
        self.assertEqual(self.detail(wid)["status"], "delivered")

    def test_trigger_500_retried_by_retrier(self):
        # Nothing applied on the 500: the redelivery is the only trigger.
        self._trigger_500_then_retrier("status", 0)

    def test_trigger_500_after_apply_deduplicated_on_retry(self):
        # Applied, then 500: the retry's identical trigger_id is dropped
        # by Emarsys, so the contact gets the event once.
        self._trigger_500_then_retrier("status_after_apply", 1)

    def _not_an_envelope(self, status, body, headers, prefix, method):
        self.brand()
        self.warm_up()
        self.s.emarsys.fault("status", status=status, body=body,
                             headers=headers, method=method,
                             path_prefix=prefix)
        wid, _ = self.post(self.event(), 202)
        d = self.delivery(wid)
        self.assertEqual(d["status"], "retrying")
        self.assertIn("HTTP %d" % status, d["reason"])
        self.wait_status(wid, "delivered")
        self.assertEqual(len(self.state()["triggers"]), 2)  # warm-up + 1
        return wid

    def test_html_502_is_retried(self):
        wid = self._not_an_envelope(
            502, "<html><body>502 Bad Gateway</body></html>",
            {"Content-Type": "text/html"}, "/api/v3/contact", "PUT")
        self.assertEqual(self.attempts(wid)[0],
                         ("upsert_contact", "response", 502, None))

    def test_200_without_envelope_is_retried(self):
        # Valid JSON, but not {"replyCode",...}: not a success, and not a
        # reason to give up on the delivery.
        wid = self._not_an_envelope(200, "[]", {}, "/api/v3/event/", "POST")
        self.assertEqual(self.attempts(wid)[:2], [
            ("upsert_contact", "response", 200, "0"),
            ("trigger_event", "response", 200, None)])

    def test_contact_error_in_http_200_fails(self):
        self.brand()
        self.s.emarsys.fault("contact_error", code=2010)
        wid, body = self.post(self.event(), 202)
        d = self.delivery(wid)
        self.assertEqual(d["status"], "failed")
        self.assertIn("2010", d["reason"])
        self.assertIn("More than one contact", d["reason"])
        self.assertEqual(self.attempts(wid)[-1],
                         ("upsert_contact", "response", 200, "2010"))
        self.assertEqual(self.calls()[-1], ("PUT", "/api/v3/contact/"))
        self.assertEqual(self.state()["contacts"], [])
        self.assertEqual(self.state()["triggers"], [])

    def test_event_not_connected_5005_delivered_with_warning(self):
        self.account(connected_events=[])
        self.brand()
        wid, body = self.post(self.event(), 200)
        d = self.delivery(wid)
        self.assertEqual(d["status"], "delivered")
        self.assertIn("5005", d["warning"])
        self.assertNotIn("reason", d)
        self.assertEqual(self.attempts(wid)[-1],
                         ("trigger_event", "response", 400, "5005"))
        self.assertEqual([t["connected"] for t in self.state()["triggers"]],
                         [False])

    def test_interactions_not_connected_delivered_with_warning(self):
        self.account(interactions=True, connected_events=[])
        self.brand()
        wid, body = self.post(self.event(), 200)
        d = self.delivery(wid)
        self.assertEqual(d["status"], "delivered")
        self.assertIn("not connected", d["warning"])
        self.assertEqual(self.attempts(wid)[-1],
                         ("trigger_event", "response", 200, "0"))

    def _drop_trigger(self, count):
        """The trigger's connection closes without a reply, count times:
        the outcome is unknown, so the delivery is retried later (by the
        retrier, with the same trigger_id).  Returns the event id."""
        self.brand()
        self.warm_up()
        self.s.emarsys.fault("drop", method="POST",
                             path_prefix="/api/v3/event/", count=count)
        wid, body = self.post(self.event(), 202)
        d = self.delivery(wid)
        self.assertEqual(d["status"], "retrying")
        self.assertIn("trigger_event", d["reason"])
        self.wait_status(wid, "delivered")
        triggers = self.s.emarsys.requests(path_prefix="/api/v3/event/")
        self.assertEqual([q["outcome"] for q in triggers],
                         ["dropped"] * count + ["replied"])
        self.assertEqual(len({q["json"]["trigger_id"] for q in triggers}), 1)
        self.assertEqual(len(self.state()["triggers"]), 2)  # warm-up + 1
        self.assertEqual(self.s.emarsys.stats()["deduplicated_triggers"], 0)
        return wid

    def test_dropped_connection_retried_by_retrier(self):
        # The trigger goes out on the connection kept alive from the
        # upsert.  libcurl resends a request by itself when a reused
        # connection dies before any reply, even a POST whose body was
        # sent; gcrelay must not let it (the resend is invisible to
        # operators, and to Yotpo it is a second award).
        wid = self._drop_trigger(1)
        # Every request that left is an attempt an operator can see.
        self.assertEqual(
            [a for a in self.attempts(wid) if a[0] == "trigger_event"],
            [("trigger_event", "maybe_sent", None, None),
             ("trigger_event", "response", 200, "0")])

    def test_dropped_twice_retried_by_retrier(self):
        self._drop_trigger(2)

    def test_field_create_race_lists_again(self):
        self.brand()
        self.s.emarsys.fault("create_race", method="POST",
                             path_prefix="/api/v3/field")
        wid, body = self.post(self.event("offer_claimed"), 200)
        reqs = self.s.emarsys.requests()
        self.assertEqual(
            [(m, p, q["status"]) for (m, p), q in zip(self.calls(reqs), reqs)],
            [("POST", "/oauth2/token", 200),
             ("GET", "/api/v3/field/translate/en", 200),
             ("POST", "/api/v3/field", 400),
             ("GET", "/api/v3/field/translate/en", 200),
             ("POST", "/api/v3/field", 200),
             ("GET", "/api/v3/event", 200),
             ("POST", "/api/v3/event", 200),
             ("PUT", "/api/v3/contact/", 200),
             ("POST", self.trigger_path(CLAIMED), 200)])
        self.assertEqual(reqs[2]["json"]["name"], KW_FIELD)
        self.assertEqual(reqs[4]["json"]["name"], NHS_FIELD)
        kw, nhs = self.field_id(KW_FIELD), self.field_id(NHS_FIELD)
        self.assertEqual(set(reqs[7]["json"]["contacts"][0]),
                         {"3", "37", str(kw), str(nhs)})
        self.assertIn(("create_field", "response", 400, "9002"),
                      self.attempts(wid))
        self.assertEqual(self.delivery(wid)["status"], "delivered")

    def _event_create_race(self, code):
        self.brand()
        self.s.emarsys.fault("create_race", method="POST",
                             path_prefix="/api/v3/event", code=code)
        wid, body = self.post(self.event(), 200)
        reqs = self.s.emarsys.requests()
        self.assertEqual(
            [(m, p, q["status"]) for (m, p), q in zip(self.calls(reqs), reqs)],
            [("POST", "/oauth2/token", 200),
             ("GET", "/api/v3/field/translate/en", 200),
             ("GET", "/api/v3/event", 200),
             ("POST", "/api/v3/event", 400),
             ("GET", "/api/v3/event", 200),
             ("PUT", "/api/v3/contact/", 200),
             ("POST", self.trigger_path(CONSENT), 200)])
        self.assertIn(("create_event", "response", 400, str(code)),
                      self.attempts(wid))
        self.assertEqual(self.delivery(wid)["status"], "delivered")
        self.assertEqual(len(self.state()["events"]), 1)

    def test_event_create_race_5003(self):
        self._event_create_race(5003)

    def test_event_create_race_7001(self):
        self._event_create_race(7001)

    def test_stale_event_id_resolved_again(self):
        self.brand()
        self.warm_up()
        old = self.event_id(CONSENT)
        self.s.emarsys.fault("forget_ids", names=[CONSENT], method="POST",
                             path_prefix="/api/v3/event/")
        wid, body = self.post(self.event(), 200)
        new = self.event_id(CONSENT)
        self.assertNotEqual(old, new)
        reqs = self.s.emarsys.requests()
        self.assertEqual(
            [(m, p, q["status"]) for (m, p), q in zip(self.calls(reqs), reqs)],
            [("PUT", "/api/v3/contact/", 200),
             ("POST", "/api/v3/event/%d/trigger" % old, 400),
             ("GET", "/api/v3/event", 200),
             ("POST", "/api/v3/event", 200),
             ("POST", "/api/v3/event/%d/trigger" % new, 200)])
        self.assertIn(("trigger_event", "response", 400, "5001"),
                      self.attempts(wid))
        # The new id is cached.
        self.s.emarsys.clear_requests()
        self.post(self.event(), 200)
        self.assertEqual(self.calls()[-1],
                         ("POST", "/api/v3/event/%d/trigger" % new))

    def test_stale_field_id_resolved_again(self):
        self.brand()
        group = {"pending_group_type": "Student",
                 "pending_group_parent": None, "pending_group_child": None}
        self.warm_up("offer_claimed", **group)
        old = self.field_id(STUDENT_FIELD)
        self.s.emarsys.fault("forget_ids", names=[STUDENT_FIELD],
                             path_prefix="/api/v3/contact")
        wid, body = self.post(self.event("offer_claimed", **group), 200)
        new = self.field_id(STUDENT_FIELD)
        self.assertNotEqual(old, new)
        reqs = self.s.emarsys.requests()
        self.assertEqual(self.calls(reqs), [
            ("PUT", "/api/v3/contact/"),
            ("GET", "/api/v3/field/translate/en"),
            ("POST", "/api/v3/field"),
            ("PUT", "/api/v3/contact/"),
            ("POST", self.trigger_path(CLAIMED))])
        self.assertIn(str(old), reqs[0]["json"]["contacts"][0])
        self.assertEqual(reqs[3]["json"]["contacts"][0][str(new)],
                         "2026-11-21")
        self.assertNotIn(str(old), reqs[3]["json"]["contacts"][0])
        self.assertIn(("upsert_contact", "response", 200, "2006"),
                      self.attempts(wid))
        self.assertEqual(self.state()["contacts"][0]["fields"][str(new)],
                         "2026-11-21")

    def _denied(self, perm, kind):
        self.account(denied_permissions=[perm])
        self.brand()
        wid, body = self.post(self.event(kind), 202)
        d = self.delivery(wid)
        self.assertEqual(d["status"], "failed")
        self.assertIn("403", d["reason"])
        self.assertIn(perm, d["reason"])
        self.assertNotIn("next_attempt_at", d)
        self.assertEqual(self.attempts(wid)[-1][2], 403)
        self.assertEqual(self.s.emarsys.stats()["forbidden"], 1)

    def test_missing_trigger_permission_fails_naming_it(self):
        self._denied("externalevent.trigger", "consent_intent")
        self.assertEqual(self.calls()[-2], ("PUT", "/api/v3/contact/"))

    def test_missing_field_create_permission_fails_naming_it(self):
        self._denied("field.create", "offer_claimed")
        self.assertEqual(self.calls()[-1], ("POST", "/api/v3/field"))
        self.assertEqual(self.state()["contacts"], [])

    # ---- 6: never an empty string -----------------------------------------

    def test_no_empty_strings_sent(self):
        self.brand()
        for kind in ("consent_intent", "offer_claimed"):
            ev = self.event(kind, mobile=None, subid="", iframe_parent_url="")
            wid, body = self.post(ev, 200)
        reqs = self.s.emarsys.requests()
        upserts = [q["json"] for q in reqs if q["method"] == "PUT"]
        self.assertEqual(upserts[0]["contacts"], [{"3": EMAIL, "31": 1}])
        self.assertNotIn("37", upserts[1]["contacts"][0])
        self.assertNotIn(SMS_ID, upserts[1]["contacts"][0])
        for q in reqs:
            if q["path"].endswith("/trigger"):
                data = q["json"]["data"]
                self.assertNotIn("subid", data)
                self.assertNotIn("iframe_parent_url", data)
                self.assertNotIn("user_country", data)  # no mobile to derive
        self.assert_no_empty_strings()

    # ---- 7: destinations fail independently --------------------------------

    def test_emarsys_failure_does_not_repeat_yotpo(self):
        self.brand(yotpo=True)
        self.s.emarsys.fault("status", status=500, method="POST",
                             path_prefix="/api/v3/event/")
        wid, body = self.post(self.event("offer_claimed"), 202)
        self.assertEqual(self.delivery(wid)["status"], "retrying")
        self.assertEqual(self.delivery(wid, "yotpo")["status"], "delivered")
        self.assertEqual(len(self.s.yotpo.requests("/api/v2/actions",
                                                   "POST")), 1)
        self.wait_status(wid, "delivered")
        self.assertEqual(self.delivery(wid, "yotpo")["runs"], 1)
        self.assertEqual(len(self.s.yotpo.requests("/api/v2/actions",
                                                   "POST")), 1)
        self.assertEqual(self.s.yotpo.stats()["awards"], 1)

    def test_yotpo_failure_does_not_repeat_emarsys(self):
        self.brand(yotpo=True)
        self.s.yotpo.fault("status", status=500, method="POST",
                           path_prefix="/api/v2/actions")
        wid, body = self.post(self.event("offer_claimed"), 202)
        self.assertEqual(self.delivery(wid)["status"], "delivered")
        self.assertEqual(self.delivery(wid, "yotpo")["status"], "retrying")
        self.wait_status(wid, "delivered", dest="yotpo")
        self.assertEqual(self.delivery(wid)["runs"], 1)
        self.assertEqual(len(self.s.emarsys.requests("/api/v3/event/")), 1)
        self.assertEqual(self.s.emarsys.stats()["triggers"], 1)


class TimeoutTest(EmarsysCase):
    """A reply slower than http.timeout_ms."""

    stack_options = {"http_timeout_ms": 1000}

    def test_slow_trigger_times_out_then_redelivered(self):
        self.brand()
        self.warm_up()
        self.s.emarsys.fault("delay", ms=1600, method="POST",
                             path_prefix="/api/v3/event/")
        t0 = time.monotonic()
        wid, body = self.post(self.event(), 202)
        self.assertLess(time.monotonic() - t0, 1.6)  # the delay
        d = self.delivery(wid)
        self.assertEqual(d["status"], "retrying")
        self.assertIn("timed out", d["reason"].lower())
        # http.timeout_ms bounds each request, not only the budget.
        self.assertEqual(self.attempts(wid)[-1],
                         ("trigger_event", "maybe_sent", None, None))
        self.wait_status(wid, "delivered")
        # The slow trigger was applied late; the retry carried the same
        # trigger_id, so the contact got the event once.
        self.s.emarsys.wait_for(
            lambda c: c.stats()["triggers"] + c.stats()[
                "deduplicated_triggers"] == 3)
        triggers = self.s.emarsys.requests(path_prefix="/api/v3/event/")
        self.assertEqual(len({q["json"]["trigger_id"] for q in triggers}), 1)
        self.assertEqual(len(self.state()["triggers"]), 2)  # warm-up + 1
        self.assertEqual(self.s.emarsys.stats()["deduplicated_triggers"], 1)


class ColdStartTest(EmarsysCase):
    """Several workers start with no token cached: one fetches it, the
    others wait for it in place (issue 9, item 8)."""

    stack_options = {"workers": 4}

    def test_one_token_fetch_per_account(self):
        self.brand()
        # A slow token endpoint: the other workers arrive mid-fetch.
        self.s.emarsys.fault("delay", ms=700, path_prefix="/oauth2/token")
        results, lock = [], threading.Lock()

        def send():
            wid = "msg_" + secrets.token_hex(8)
            r = self.s.post_event(self.event(), webhook_id=wid)
            with lock:
                results.append((wid, r.status))

        ts = [threading.Thread(target=send) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual([st for _, st in results], [200] * 4, results)
        self.assertEqual(self.calls(self.s.emarsys.requests(
            path_prefix="/oauth2/token")), [("POST", "/oauth2/token")])
        self.assertEqual(self.s.emarsys.stats()["tokens_issued"],
                         {ACCOUNT: 1})
        for wid, _ in results:
            self.assertEqual(self.delivery(wid)["status"], "delivered")
        # The lease was given back once the token was cached.
        self.assertEqual(self.s.query(
            "SELECT 1 FROM emarsys_token_leases WHERE brand = ?",
            self.slug), [])

    def post_at_once(self, n):
        """n events posted by n threads at once: their HTTP statuses."""
        out, lock = [], threading.Lock()

        def send():
            r = self.s.post_event(self.event())
            with lock:
                out.append(r.status)
        ts = [threading.Thread(target=send) for _ in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return out

    def test_refreshed_token_reaches_every_worker(self):
        """One worker meets the expired token and fetches a new one; the
        others use the new one at once, though each had read (and on
        PostgreSQL kept) the old one: they hear that it changed."""
        self.brand()
        self.assertEqual(self.post_at_once(12), [200] * 12)
        self.s.emarsys.fault("expire_tokens", path_prefix="/api/v3/contact")
        self.s.emarsys.clear_requests()
        self.post(self.event(), 200)
        self.assertEqual(self.post_at_once(12), [200] * 12)
        statuses = [q["status"] for q in self.s.emarsys.requests()]
        self.assertEqual(statuses.count(401), 1, statuses)
        self.assertEqual(self.s.emarsys.stats()["tokens_issued"],
                         {ACCOUNT: 2})


if __name__ == "__main__":
    unittest.main()
