"""Issue 3: the signed event intake, POST /v1/events, through nginx.

Valid events of both kinds, every rejection (problem+json, nothing
recorded, the worker still healthy), the signature tolerance edges, key
rotation, interoperability with the reference Standard Webhooks library,
normalisation as stored, replays (sequential and concurrent), the body
size limit and the metrics the intake keeps."""

import base64
import calendar
import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import unittest

from stack import (ROOT, Response, Stack, new_whsec, sample_event,
                   sign_webhook)

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_SIGNER = os.path.join(HERE, "sign_standardwebhooks.js")
NODE_PACKAGE = os.path.join(ROOT, "tests", "node_modules", "standardwebhooks")
MAX_BODY = 65536  # limits.max_body_bytes in the stack's config


def compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def aligned_now(lo=0.05, hi=0.6):
    """The current unix second, read while the clock is between lo and hi
    into it: gcrelay's time(NULL) (possibly a coarse clock) then reads the
    same second for a request sent at once."""
    while True:
        t = time.time()
        if lo <= t % 1 <= hi:
            return int(t)
        time.sleep(0.01)


def parse_metrics(text):
    """{'name{labels}': value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


class IntakeCase(unittest.TestCase):
    """Shared checks; subclasses set cls.s."""

    def assertProblem(self, r, status, field=None, detail=None):
        """r is an RFC 9457 problem with that status; detail (a fragment
        or a regex) must appear in its detail."""
        self.assertEqual(r.status, status, r)
        ct = r.headers.get("Content-Type", "")
        self.assertTrue(ct.startswith("application/problem+json"),
                        "Content-Type %r: %r" % (ct, r))
        self.assertIsInstance(r.json, dict, r)
        for k in ("type", "title", "detail"):
            self.assertIsInstance(r.json.get(k), str, r)
            self.assertTrue(r.json[k], r)
        self.assertEqual(r.json.get("status"), status, r)
        if field is not None:
            self.assertEqual(r.json.get("field"), field, r)
            self.assertIn(field, r.json["detail"], r)
        if detail is not None:
            self.assertRegex(r.json["detail"], detail, r)
        if "request_id" in r.json:  # nginx's own 413 has none
            self.assertEqual(r.json["request_id"],
                             r.headers.get("X-Request-Id"), r)
        return r.json

    def counts(self):
        s = self.s
        return (s.query("SELECT count(*) FROM events")[0][0],
                s.query("SELECT count(*) FROM deliveries")[0][0],
                s.query("SELECT count(*) FROM attempts")[0][0])

    def assertNothingRecorded(self, before, webhook_id=None):
        """No event, delivery or attempt was added and no simulator was
        called since setUp."""
        self.assertEqual(self.counts(), before)
        if webhook_id is not None:
            self.assertEqual(self.s.query(
                "SELECT count(*) FROM events WHERE id = ?",
                webhook_id)[0][0], 0)
        if self.s.emarsys is not None:
            self.assertEqual(self.s.emarsys.requests(), [])
            self.assertEqual(self.s.yotpo.requests(), [])

    def assertHealthy(self):
        r = self.s.request("GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["status"], "ok", r)
        self.assertTrue(r.json["dispatcher"]["alive"], r)

    def clear_sims(self):
        # Records only: the sims keep the fields and events gcrelay has
        # created and cached, so no test depends on the order they run in.
        if self.s.emarsys is not None:
            self.s.emarsys.clear_requests()
            self.s.yotpo.clear_requests()

    def awards(self, token):
        st = self.s.yotpo.state()["merchants"]["demo_guid"]
        return [a for a in st["awards"] if token in a["history_title"]]

    def triggers(self, token):
        st = self.s.emarsys.state()["accounts"]["demo_client"]
        return [t for t in st["triggers"] if t["data"].get("token") == token]


class Intake(IntakeCase):
    """One stack (2 workers) with brand "acme" wired to the simulators and
    brand "bare" with no destination at all."""

    @classmethod
    def setUpClass(cls):
        cls.s = Stack(workers=2)
        try:
            cls.s.demo_brand("acme")
            cls.s.demo_brand("bare", emarsys=False, yotpo=False)
        except BaseException:
            cls.s.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def setUp(self):
        self.clear_sims()

    # ---- valid events ------------------------------------------------------

    def test_consent_intent_delivered_yotpo_nothing_to_award(self):
        ev = sample_event("consent_intent")
        r = self.s.post_event(ev, webhook_id="msg_consent_1")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers["Content-Type"].startswith(
            "application/json"), r.headers)
        self.assertEqual(r.json["id"], "msg_consent_1")
        self.assertEqual(r.json["status"], "delivered")
        self.assertNotIn("duplicate", r.json)
        dl = {d["destination"]: d for d in r.json["deliveries"]}
        self.assertEqual(set(dl), {"emarsys", "yotpo"})
        self.assertEqual(dl["emarsys"]["status"], "delivered", r)
        self.assertEqual(dl["yotpo"]["status"], "skipped", r)
        self.assertIn("nothing to award", dl["yotpo"]["reason"])
        # Emarsys got the consent trigger, Yotpo nothing at all.
        trig = self.triggers(ev["token"])
        self.assertEqual(len(trig), 1, trig)
        self.assertEqual(trig[0]["event_name"], "gocertify_consent_intent")
        self.assertEqual(self.s.yotpo.requests(), [])
        rows = self.s.query("SELECT brand, kind, status FROM events "
                            "WHERE id = 'msg_consent_1'")
        self.assertEqual(rows, [("acme", "consent_intent", "delivered")])

    def test_offer_claimed_delivered_to_both(self):
        ev = sample_event("offer_claimed")
        r = self.s.post_event(ev, webhook_id="msg_offer_1")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["id"], "msg_offer_1")
        self.assertEqual(r.json["status"], "delivered")
        self.assertEqual(
            {d["destination"]: d["status"] for d in r.json["deliveries"]},
            {"emarsys": "delivered", "yotpo": "delivered"})
        trig = self.triggers(ev["token"])
        self.assertEqual([t["event_name"] for t in trig],
                         ["gocertify_offer_claimed"])
        acts = self.s.yotpo.requests(path_prefix="/api/v2/actions")
        self.assertEqual(len(acts), 1, acts)
        self.assertEqual(acts[0]["method"], "POST")
        self.assertEqual(acts[0]["headers"]["x-guid"], "demo_guid")
        self.assertEqual(acts[0]["headers"]["x-api-key"], "demo_api_key")
        body = acts[0]["json"]
        self.assertEqual(body["type"], "CustomAction")
        self.assertEqual(body["customer_email"], "jane.doe@example.com")
        self.assertEqual(body["action_name"], "gocertify-students")
        self.assertEqual(body["created_at"], "2026-11-21T10:15:00Z")
        self.assertIn(ev["token"], body["history_title"])
        self.assertEqual(len(self.awards(ev["token"])), 1)

    def test_brand_without_destinations_skips_both(self):
        for kind in ("consent_intent", "offer_claimed"):
            with self.subTest(kind=kind):
                r = self.s.post_event(sample_event(kind, brand_slug="bare"))
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json["status"], "delivered")
                dl = {d["destination"]: d for d in r.json["deliveries"]}
                self.assertEqual(dl["emarsys"]["status"], "skipped")
                self.assertEqual(dl["yotpo"]["status"], "skipped")
                self.assertIn("emarsys is not configured for this brand",
                              dl["emarsys"]["reason"])
                self.assertIn("yotpo is not configured for this brand",
                              dl["yotpo"]["reason"])
                rows = self.s.query(
                    "SELECT destination, status FROM deliveries WHERE "
                    "event_id = ? ORDER BY destination", r.json["id"])
                self.assertEqual(rows, [("emarsys", "skipped"),
                                        ("yotpo", "skipped")])
        self.assertEqual(self.s.emarsys.requests(), [])
        self.assertEqual(self.s.yotpo.requests(), [])

    def test_json_content_type_with_parameters_accepted(self):
        r = self.s.post_event(
            sample_event("consent_intent", brand_slug="bare"),
            headers={"Content-Type": "application/json; charset=utf-8"})
        self.assertEqual(r.status, 200, r)

    # ---- 400 ---------------------------------------------------------------

    def test_invalid_bodies_rejected_400(self):
        ev = sample_event
        cases = [
            # (name, raw body, field, detail regex)
            ("malformed JSON", b'{"event": "offer_claimed",', None,
             "malformed JSON"),
            ("empty body", b"", None, "empty"),
            ("array body", b"[1, 2]", None, "not a JSON object"),
            ("invalid UTF-8", b'{"event": "offer_\xff"}', None,
             "malformed JSON"),
            ("duplicate key",
             b'{"event": "offer_claimed", "event": "consent_intent"}',
             "event", "duplicate key"),
            ("deep nesting", b"[" * 30000 + b"]" * 30000, None, "."),
            ("event missing", compact(ev(event=None)), "event",
             "is required"),
            ("event unknown", compact(ev(event="offer_redeemed")), "event",
             "consent_intent"),
            ("brand_slug missing", compact(ev(brand_slug=None)),
             "brand_slug", "is required"),
            ("brand_slug upper-case", compact(ev(brand_slug="Acme")),
             "brand_slug", "lower-case"),
            ("email syntax", compact(ev(email="jane.doe@@example")),
             "email", "."),
            ("no email nor mobile", compact(ev(email=None, mobile=None)),
             "email", "one of email or mobile"),
            ("mobile impossible", compact(ev(mobile="+44 7700 9001")),
             "mobile", "too short"),
            ("mobile unknown code", compact(ev(mobile="+999 1234 5678")),
             "mobile", "calling code"),
            ("type", compact(ev(type="Coupon")), "type", "Code"),
            ("campaign_id string", compact(ev(campaign_id="1234")),
             "campaign_id", "integer"),
            ("campaign_id float", compact(ev(campaign_id=12.5)),
             "campaign_id", "integer"),
            ("campaign_id zero", compact(ev(campaign_id=0)),
             "campaign_id", "at least 1"),
            ("brand_country three letters", compact(ev(brand_country="GBR")),
             "brand_country", "alpha-2"),
            ("brand_country unassigned", compact(ev(brand_country="XX")),
             "brand_country", "not an assigned"),
            ("occurred_at words", compact(ev(occurred_at="yesterday")),
             "occurred_at", "RFC 3339"),
            ("occurred_at 30 Feb",
             compact(ev(occurred_at="2026-02-30T10:00:00Z")),
             "occurred_at", "day out of range"),
            ("occurred_at no zone",
             compact(ev(occurred_at="2026-11-21T10:15:00")),
             "occurred_at", "RFC 3339"),
            ("group with no ASCII", compact(ev(pending_group_child="日本")),
             "pending_group_child", "no ASCII letters or digits"),
            ("token with space", compact(ev(token="TOK 1")), "token",
             "printable"),
            ("campaign_url not http",
             compact(ev(campaign_url="javascript:alert(1)")),
             "campaign_url", "http"),
            ("email_opt_in not bool", compact(ev(email_opt_in="yes")),
             "email_opt_in", "true or false"),
        ]
        for name, body, field, detail in cases:
            with self.subTest(case=name):
                self.clear_sims()
                before = self.counts()
                wid = "msg_bad_%d" % cases.index((name, body, field, detail))
                r = self.s.post_event(None, body=body, webhook_id=wid)
                p = self.assertProblem(r, 400, field, detail)
                self.assertEqual(p.get("code"), "invalid_event", r)
                self.assertNothingRecorded(before, wid)
                self.assertHealthy()

    def test_rejection_never_quotes_contact_details(self):
        # Invalid values, and JSON syntax errors right after or inside
        # one: the detail says where, never what the address or number is.
        cases = [
            ("email", compact(sample_event(
                email="Secret.Person@@example.com"))),
            ("mobile", compact(sample_event(mobile="+44 7700 900 12345 678"))),
            (None, b'{"event":"offer_claimed","mobile":"+44 7700 900123\n"}'),
            (None, b'{"event":"offer_claimed","email":"jo@Person.io\n"}'),
            (None, b'{"event":"offer_claimed","email":"jo\x01@Person.io"}'),
            (None, b'{"event":"offer_claimed","email":"Secret.Person@'
                   b'example.com" "x"}'),
            (None, b'{"event":"offer_claimed","email":"Secret.Person@'
                   b'example.com\x01"}'),
            (None, b'{"event":"offer_claimed","mobile":+44 7700 900 12345}'),
            (None, b'{"event":"offer_claimed","mobile":447700900 12345}'),
            (None, b'{"Secret.Person@example.com":1,'
                   b'"Secret.Person@example.com":2}'),
        ]
        for field, body in cases:
            with self.subTest(body=body[25:60]):
                before = self.counts()
                r = self.s.post_event(None, body=body)
                self.assertProblem(r, 400, field)
                for secret in (b"Secret", b"Person", b"example.com",
                               b"900123", b"900 12345", b"12345",
                               b"jo@", b'"jo'):
                    self.assertNotIn(secret, r.raw)
                self.assertNothingRecorded(before)
                self.assertHealthy()

    def test_invalid_webhook_id_rejected_400(self):
        for wid in ("msg 1", "m" * 257):
            with self.subTest(webhook_id=wid[:20]):
                before = self.counts()
                r = self.s.post_event(sample_event(), webhook_id=wid)
                self.assertProblem(r, 400, detail="webhook-id")
                self.assertNothingRecorded(before, wid)
                self.assertHealthy()
        r = self.s.post_event(sample_event(brand_slug="bare"),
                              webhook_id="m" * 256)
        self.assertEqual(r.status, 200, r)

    # ---- 401 ---------------------------------------------------------------

    def test_bad_signatures_rejected_401(self):
        other = new_whsec()
        now = int(time.time())
        good = self.s.webhook_secrets[0]
        body = compact(sample_event())
        wid = "msg_sig"
        sig = sign_webhook(good, wid, now, body)
        cases = [
            # (name, post_event keyword arguments, detail regex)
            ("missing webhook-id", {"headers": {"webhook-id": None}},
             "missing webhook-id"),
            ("missing webhook-timestamp",
             {"headers": {"webhook-timestamp": None}},
             "missing webhook-timestamp"),
            ("missing webhook-signature",
             {"headers": {"webhook-signature": None}},
             "missing webhook-signature"),
            ("empty webhook-signature",
             {"headers": {"webhook-signature": ""}},
             "missing webhook-signature"),
            ("stale", {"ts": now - 3600}, "too old"),
            ("future", {"ts": now + 3600}, "in the future"),
            ("timestamp in ms", {"ts": now * 1000}, "in the future"),
            ("timestamp not an integer",
             {"headers": {"webhook-timestamp": "%d.5" % now}},
             "not an integer"),
            ("timestamp with sign",
             {"headers": {"webhook-timestamp": "+%d" % now}},
             "not an integer"),
            ("timestamp overflows",
             {"headers": {"webhook-timestamp": "9" * 40}},
             "not an integer"),
            ("signed by another secret", {"secret": other},
             "no signature matches"),
            ("signature over another id",
             {"sig": sign_webhook(good, "msg_other", now, body)},
             "no signature matches"),
            ("signature over another timestamp",
             {"sig": sign_webhook(good, wid, now - 1, body)},
             "no signature matches"),
            ("unsupported version only", {"sig": "v1a," + sig[3:]},
             "no v1 entry"),
            ("garbage signature", {"sig": "v1,not-base64!"}, "no v1 entry"),
            ("truncated signature", {"sig": sig[:-4]}, "no v1 entry"),
            ("signature without version", {"sig": sig[3:]}, "no v1 entry"),
            ("many wrong entries",
             {"sig": " ".join([sign_webhook(other, wid, now, body)] * 60)},
             "no signature matches"),
        ]
        for name, kw, detail in cases:
            with self.subTest(case=name):
                self.clear_sims()
                before = self.counts()
                kw = dict(kw)
                kw.setdefault("ts", now)
                r = self.s.post_event(None, body=body, webhook_id=wid, **kw)
                p = self.assertProblem(r, 401, detail=detail)
                self.assertEqual(p.get("code"), "invalid_signature")
                self.assertNothingRecorded(before, wid)
                self.assertHealthy()
        # The same body and headers, correctly signed, are accepted.
        r = self.s.post_event(None, body=body, webhook_id=wid, ts=now)
        self.assertEqual(r.status, 200, r)

    def test_body_changed_after_signing_rejected_401(self):
        body = compact(sample_event())
        ts = int(time.time())
        sig = sign_webhook(self.s.webhook_secrets[0], "msg_tamper", ts, body)
        tampered = body.replace(b'"campaign_id":1234', b'"campaign_id":1235')
        self.assertNotEqual(tampered, body)
        before = self.counts()
        r = self.s.post_event(None, body=tampered, webhook_id="msg_tamper",
                              ts=ts, sig=sig)
        self.assertProblem(r, 401, detail="no signature matches")
        self.assertNothingRecorded(before, "msg_tamper")
        self.assertHealthy()

    def test_timestamp_tolerance_edges(self):
        # now +-299 s accepted, now +-301 s rejected (tolerance_s 300).
        for delta, want, detail in ((301, 401, "in the future"),
                                    (-301, 401, "too old"),
                                    (299, 200, None), (-299, 200, None)):
            with self.subTest(delta=delta):
                before = self.counts()
                wid = "msg_edge_%+d" % delta
                ev = sample_event(brand_slug="bare")
                r = self.s.post_event(ev, webhook_id=wid,
                                      ts=aligned_now() + delta)
                if want == 200:
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.json["id"], wid)
                else:
                    self.assertProblem(r, 401, detail=detail)
                    self.assertNothingRecorded(before, wid)
                self.assertHealthy()

    # ---- 404, 405, 413, 415 ------------------------------------------------

    def test_unknown_brand_404(self):
        before = self.counts()
        r = self.s.post_event(sample_event(brand_slug="no-such-brand"),
                              webhook_id="msg_nobrand")
        p = self.assertProblem(r, 404, "brand_slug", "no-such-brand")
        self.assertEqual(p.get("code"), "unknown_brand")
        self.assertNothingRecorded(before, "msg_nobrand")
        self.assertHealthy()

    def test_not_json_415(self):
        body = compact(sample_event())
        for ct in ("text/plain", "application/x-www-form-urlencoded",
                   "application/jsonp", None):
            with self.subTest(content_type=ct):
                self.clear_sims()
                before = self.counts()
                r = self.s.post_event(None, body=body, webhook_id="msg_415",
                                      headers={"Content-Type": ct})
                p = self.assertProblem(r, 415, detail="application/json")
                self.assertEqual(p.get("code"), "unsupported_media_type")
                self.assertNothingRecorded(before, "msg_415")
                self.assertHealthy()

    def test_wrong_method_405(self):
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            with self.subTest(method=method):
                before = self.counts()
                body = compact(sample_event()) if method != "GET" else None
                r = self.s.request(method, "/v1/events", body,
                                   {"Content-Type": "application/json"}
                                   if body else {})
                self.assertProblem(r, 405, detail=method)
                self.assertEqual(r.headers.get("Allow"), "POST", r.headers)
                self.assertNothingRecorded(before)
                self.assertHealthy()

    def padded(self, size, **over):
        """A valid event for brand "bare" of exactly size bytes, padded
        with an extra field the intake ignores."""
        ev = sample_event(brand_slug="bare", **over)
        ev["x_padding"] = ""
        base = len(compact(ev))
        self.assertLessEqual(base, size)
        ev["x_padding"] = "x" * (size - base)
        body = compact(ev)
        self.assertEqual(len(body), size)
        return body

    def test_body_of_exactly_max_body_bytes_accepted(self):
        body = self.padded(MAX_BODY)
        r = self.s.post_event(None, body=body, webhook_id="msg_max")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["id"], "msg_max")
        stored = json.loads(self.s.query(
            "SELECT body FROM events WHERE id = 'msg_max'")[0][0])
        self.assertNotIn("x_padding", stored)

    def test_body_one_byte_over_max_rejected_413(self):
        body = self.padded(MAX_BODY + 1)
        before = self.counts()
        r = self.s.post_event(None, body=body, webhook_id="msg_over")
        self.assertProblem(r, 413, detail=str(MAX_BODY))
        self.assertNothingRecorded(before, "msg_over")
        self.assertHealthy()

    def test_chunked_body_over_max_rejected_413(self):
        # Without a Content-Length (nginx buffers a chunked body and then
        # passes one on) the limit holds all the same.
        body = self.padded(MAX_BODY + 1)
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json", "webhook-id": "msg_chunked",
            "webhook-timestamp": str(ts),
            "webhook-signature": sign_webhook(self.s.webhook_secrets[0],
                                              "msg_chunked", ts, body),
            "Transfer-Encoding": "chunked"}
        before = self.counts()
        conn = http.client.HTTPConnection("127.0.0.1", self.s.port,
                                          timeout=60)
        try:
            chunks = (body[i:i + 4096] for i in range(0, len(body), 4096))
            conn.request("POST", "/v1/events", chunks, headers,
                         encode_chunked=True)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        r = Response(resp.status, dict(resp.getheaders()), raw)
        self.assertProblem(r, 413)
        self.assertNothingRecorded(before, "msg_chunked")
        self.assertHealthy()

    def test_huge_body_rejected_413_by_nginx(self):
        body = b'{"pad":"' + b"x" * (2 << 20) + b'"}'
        before = self.counts()
        r = self.s.post_event(None, body=body, webhook_id="msg_huge")
        self.assertProblem(r, 413)
        self.assertNothingRecorded(before, "msg_huge")
        self.assertHealthy()

    # ---- interoperability --------------------------------------------------

    def node_sign(self, secret, msg_id, ts, body):
        # Missing tools fail the test: it must not vanish from the run.
        self.assertIsNotNone(shutil.which("node"),
                             "node is not installed: run deploy/deps.sh")
        self.assertTrue(os.path.isdir(NODE_PACKAGE),
                        "tests/node_modules/standardwebhooks is missing: "
                        "run deploy/deps.sh")
        p = subprocess.run(["node", NODE_SIGNER, secret, msg_id, str(ts)],
                           input=body, capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.decode().strip()

    def test_reference_library_signatures_accepted(self):
        secret = self.s.webhook_secrets[0]
        ev = sample_event(campaign_title="20 % de réduction – étudiants",
                          subid="ünïcødé ✓")
        # Raw UTF-8, not \u escapes: the MAC is over the bytes as sent.
        body = json.dumps(ev, ensure_ascii=False).encode()
        ts = int(time.time())
        sig = self.node_sign(secret, "msg_node_1", ts, body)
        self.assertRegex(sig, r"^v1,[A-Za-z0-9+/]{43}=$")
        # The harness signs like the reference library.
        self.assertEqual(sig, sign_webhook(secret, "msg_node_1", ts, body))
        r = self.s.post_event(None, body=body, webhook_id="msg_node_1",
                              ts=ts, sig=sig)
        self.assertEqual(r.status, 200, r)
        stored = json.loads(self.s.query(
            "SELECT body FROM events WHERE id = 'msg_node_1'")[0][0])
        self.assertEqual(stored["campaign_title"], ev["campaign_title"])
        self.assertEqual(stored["subid"], ev["subid"])

        # The same request with one byte of the body changed: 401.
        body2 = sample_event(brand_slug="bare")
        body2 = compact(body2)
        sig2 = self.node_sign(secret, "msg_node_2", ts, body2)
        i = body2.index(b'"GB"') + 1
        changed = body2[:i] + b"I" + body2[i + 1:]  # "GB" -> "IB"
        self.assertEqual(len(changed), len(body2))
        before = self.counts()
        self.clear_sims()
        r = self.s.post_event(None, body=changed, webhook_id="msg_node_2",
                              ts=ts, sig=sig2)
        self.assertProblem(r, 401, detail="no signature matches")
        self.assertNothingRecorded(before, "msg_node_2")
        self.assertHealthy()
        # Unchanged, it goes through.
        r = self.s.post_event(None, body=body2, webhook_id="msg_node_2",
                              ts=ts, sig=sig2)
        self.assertEqual(r.status, 200, r)

    # ---- normalisation -----------------------------------------------------

    def test_normalisation_stored_and_sent(self):
        ev = sample_event("offer_claimed", email="  Jane.Doe@Example.COM \t",
                          mobile="+44 7700 900123", brand_country="gb",
                          occurred_at=None, user_country=None)
        t0 = int(time.time())
        r = self.s.post_event(ev, webhook_id="msg_norm_1")
        t1 = int(time.time())
        self.assertEqual(r.status, 200, r)
        stored = json.loads(self.s.query(
            "SELECT body FROM events WHERE id = 'msg_norm_1'")[0][0])
        self.assertEqual(stored["email"], "jane.doe@example.com")
        self.assertEqual(stored["mobile"], "+447700900123")
        self.assertEqual(stored["user_country"], "GB")
        self.assertEqual(stored["brand_country"], "GB")
        self.assertRegex(stored["occurred_at"],
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        when = calendar.timegm(time.strptime(stored["occurred_at"],
                                             "%Y-%m-%dT%H:%M:%SZ"))
        self.assertTrue(t0 - 1 <= when <= t1 + 1,
                        (stored["occurred_at"], t0, t1))
        # What reached the destinations is the normalised event.
        trig = self.triggers(ev["token"])
        self.assertEqual(len(trig), 1)
        self.assertEqual(trig[0]["external_id"], "jane.doe@example.com")
        self.assertEqual(trig[0]["data"]["user_country"], "GB")
        self.assertEqual(trig[0]["data"]["brand_country"], "GB")
        self.assertEqual(trig[0]["data"]["date"], stored["occurred_at"])
        puts = self.s.emarsys.requests(path_prefix="/api/v3/contact",
                                       method="PUT")
        self.assertEqual(len(puts), 1)
        contact = puts[0]["json"]["contacts"][0]
        self.assertEqual(contact["3"], "jane.doe@example.com")
        self.assertEqual(contact["37"], "+447700900123")
        award = self.awards(ev["token"])
        self.assertEqual(len(award), 1)
        self.assertEqual(award[0]["customer_email"], "jane.doe@example.com")
        self.assertEqual(award[0]["created_at"], stored["occurred_at"])
        # gcrelay's own log masks them.
        log = self.s.log()
        for pii in ("jane.doe@example.com", "Jane.Doe", "7700900123",
                    "7700 900123"):
            self.assertNotIn(pii, log)

    def test_user_country_derived_or_kept(self):
        cases = [
            # (overrides, stored mobile, stored user_country)
            ({"mobile": "00353 87 765 4321", "user_country": None},
             "+353877654321", "IE"),
            ({"mobile": "+1 (212) 555-0123", "user_country": None},
             "+12125550123", "US"),
            ({"mobile": "+44 7700 900123", "user_country": "ie"},
             "+447700900123", "IE"),
            ({"mobile": None, "user_country": None}, None, None),
        ]
        for i, (over, mobile, country) in enumerate(cases):
            with self.subTest(over=over):
                wid = "msg_country_%d" % i
                r = self.s.post_event(sample_event(
                    "consent_intent", brand_slug="bare", **over),
                    webhook_id=wid)
                self.assertEqual(r.status, 200, r)
                stored = json.loads(self.s.query(
                    "SELECT body FROM events WHERE id = ?", wid)[0][0])
                self.assertEqual(stored.get("mobile"), mobile)
                self.assertEqual(stored.get("user_country"), country)

    def test_occurred_at_normalised_to_utc(self):
        r = self.s.post_event(sample_event(
            brand_slug="bare", occurred_at="2026-11-21T12:15:00.250+02:00"),
            webhook_id="msg_utc")
        self.assertEqual(r.status, 200, r)
        stored = json.loads(self.s.query(
            "SELECT body FROM events WHERE id = 'msg_utc'")[0][0])
        self.assertEqual(stored["occurred_at"], "2026-11-21T10:15:00Z")

    # ---- replays -----------------------------------------------------------

    def test_replay_answers_stored_outcome(self):
        ev = sample_event("offer_claimed")
        r1 = self.s.post_event(ev, webhook_id="msg_replay")
        self.assertEqual(r1.status, 200, r1)
        self.assertNotIn("duplicate", r1.json)
        em = len(self.s.emarsys.requests())
        yo = len(self.s.yotpo.requests())
        self.assertGreater(em, 0)
        self.assertEqual(yo, 1)
        before = self.counts()
        # A redelivery: same id and body, new timestamp and signature.
        r2 = self.s.post_event(ev, webhook_id="msg_replay",
                               ts=int(time.time()) - 5)
        self.assertEqual(r2.status, 200, r2)
        self.assertIs(r2.json.get("duplicate"), True, r2)
        want = dict(r1.json, duplicate=True)
        self.assertEqual(r2.json, want)
        # Same id, other body: still the stored outcome, body unchanged.
        r3 = self.s.post_event(dict(ev, campaign_id=999),
                               webhook_id="msg_replay")
        self.assertEqual(r3.status, 200, r3)
        self.assertEqual(r3.json, want)
        self.assertEqual(json.loads(self.s.query(
            "SELECT body FROM events WHERE id = 'msg_replay'")[0][0])
            ["campaign_id"], 1234)
        self.assertEqual(self.counts(), before)
        self.assertEqual(len(self.s.emarsys.requests()), em)
        self.assertEqual(len(self.s.yotpo.requests()), yo)
        self.assertEqual(len(self.triggers(ev["token"])), 1)
        self.assertEqual(len(self.awards(ev["token"])), 1)

    def test_same_verification_under_new_webhook_id_awards_once(self):
        # Issue 9: Gocertify re-sends a verification under a new webhook
        # id.  Yotpo's ledger awards once; Emarsys gets the same
        # trigger_id (brand, token, event name) and applies one trigger.
        ev = sample_event("offer_claimed")
        dedup = self.s.emarsys.stats()["deduplicated_triggers"]
        r1 = self.s.post_event(ev, webhook_id="msg_twice_a")
        r2 = self.s.post_event(ev, webhook_id="msg_twice_b")
        self.assertEqual((r1.status, r2.status), (200, 200), (r1, r2))
        self.assertNotIn("duplicate", r2.json)
        self.assertEqual(len(self.awards(ev["token"])), 1)
        self.assertEqual(len(self.s.yotpo.requests(
            path_prefix="/api/v2/actions")), 1)
        sent = [q["json"]["trigger_id"] for q in self.s.emarsys.requests(
            path_prefix="/api/v3/event/", method="POST")
            if (q["json"] or {}).get("data", {}).get("token") == ev["token"]]
        self.assertEqual(len(sent), 2, sent)
        self.assertEqual(sent[0], sent[1])
        self.assertEqual(len(self.triggers(ev["token"])), 1)
        self.assertEqual(self.s.emarsys.stats()["deduplicated_triggers"],
                         dedup + 1)

    def test_concurrent_replays_deliver_once(self):
        # Yotpo answers slowly, so most copies arrive while the original
        # is still being delivered.
        self.s.yotpo.fault("delay", ms=500, path_prefix="/api/v2/actions")
        ev = sample_event("offer_claimed")
        wid = "msg_storm"
        body = compact(ev)
        ts = int(time.time())
        headers = {"Content-Type": "application/json", "webhook-id": wid,
                   "webhook-timestamp": str(ts),
                   "webhook-signature": sign_webhook(
                       self.s.webhook_secrets[0], wid, ts, body)}
        n = 20
        barrier = threading.Barrier(n)
        results = [None] * n

        def fire(i):
            try:
                barrier.wait(10)
                results[i] = self.s.request("POST", "/v1/events", body,
                                            headers)
            except Exception as e:  # reported below
                results[i] = e

        threads = [threading.Thread(target=fire, args=(i,))
                   for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        originals, in_flight = [], 0
        for r in results:
            self.assertNotIsInstance(r, Exception, r)
            self.assertIn(r.status, (200, 202), r)
            self.assertEqual(r.json["id"], wid, r)
            if r.json.get("duplicate") is not True:
                self.assertNotIn("duplicate", r.json, r)
                originals.append(r)
            elif r.status == 202:
                # Seen while the original was running: gcrelay owns it.
                self.assertEqual(r.json["status"], "accepted", r)
                in_flight += 1
            else:
                self.assertEqual(r.json["status"], "delivered", r)
        self.assertEqual(len(originals), 1, results)
        self.assertGreater(in_flight, 0, results)
        self.assertEqual(originals[0].status, 200, originals[0])
        self.assertEqual(self.s.query(
            "SELECT count(*) FROM events WHERE id = ?", wid)[0][0], 1)
        self.assertEqual(self.s.query(
            "SELECT destination, status FROM deliveries WHERE event_id = ? "
            "ORDER BY destination", wid),
            [("emarsys", "delivered"), ("yotpo", "delivered")])
        self.assertEqual(len(self.triggers(ev["token"])), 1)
        self.assertEqual(len(self.s.emarsys.requests(
            path_prefix="/api/v3/contact", method="PUT")), 1)
        self.assertEqual(len(self.awards(ev["token"])), 1)
        self.assertEqual(len(self.s.yotpo.requests(
            path_prefix="/api/v2/actions")), 1)
        # Once settled, a replay sees the final outcome.
        r = self.s.post_event(ev, webhook_id=wid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, dict(originals[0].json, duplicate=True))

    def test_client_gone_mid_delivery(self):
        # The sender gives up while the event is being delivered (nginx
        # logs 499 and drops the FastCGI connection): the delivery still
        # completes once, the worker lives on, a redelivery is a duplicate.
        self.s.yotpo.fault("delay", ms=600, path_prefix="/api/v2/actions")
        restarts = self.metrics().get("gcrelay_child_restarts_total", 0)
        ev = sample_event("offer_claimed")
        body = compact(ev)
        ts = int(time.time())
        sig = sign_webhook(self.s.webhook_secrets[0], "msg_gone", ts, body)
        conn = socket.create_connection(("127.0.0.1", self.s.port), 10)
        try:
            conn.sendall(
                b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nwebhook-id: msg_gone\r\n"
                b"webhook-timestamp: %d\r\nwebhook-signature: %s\r\n"
                b"Content-Length: %d\r\n\r\n%s"
                % (ts, sig.encode(), len(body), body))
            # Gone once the award is on its way.
            self.s.yotpo.wait_for(lambda y: y.requests(
                path_prefix="/api/v2/actions"))
        finally:
            conn.close()
        self.s.wait(lambda: self.s.query(
            "SELECT status FROM events WHERE id = 'msg_gone'")
            == [("delivered",)], what="msg_gone delivered")
        r = self.s.post_event(ev, webhook_id="msg_gone")
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.json.get("duplicate"), True, r)
        self.assertEqual(len(self.awards(ev["token"])), 1)
        self.assertEqual(len(self.triggers(ev["token"])), 1)
        self.assertHealthy()
        self.assertEqual(self.metrics().get("gcrelay_child_restarts_total",
                                            0), restarts)

    # ---- metrics -----------------------------------------------------------

    def metrics(self):
        r = self.s.request("GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        return parse_metrics(r.raw.decode())

    def test_metrics_count_events_and_signature_failures(self):
        m0 = self.metrics()
        now = int(time.time())
        ev = sample_event("offer_claimed", brand_slug="bare")
        self.assertEqual(self.s.post_event(ev, ts=now - 3600).status, 401)
        self.assertEqual(self.s.post_event(ev, ts=now - 3600).status, 401)
        self.assertEqual(self.s.post_event(ev, ts=now + 3600).status, 401)
        self.assertEqual(self.s.post_event(ev, secret=new_whsec()).status,
                         401)
        self.assertEqual(self.s.post_event(
            ev, headers={"webhook-id": None}).status, 401)
        self.assertEqual(self.s.post_event(
            ev, headers={"webhook-signature": None}).status, 401)
        self.assertEqual(self.s.post_event(ev, sig="v1,xyz").status, 401)
        self.assertEqual(self.s.post_event(
            None, body=b"{nope").status, 400)
        # A 400 is counted under the kind the body names, when it names one.
        self.assertEqual(self.s.post_event(sample_event(
            "consent_intent", brand_slug="bare", campaign_id="7")).status,
            400)
        self.assertEqual(self.s.post_event(
            dict(ev, brand_slug="nobody")).status, 404)
        self.assertEqual(self.s.post_event(ev, webhook_id="msg_m").status,
                         200)
        self.assertEqual(self.s.post_event(ev, webhook_id="msg_m").status,
                         200)
        self.assertEqual(self.s.post_event(
            sample_event("consent_intent", brand_slug="bare")).status, 200)
        m1 = self.metrics()

        def delta(key):
            return m1.get(key, 0) - m0.get(key, 0)

        sig = 'gcrelay_signature_failures_total{reason="%s"}'
        self.assertEqual(delta(sig % "stale"), 2)
        self.assertEqual(delta(sig % "future"), 1)
        self.assertEqual(delta(sig % "no_match"), 1)
        self.assertEqual(delta(sig % "missing_id"), 1)
        self.assertEqual(delta(sig % "missing_signature"), 1)
        self.assertEqual(delta(sig % "bad_signature_header"), 1)
        self.assertEqual(delta(sig % "missing_timestamp"), 0)
        evk = 'gcrelay_events_total{kind="%s",result="%s"}'
        self.assertEqual(delta(evk % ("offer_claimed", "accepted")), 1)
        self.assertEqual(delta(evk % ("offer_claimed", "duplicate")), 1)
        self.assertEqual(delta(evk % ("offer_claimed", "rejected")), 1)
        self.assertEqual(delta(evk % ("consent_intent", "accepted")), 1)
        self.assertEqual(delta(evk % ("unknown", "rejected")), 1)
        self.assertEqual(delta(evk % ("consent_intent", "rejected")), 1)
        req = 'gcrelay_http_requests_total{route="events",status="%s"}'
        self.assertEqual(delta(req % "401"), 7)
        self.assertEqual(delta(req % "400"), 2)
        self.assertEqual(delta(req % "404"), 1)
        self.assertEqual(delta(req % "200"), 3)
        self.assertEqual(delta('gcrelay_deliveries_total{destination='
                               '"yotpo",outcome="skipped"}'), 2)
        self.assertHealthy()


class Rotation(IntakeCase):
    """Two active webhook secrets: the old and the new one."""

    @classmethod
    def setUpClass(cls):
        # The old secret is 24 bytes, as Svix generates them.
        cls.old = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        cls.new = new_whsec()
        cls.s = Stack(webhook_secrets=[cls.old, cls.new], sims=False)
        try:
            cls.s.demo_brand("bare", emarsys=False, yotpo=False)
        except BaseException:
            cls.s.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def post(self, wid, sig_of, body=None, ts=None):
        """POST signed with the header sig_of(body, ts) builds."""
        body = body or compact(sample_event(brand_slug="bare"))
        ts = ts or int(time.time())
        return self.s.post_event(None, body=body, webhook_id=wid, ts=ts,
                                 sig=sig_of(wid, ts, body))

    def test_either_secret_accepted(self):
        for i, secret in enumerate((self.old, self.new)):
            with self.subTest(secret=i):
                r = self.post("msg_rot_%d" % i,
                              lambda w, t, b: sign_webhook(secret, w, t, b))
                self.assertEqual(r.status, 200, r)

    def test_second_entry_matching_accepted(self):
        third = new_whsec()

        def two(w, t, b):
            return "%s %s" % (sign_webhook(third, w, t, b),
                              sign_webhook(self.new, w, t, b))

        r = self.post("msg_rot_two", two)
        self.assertEqual(r.status, 200, r)

        def mixed(w, t, b):  # other versions and extra spaces are skipped
            return "v1a,%s  v2,abc   %s " % (
                base64.b64encode(b"x" * 32).decode(),
                sign_webhook(self.old, w, t, b))

        r = self.post("msg_rot_mixed", mixed)
        self.assertEqual(r.status, 200, r)

    def test_third_secret_rejected(self):
        third = new_whsec()
        before = self.counts()
        r = self.post("msg_rot_bad",
                      lambda w, t, b: sign_webhook(third, w, t, b))
        self.assertProblem(r, 401, detail="no signature matches")
        r = self.post("msg_rot_bad", lambda w, t, b: "%s %s" % (
            sign_webhook(third, w, t, b), sign_webhook(new_whsec(), w, t, b)))
        self.assertProblem(r, 401, detail="no signature matches")
        self.assertNothingRecorded(before, "msg_rot_bad")
        self.assertHealthy()


class StoreUnavailable(IntakeCase):
    """The store's write lock held elsewhere longer than busy_timeout_ms."""

    @classmethod
    def setUpClass(cls):
        cls.s = Stack(start=False)
        try:
            with open(cls.s.config_path) as f:
                text = f.read()
            patched = text.replace("busy_timeout_ms = 5000;",
                                   "busy_timeout_ms = 300;")
            assert patched != text, "busy_timeout_ms not in the config"
            with open(cls.s.config_path, "w") as f:
                f.write(patched)
            cls.s.start()
            cls.s.demo_brand("acme")
        except BaseException:
            cls.s.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def setUp(self):
        self.clear_sims()

    def test_locked_store_answers_503_then_recovers(self):
        ev = sample_event("offer_claimed")
        before = self.counts()
        with self.s.lock_store():
            t0 = time.monotonic()
            r = self.s.post_event(ev, webhook_id="msg_locked")
            took = time.monotonic() - t0
            p = self.assertProblem(r, 503, detail="retry")
            self.assertEqual(p.get("code"), "store_unavailable")
            # It waited for the lock (busy_timeout_ms), then gave up.
            self.assertGreaterEqual(took, 0.25, took)
            self.assertLess(took, 5, took)
        self.assertNothingRecorded(before, "msg_locked")
        self.assertHealthy()
        # The sender retries the same delivery: now it goes through, once.
        r = self.s.post_event(ev, webhook_id="msg_locked")
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("duplicate", r.json)
        self.assertEqual(self.s.query(
            "SELECT count(*) FROM events WHERE id = 'msg_locked'")[0][0], 1)
        self.assertEqual(len(self.awards(ev["token"])), 1)


if __name__ == "__main__":
    unittest.main()
