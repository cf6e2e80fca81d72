"""Self-test of the Emarsys and Yotpo simulators.

Run from the repository root:  python3 -m unittest tests/sim/test_sims.py

Everything goes over real HTTPS, verified against the throwaway CA that
certs.py makes.  Both simulators are started once for the module and reset
before each test.
"""

import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from certs import make_certs                                # noqa: E402
from client import SimClient, SimError, start_sim, stop_sim  # noqa: E402

TMP = CERTS = EMARSYS = YOTPO = None
RATE_HEADER_NAMES = ("X-RateLimit-Limit", "X-Ratelimit-Remaining",
                     "X-RateLimit-Reset")
DROPPED = (http.client.HTTPException, OSError)   # ssl.SSLError is an OSError


def setUpModule():
    global TMP, CERTS, EMARSYS, YOTPO
    TMP = tempfile.mkdtemp(prefix="gcrelay-simtest-")
    CERTS = make_certs(TMP)
    EMARSYS = start_sim("emarsys", CERTS)
    YOTPO = start_sim("yotpo", CERTS)


def tearDownModule():
    for sim in (EMARSYS, YOTPO):
        if sim:
            stop_sim(sim[0])
    shutil.rmtree(TMP, ignore_errors=True)


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # [(name as sent, value)]
        self.body = body

    def h(self, name):
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def json(self):
        return json.loads(self.body)


class Conn:
    """A keep-alive connection to a simulator, like the client under test."""

    def __init__(self, sim, timeout=5.0):
        self.conn = sim.connection(timeout)

    def req(self, method, path, body=None, headers=None, raw=None):
        headers = dict(headers or {})
        if body is not None:
            raw = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        self.conn.request(method, path, raw, headers)
        resp = self.conn.getresponse()
        return Resp(resp.status, resp.getheaders(), resp.read())

    def close(self):
        self.conn.close()


class SimTestCase(unittest.TestCase):
    SIM = None          # name of the module global holding (proc, port, client)

    def setUp(self):
        self.sim = globals()[self.SIM][2]
        self.sim.reset()
        self.conn = Conn(self.sim)

    def tearDown(self):
        self.conn.close()
        self.assertEqual(self.sim.stats()["internal_errors"], 0)

    def assertEnvelope(self, resp, status, code, data=None):
        self.assertEqual(resp.status, status, resp.body)
        body = resp.json
        self.assertEqual(set(body), {"replyCode", "replyText", "data"})
        self.assertEqual(body["replyCode"], code, body)
        self.assertIsInstance(body["replyText"], str)
        if data is not None:
            self.assertEqual(body["data"], data)
        return body


# ---------------------------------------------------------------- Emarsys --

class EmarsysBase(SimTestCase):
    SIM = "EMARSYS"

    def token(self, cid="demo_client", secret="demo_secret", conn=None):
        resp = self.token_req(cid, secret, conn=conn)
        self.assertEqual(resp.status, 200, resp.body)
        return resp.json["access_token"]

    def token_req(self, cid="demo_client", secret="demo_secret",
                  form="grant_type=client_credentials",
                  ctype="application/x-www-form-urlencoded", conn=None):
        headers = {"Content-Type": ctype}
        if cid is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(
                ("%s:%s" % (cid, secret)).encode()).decode()
        return (conn or self.conn).req("POST", "/oauth2/token",
                                       raw=form.encode(), headers=headers)

    def api(self, method, path, body=None, token=None, headers=None,
            raw=None, conn=None):
        headers = dict(headers or {})
        if token is None:
            token = self._token = getattr(self, "_token", None) or self.token()
        if token:
            headers["Authorization"] = "Bearer " + token
        return (conn or self.conn).req(method, "/api/v3/" + path, body,
                                       headers, raw)

    def upsert(self, contacts, key_id="3", create=True, **kw):
        path = "contact/?create_if_not_exists=1" if create else "contact/"
        return self.api("PUT", path, {"key_id": key_id,
                                      "contacts": contacts}, **kw)

    def account(self, cid="demo_client"):
        return self.sim.state()["accounts"][cid]

    def new_event(self, name):
        resp = self.api("POST", "event", {"name": name})
        self.assertEqual(resp.status, 200, resp.body)
        return resp.json["data"]["id"]


class EmarsysAuthTest(EmarsysBase):
    def test_token_success_and_errors(self):
        resp = self.token_req()
        self.assertEqual(resp.status, 200)
        body = resp.json
        self.assertEqual(body["token_type"], "Bearer")
        self.assertEqual(body["expires_in"], 3600)
        self.assertTrue(body["access_token"])

        for cid, secret in (("demo_client", "wrong"), ("nobody", "x")):
            resp = self.token_req(cid, secret)
            self.assertEqual(resp.status, 401)
            self.assertEqual(resp.json, {
                "error": "invalid_client",
                "error_description": "Client authentication failed"})
        # No Basic header: credentials in the form body are not accepted.
        resp = self.token_req(None, form="grant_type=client_credentials&"
                              "client_id=demo_client&client_secret=demo_secret")
        self.assertEqual(resp.status, 401)
        resp = self.token_req(form="grant_type=password")
        self.assertEqual((resp.status, resp.json),
                         (400, {"error": "unsupported_grant_type"}))
        resp = self.token_req(form="")
        self.assertEqual((resp.status, resp.json["error"]),
                         (400, "invalid_request"))
        resp = self.token_req(ctype="application/json")
        self.assertEqual((resp.status, resp.json["error"]),
                         (400, "invalid_request"))

        self.sim.config({"omit_expires_in": True})
        self.assertNotIn("expires_in", self.token_req().json)
        self.sim.config({"omit_expires_in": False, "token_ttl": 7})
        self.assertEqual(self.token_req().json["expires_in"], 7)

        stats = self.sim.stats()
        self.assertEqual(stats["tokens_issued"], {"demo_client": 3})
        self.assertEqual(stats["tokens_rejected"], 3)
        recs = self.sim.requests(path_prefix="/oauth2/token")
        self.assertEqual(len(recs), 9)
        self.assertEqual(recs[0]["account"], "demo_client")
        self.assertEqual(recs[0]["body"], "grant_type=client_credentials")

    def test_api_needs_valid_unexpired_token(self):
        resp = self.api("GET", "field", token="")
        self.assertEqual(resp.status, 401)
        self.assertEqual(resp.json["error"], "invalid_token")
        self.assertIsNone(resp.h("X-RateLimit-Limit"))
        self.assertEqual(self.api("GET", "field", token="bogus").status, 401)

        self.sim.config({"token_ttl": 0.3})
        tok = self.token()
        self.assertEqual(self.api("GET", "field", token=tok).status, 200)
        time.sleep(0.4)
        self.assertEqual(self.api("GET", "field", token=tok).status, 401)

        self.sim.config({"unauthorized_body": "envelope"})
        self.assertEnvelope(self.api("GET", "field", token=tok), 401, 1)
        self.assertEqual(self.sim.stats()["unauthorized"], 4)

    def test_denied_permission_is_403(self):
        self.sim.config({"accounts": {"demo_client": {
            "denied_permissions": ["field.create"]}}})
        self.assertEqual(self.api("GET", "field").status, 200)
        resp = self.api("POST", "field", {"name": "x", "application_type":
                                          "date"})
        self.assertEqual(resp.status, 403)
        self.assertEqual(self.sim.stats()["forbidden"], 1)


class EmarsysFieldTest(EmarsysBase):
    def test_list_and_translate(self):
        for path in ("field", "field/translate/en", "field/translate/de/"):
            resp = self.api("GET", path)
            body = self.assertEnvelope(resp, 200, 0)
            by_id = {f["id"]: f for f in body["data"]}
            self.assertEqual(by_id["3"], {"id": "3", "name": "Email",
                                          "application_type": "longtext",
                                          "string_id": "email"})
            for fid in ("1", "2", "4", "5", "14", "15", "31", "37", "46"):
                self.assertIn(fid, by_id)
            self.assertEqual(by_id["31"]["application_type"], "special")
            self.assertEqual(by_id["12817"]["name"], "Mobile SMS Opt-in")
            self.assertEqual(by_id["12817"]["application_type"],
                             "singlechoice")
        self.assertEnvelope(self.api("GET", "field/translate/zz"), 400, 1001)
        # The documented header spelling, mixed case included.
        names = [n for n, _ in resp.headers]
        for name in RATE_HEADER_NAMES:
            self.assertIn(name, names)
        self.assertEqual(resp.h("X-RateLimit-Limit"), "1000")
        self.assertEqual(resp.h("X-Ratelimit-Remaining"), "997")
        reset = int(resp.h("X-RateLimit-Reset"))
        self.assertEqual(reset % 60, 0)
        self.assertTrue(time.time() < reset <= time.time() + 61)

        self.sim.config({"accounts": {"demo_client": {"ids_as_numbers": True}}})
        ids = [f["id"] for f in self.api("GET", "field").json["data"]]
        self.assertIn(3, ids)
        self.assertTrue(all(isinstance(i, int) for i in ids))

    def test_choices(self):
        want = [{"id": "1", "choice": "True", "bit_position": "1"},
                {"id": "2", "choice": "False", "bit_position": "2"}]
        self.assertEqual(self.api("GET", "field/31/choice").json["data"], want)
        self.assertEqual(self.api(
            "GET", "field/12817/choice/translate/en").json["data"], want)
        self.assertEnvelope(self.api("GET", "field/3/choice"), 400, 2006)
        self.assertEnvelope(self.api("GET", "field/777/choice"), 400, 2006)

    def test_create(self):
        def create(body, **kw):
            return self.api("POST", "field", body, **kw)

        self.assertEnvelope(create(None, raw=b'{"name":"a"}', headers={
            "Content-Type": "text/plain"}), 400, 10001, "")
        self.assertEnvelope(create(None, raw=b"{nope", headers={
            "Content-Type": "application/json"}), 400, 1010, "")
        self.assertEnvelope(create({"name": "a"}), 400, 9005, "")
        self.assertEnvelope(create({"application_type": "date"}), 400, 9005)
        self.assertEnvelope(create({"name": "a", "application_type":
                                    "singlechoice"}), 400, 9006)
        self.assertEnvelope(create({"name": "a", "application_type":
                                    "multichoice"}), 400, 9006)
        for name in ("Email", "first name", "optin"):
            self.assertEnvelope(create({"name": name, "application_type":
                                        "shorttext"}), 400, 9003)
        resp = create({"name": "gocertify_student_verified_at",
                       "application_type": "date"})
        body = self.assertEnvelope(resp, 200, 0)
        fid = body["data"]["id"]
        self.assertIsInstance(fid, int)     # documented: {"id":796}
        self.assertNotIn(fid, (3, 31, 37, 12817))
        self.assertEnvelope(create({"name": "GOCERTIFY_Student_Verified_At",
                                    "application_type": "date"}),
                            400, 9002, "")
        listed = {f["name"]: f for f in self.api("GET", "field").json["data"]}
        self.assertEqual(listed["gocertify_student_verified_at"],
                         {"id": str(fid), "name": "gocertify_student_verified_at",
                          "application_type": "date",
                          "string_id": "gocertify_student_verified_at"})
        self.sim.config({"accounts": {"demo_client": {"field_slots": 2}}})
        self.assertEnvelope(create({"name": "x", "application_type": "url"}),
                            400, 9004)
        self.assertEqual(self.sim.stats()["fields_created"], 1)

    def test_accounts_with_and_without_sms_module(self):
        self.sim.config({"accounts": {
            "nosms": {"secret": "s1", "sms_field_id": None},
            "other": {"secret": "s2", "sms_field_id": 6949,
                      "sms_field_name": "Mobile SMS Opt-In",
                      "fields": [{"name": "gocertify_nhs_worker_verified_at",
                                  "application_type": "date"}],
                      "events": ["gocertify_offer_claimed"]}}})
        tok = self.token("nosms", "s1")
        names = [f["name"] for f in self.api("GET", "field", token=tok)
                 .json["data"]]
        self.assertNotIn("Mobile SMS Opt-in", names)
        resp = self.upsert([{"3": "a@example.com", "12817": 1}], token=tok)
        self.assertEqual(resp.json["data"]["errors"],
                         {"a@example.com": {"2006": "Invalid field id: 12817"}})

        tok = self.token("other", "s2")
        fields = {f["name"]: f["id"] for f in
                  self.api("GET", "field", token=tok).json["data"]}
        self.assertEqual(fields["Mobile SMS Opt-In"], "6949")
        self.assertIn("gocertify_nhs_worker_verified_at", fields)
        events = self.api("GET", "event", token=tok).json["data"]
        self.assertEqual([e["name"] for e in events],
                         ["gocertify_offer_claimed"])
        # Accounts are isolated.
        self.assertEqual(self.api("GET", "event").json["data"], [])
        self.assertEqual(set(self.sim.state()["accounts"]),
                         {"demo_client", "nosms", "other"})
        self.sim.config({"accounts": {"nosms": None}})
        self.assertNotIn("nosms", self.sim.state()["accounts"])
        self.assertEqual(self.token_req("nosms", "s1").status, 401)


class EmarsysContactTest(EmarsysBase):
    JANE = "jane@example.com"

    def test_create_update_and_clear(self):
        resp = self.upsert([{"3": self.JANE, "31": 1, "37": "+447700900123",
                             "12817": 1}])
        body = self.assertEnvelope(resp, 200, 0)
        self.assertEqual(body["data"], {"ids": ["100000001"], "errors": {}})
        # Path without the trailing slash, numeric key_id, string choice id.
        resp = self.api("PUT", "contact?create_if_not_exists=1",
                        {"key_id": 3, "contacts": [{"3": self.JANE,
                                                    "31": "2"}]})
        self.assertEqual(resp.json["data"]["ids"], ["100000001"])
        resp = self.upsert([{"3": self.JANE, "37": ""}])
        self.assertEqual(resp.json["data"]["ids"], ["100000001"])
        contact = self.account()["contacts"][0]
        self.assertEqual(contact["fields"], {"3": self.JANE, "31": "2",
                                             "12817": 1})
        self.assertEqual(contact["cleared"], ["37"])
        self.assertEqual(contact["writes"], 3)
        stats = self.sim.stats()
        self.assertEqual((stats["contacts_created"], stats["contacts_updated"],
                          stats["cleared_values"]), (1, 2, 1))

    def test_without_create_flag(self):
        resp = self.upsert([{"3": "joe@example.com", "1": "Joe"}],
                           create=False)
        self.assertEnvelope(resp, 200, 0, {"ids": [], "errors": {
            "joe@example.com": {"2008": "No contact found with the external "
                                        "id: 3 - joe@example.com"}}})
        self.assertEqual(self.account()["contacts"], [])
        self.upsert([{"3": "joe@example.com"}])
        resp = self.upsert([{"3": "joe@example.com", "1": "Joe"}],
                           create=False)
        self.assertEqual(resp.json["data"]["errors"], {})

    def test_per_contact_errors(self):
        self.api("POST", "field", {"name": "gocertify_student_verified_at",
                                   "application_type": "date"})
        date_id = str(self.account()["fields"][-1]["id"])
        resp = self.upsert([
            {"3": "ok@example.com", date_id: "2025-01-31", "31": "1"},
            {"3": "d1@example.com", date_id: "2025-1-31"},
            {"3": "d2@example.com", date_id: "2025-01-31 10:00:00"},
            {"3": "d3@example.com", date_id: "2025-02-30"},
            {"3": "o1@example.com", "31": 3},
            {"3": "o2@example.com", "31": True},
            {"3": "o3@example.com", "12817": "yes"},
            {"3": "n1@example.com", "1": None},
            {"3": "a1@example.com", "1": ["x"]},
            {"3": "f1@example.com", "99999": "x"},
            {"1": "no key"},
            {"3": "", "1": "empty key"},
        ])
        body = self.assertEnvelope(resp, 200, 0)
        self.assertEqual(body["data"]["ids"], ["100000001"])
        errors = body["data"]["errors"]
        date_msg = ("Invalid date format for field id %s. The valid date "
                    "format is YYYY-MM-DD" % date_id)
        for email in ("d1", "d2", "d3"):
            self.assertEqual(errors[email + "@example.com"],
                             {"2007": date_msg})
        for email in ("o1", "o2", "o3", "n1", "a1"):
            self.assertEqual(list(errors[email + "@example.com"]), ["2007"])
        self.assertEqual(errors["f1@example.com"],
                         {"2006": "Invalid field id: 99999"})
        self.assertEqual(list(errors["10"]), ["2005"])  # keyed by position
        self.assertEqual(list(errors["11"]), ["2005"])
        self.assertEqual(len(self.account()["contacts"]), 1)

    def test_request_level_errors(self):
        for key_id in ("999", "abc", 12.5):
            self.assertEnvelope(self.upsert([{"3": self.JANE}], key_id=key_id),
                                400, 2004, "")
        self.assertEnvelope(self.api("PUT", "contact/", {"key_id": "3"}),
                            400, 1001, "")
        self.assertEnvelope(self.api("PUT", "contact/", {
            "key_id": "3", "contacts": {"3": self.JANE}}), 400, 1001)
        self.assertEnvelope(self.upsert([]), 400, 1006)
        self.assertEnvelope(self.upsert([{"3": "x%d@e.com" % i}
                                         for i in range(1001)]), 400, 1000)
        self.assertEnvelope(self.api("PUT", "contact/", raw=json.dumps({
            "key_id": "3", "contacts": [{"3": self.JANE}]}).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"}),
            400, 10001)
        self.assertEqual(self.account()["contacts"], [])

    def test_quirk_flags_and_ambiguous_key(self):
        self.sim.config({"accounts": {"demo_client": {
            "errors_as_list": True, "ids_as_numbers": True}}})
        resp = self.upsert([{"3": "a@example.com", "37": "+447700900001"},
                            {"3": "b@example.com", "37": "+447700900001"}])
        self.assertEqual(resp.json["data"], {"ids": [100000001, 100000002],
                                             "errors": []})
        resp = self.upsert([{"37": "+447700900001", "1": "X"}], key_id=37)
        self.assertEqual(list(resp.json["data"]["errors"]["+447700900001"]),
                         ["2010"])


class EmarsysEventTest(EmarsysBase):
    def setUp(self):
        super().setUp()
        self.upsert([{"3": "jane@example.com"}])

    def test_list_create_get(self):
        self.assertEqual(self.api("GET", "event").json["data"], [])
        resp = self.api("POST", "event", {"name": "gocertify_consent_intent"})
        body = self.assertEnvelope(resp, 200, 0)
        self.assertEqual(body["data"], {"id": "4000001",
                                        "name": "gocertify_consent_intent"})
        resp = self.api("POST", "event", {"name": "gocertify_consent_intent"})
        self.assertEnvelope(resp, 400, 5003, "")
        self.assertEqual(resp.json["replyText"],
                         "An external event with this name already exists")
        self.sim.config({"exists_code": 7001})
        self.assertEnvelope(self.api("POST", "event", {
            "name": "GOCERTIFY_CONSENT_INTENT"}), 400, 7001)
        self.sim.config({"accounts": {"demo_client": {"exists_code": 5003}}})
        self.assertEnvelope(self.api("POST", "event", {
            "name": "gocertify_consent_intent"}), 400, 5003)
        self.assertEnvelope(self.api("POST", "event", {}), 400, 5002)
        self.assertEnvelope(self.api("POST", "event", {"name": " "}), 400, 5002)
        self.assertEqual(self.api("GET", "event").json["data"],
                         [{"id": "4000001", "name": "gocertify_consent_intent"}])
        self.assertEnvelope(self.api("GET", "event/4000001"), 200, 0, {
            "id": "4000001", "name": "gocertify_consent_intent"})
        self.assertEnvelope(self.api("GET", "event/abc"), 400, 5004)
        self.assertEnvelope(self.api("GET", "event/999"), 400, 5001)
        self.sim.config({"accounts": {"demo_client": {"ids_as_numbers": True}}})
        self.assertEqual(self.api("POST", "event", {"name": "e2"})
                         .json["data"]["id"], 4000002)
        self.assertEnvelope(self.api("GET", "nope"), 404, 1)

    def trigger(self, event_id, body, **kw):
        return self.api("POST", "event/%s/trigger" % event_id, body, **kw)

    def test_trigger_validation(self):
        eid = self.new_event("gocertify_offer_claimed")
        ok = {"key_id": "3", "external_id": "jane@example.com"}
        self.assertEnvelope(self.trigger(999, ok), 400, 5001, "")
        self.assertEnvelope(self.trigger("x1", ok), 400, 5004)
        self.assertEnvelope(self.trigger(eid, {"external_id": "jane@example.com"}),
                            400, 2004)
        self.assertEnvelope(self.trigger(eid, {"key_id": "3"}), 400, 2005)
        self.assertEnvelope(self.trigger(eid, dict(ok, external_id="no@x.com")),
                            400, 2008)
        self.assertEnvelope(self.trigger(eid, dict(ok, data=[1])), 400, 5011)
        self.assertEnvelope(self.trigger(eid, dict(ok, data="{}")), 400, 5011)
        for bad in ("2025-01-31 12:00:00", "2025-01-31T12:00:00+00:00",
                    "2025-01-31T12:00Z", "2025-01-31T12:00:00.1Z",
                    "2025-13-31T12:00:00Z"):
            self.assertEnvelope(self.trigger(eid, dict(ok, event_time=bad)),
                                400, 5010)
        big = dict(ok, data={"pad": "x" * 1000001})
        self.assertEqual(self.trigger(eid, big).status, 400)
        self.assertEqual(self.account()["triggers"], [])

    def test_trigger_records_and_dedupes(self):
        eid = self.new_event("gocertify_offer_claimed")
        body = {"key_id": "3", "external_id": "jane@example.com",
                "trigger_id": "evt-1-gocertify_offer_claimed",
                "event_time": "2025-01-31T12:00:00.123Z",
                "data": {"global": {"brand_slug": "acme"}, "campaign_id": 1}}
        self.assertEnvelope(self.trigger(eid, body), 200, 0, {})
        self.assertEnvelope(self.trigger(eid, body), 200, 0, {})
        self.assertEnvelope(self.trigger(eid, dict(
            body, event_time="2025-01-31T12:00:00Z", trigger_id="evt-2")),
            200, 0, {})
        triggers = self.account()["triggers"]
        self.assertEqual(len(triggers), 2)
        first = triggers[0]
        self.assertEqual(first["event_id"], int(eid))
        self.assertEqual(first["event_name"], "gocertify_offer_claimed")
        self.assertEqual(first["external_id"], "jane@example.com")
        self.assertEqual(first["trigger_id"], "evt-1-gocertify_offer_claimed")
        self.assertEqual(first["data"], body["data"])
        self.assertEqual(first["event_time"], "2025-01-31T12:00:00.123Z")
        self.assertTrue(first["connected"])
        stats = self.sim.stats()
        self.assertEqual((stats["triggers"], stats["deduplicated_triggers"]),
                         (2, 1))

    def test_connection_to_programs(self):
        eid = self.new_event("gocertify_consent_intent")
        ok = {"key_id": "3", "external_id": "jane@example.com"}
        self.sim.config({"accounts": {"demo_client": {"connected_events": []}}})
        resp = self.trigger(eid, ok)
        self.assertEnvelope(resp, 400, 5005)
        self.assertEqual(resp.json["replyText"],
                         "No program or campaign is triggered.")
        self.assertFalse(self.account()["triggers"][0]["connected"])
        self.sim.config({"accounts": {"demo_client": {"interactions": True}}})
        self.assertEnvelope(self.trigger(eid, ok), 200, 0,
                            {"connectedTo": False})
        self.sim.config({"accounts": {"demo_client": {
            "connected_events": ["gocertify_consent_intent"]}}})
        data = self.trigger(eid, ok).json["data"]
        self.assertEqual(set(data["connectedTo"]),
                         {"email", "acProgram", "interactionsProgram"})

    def test_batch_trigger(self):
        eid = self.new_event("gocertify_offer_claimed")
        resp = self.trigger(eid, {"key_id": 3, "contacts": [
            {"external_id": "jane@example.com", "trigger_id": "b1",
             "data": {"a": 1}},
            {"external_id": "nobody@example.com"},
            {"external_id": "jane@example.com", "data": []}]})
        body = self.assertEnvelope(resp, 200, 0)
        self.assertEqual(body["data"]["ids"], ["100000001"])
        self.assertEqual(list(body["data"]["errors"]["nobody@example.com"]),
                         ["2008"])
        self.assertEqual(list(body["data"]["errors"]["jane@example.com"]),
                         ["5011"])


class EmarsysRateLimitTest(EmarsysBase):
    def test_per_account_window(self):
        # An hour-long window keeps the test away from a window boundary.
        self.sim.config({"rate_limit_per_minute": 3,
                         "rate_limit_window_s": 3600,
                         "accounts": {"b": {"secret": "sb"}}})
        if 3600 - time.time() % 3600 < 5:
            time.sleep(3600 - time.time() % 3600 + 0.1)
        tok = self.token()
        remaining = [self.api("GET", "field", token=tok)
                     .h("X-Ratelimit-Remaining") for _ in range(3)]
        self.assertEqual(remaining, ["2", "1", "0"])
        resp = self.api("GET", "event", token=tok)
        self.assertEnvelope(resp, 429, 7003, "")
        self.assertEqual(resp.json["replyText"], "Too many requests for this "
                         "account and resource within the last minute.")
        self.assertEqual(resp.h("X-RateLimit-Limit"), "3")
        self.assertEqual(resp.h("X-Ratelimit-Remaining"), "0")
        self.assertEqual(int(resp.h("X-RateLimit-Reset")),
                         (int(time.time()) // 3600 + 1) * 3600)
        self.assertIsNone(resp.h("Retry-After"))
        # The token endpoint and other accounts are not affected.
        self.token()
        self.assertEqual(self.api("GET", "field", token=self.token("b", "sb"))
                         .status, 200)
        self.assertEqual(self.sim.stats()["rate_limited"], 1)


class EmarsysFaultTest(EmarsysBase):
    def test_expire_tokens(self):
        tok = self.token()
        self.sim.fault("expire_tokens", path_prefix="/api/v3/contact")
        self.assertEqual(self.api("GET", "field", token=tok).status, 200)
        resp = self.upsert([{"3": "a@example.com"}], token=tok)
        self.assertEqual(resp.status, 401)
        self.assertEqual(self.account()["live_tokens"], 0)
        self.assertEqual(self.upsert([{"3": "a@example.com"}],
                                     token=self.token()).status, 200)

    def test_rate_limit_fault(self):
        self.sim.fault("rate_limit", reset_in=5, path_prefix="/api/v3/")
        resp = self.api("GET", "field", token=self.token())
        self.assertEnvelope(resp, 429, 7003)
        self.assertEqual(resp.h("X-Ratelimit-Remaining"), "0")
        self.assertAlmostEqual(int(resp.h("X-RateLimit-Reset")),
                               time.time() + 5, delta=1.5)
        self.assertEqual(self.api("GET", "field").status, 200)
        self.sim.fault("rate_limit", omit_headers=True, path_prefix="/api/v3/")
        resp = self.api("GET", "field")
        self.assertEqual(resp.status, 429)
        self.assertIsNone(resp.h("X-RateLimit-Reset"))

    def test_calls_before_reset_are_flagged(self):
        tok = self.token()
        self.sim.fault("rate_limit", reset_in=2, path_prefix="/api/v3/")
        self.assertEqual(self.api("GET", "field", token=tok).status, 429)
        self.assertEqual(self.api("GET", "field", token=tok).status, 200)
        self.token_req()                    # token endpoint: never flagged
        recs = self.sim.requests()
        self.assertEqual([r["before_reset"] for r in recs],
                         [False, False, True, False])
        self.assertEqual(recs[1]["hold_key"], "demo_client")
        self.assertGreater(recs[2]["early_ms"], 0)
        self.assertAlmostEqual(recs[1]["reset_at"], time.time() + 2,
                               delta=1.5)
        self.assertIsNotNone(recs[1]["done_mono"])
        self.assertGreaterEqual(recs[1]["done_mono"], recs[1]["mono"])
        self.assertEqual(self.sim.stats()["calls_before_reset"], 1)
        self.sim.reset()
        self.api("GET", "field", token=self.token())
        self.assertFalse(self.sim.requests()[-1]["before_reset"])

    def test_contact_error(self):
        self.sim.fault("contact_error")
        self.assertEqual(self.api("GET", "field").status, 200)  # not consumed
        resp = self.upsert([{"3": "a@example.com"}, {"3": "b@example.com"}])
        body = self.assertEnvelope(resp, 200, 0)
        self.assertEqual(body["data"]["ids"], [])
        self.assertEqual(body["data"]["errors"]["a@example.com"], {
            "2010": "More than one contact found with the external id: 3 - "
                    "a@example.com"})
        self.assertIn("b@example.com", body["data"]["errors"])
        self.sim.fault("contact_error", code=2008, text="gone")
        resp = self.upsert([{"3": "a@example.com"}])
        self.assertEqual(resp.json["data"]["errors"],
                         {"a@example.com": {"2008": "gone"}})
        self.assertEqual(self.account()["contacts"], [])
        self.assertEqual(len(self.upsert([{"3": "a@example.com"}])
                             .json["data"]["ids"]), 1)

    def test_contact_error_for_some_key_values(self):
        # Not consumed by a request without one of its key values.
        self.sim.fault("contact_error", code=2007, text="bad email",
                       key_values=["bad@example.com"])
        self.assertEqual(self.upsert([{"3": "a@example.com"}])
                         .json["data"]["errors"], {})
        resp = self.upsert([{"3": "a@example.com"},
                            {"3": "bad@example.com"},
                            {"3": "c@example.com"}])
        body = self.assertEnvelope(resp, 200, 0)
        self.assertEqual(body["data"]["errors"],
                         {"bad@example.com": {"2007": "bad email"}})
        self.assertEqual(body["data"]["ids"], ["100000001", "100000002"])
        self.assertEqual(sorted(c["fields"]["3"] for c in
                                self.account()["contacts"]),
                         ["a@example.com", "c@example.com"])
        self.assertEqual(self.sim.faults(), [])   # count 1 used
        # Without a key value: by position.
        self.sim.fault("contact_error", key_values=["x@example.com"])
        resp = self.upsert([{"3": "x@example.com"}, {"1": "no key"}])
        self.assertEqual(sorted(resp.json["data"]["errors"]),
                         ["1", "x@example.com"])
        self.assertEqual(self.sim.stats()["batch_duplicate_keys"], 0)
        self.upsert([{"3": "d@example.com"}, {"3": "d@example.com"}])
        self.assertEqual(self.sim.stats()["batch_duplicate_keys"], 1)

    def test_min_batch_and_key_values_filter_any_fault(self):
        self.sim.fault("status", status=400, min_batch=2,
                       body={"replyCode": 1000, "replyText": "batch",
                             "data": ""})
        self.assertEqual(self.upsert([{"3": "a@example.com"}]).status, 200)
        self.assertEnvelope(self.upsert([{"3": "a@example.com"},
                                         {"3": "b@example.com"}]), 400, 1000)
        self.assertEqual(self.upsert([{"3": "a@example.com"},
                                      {"3": "b@example.com"}]).status, 200)
        self.sim.fault("rate_limit", key_values=["b@example.com"])
        self.assertEqual(self.upsert([{"3": "a@example.com"}]).status, 200)
        self.assertEqual(self.upsert([{"3": "b@example.com"}]).status, 429)
        for bad in ({"min_batch": 0}, {"min_batch": "2"},
                    {"key_values": []}, {"key_values": "a@example.com"},
                    {"key_values": [""]}):
            with self.assertRaises(SimError):
                self.sim.fault("status", status=400, **bad)

    def test_trigger_error(self):
        self.upsert([{"3": "a@example.com"}, {"3": "b@example.com"}])
        eid = self.new_event("gocertify_consent_intent")
        path = "event/%s/trigger" % eid
        self.sim.fault("trigger_error", code=2010, count=-1,
                       key_values=["b@example.com"])
        # Not consumed by PUT contact.
        self.assertEqual(self.upsert([{"3": "b@example.com"}])
                         .json["data"]["errors"], {})
        resp = self.api("POST", path, {"key_id": "3", "contacts": [
            {"external_id": "a@example.com", "trigger_id": "t1"},
            {"external_id": "b@example.com", "trigger_id": "t2"}]})
        body = self.assertEnvelope(resp, 200, 0)
        self.assertEqual(body["data"]["ids"], ["100000001"])
        self.assertEqual(body["data"]["errors"], {"b@example.com": {
            "2010": "More than one contact found with the external id: 3 - "
                    "b@example.com"}})
        self.assertEnvelope(self.api("POST", path, {
            "key_id": "3", "external_id": "b@example.com"}), 400, 2010, "")
        self.assertEnvelope(self.api("POST", path, {
            "key_id": "3", "external_id": "a@example.com"}), 200, 0, {})
        self.assertEqual([t["external_id"] for t in
                          self.account()["triggers"]],
                         ["a@example.com", "a@example.com"])
        self.sim.clear_faults()
        self.sim.fault("trigger_error", code=2008, text="gone")
        resp = self.api("POST", path, {"key_id": "3", "contacts": [
            {"external_id": "a@example.com"}, {"data": {}}]})
        self.assertEqual(resp.json["data"]["errors"], {
            "a@example.com": {"2008": "gone"}, "1": {"2008": "gone"}})
        # codes: several contacts, each with its own code, in one fault.
        self.sim.fault("trigger_error", codes={"a@example.com": 2008,
                                               "b@example.com": 2010})
        resp = self.api("POST", path, {"key_id": "3", "contacts": [
            {"external_id": "a@example.com"},
            {"external_id": "b@example.com"}]})
        self.assertEqual({k: list(v) for k, v in
                          resp.json["data"]["errors"].items()},
                         {"a@example.com": ["2008"],
                          "b@example.com": ["2010"]})
        for bad in ({"codes": {}}, {"codes": {"a@example.com": "x"}},
                    {"codes": {"a@example.com": 1}, "code": 2},
                    {"codes": {"a@example.com": 1}, "key_values": ["b"]}):
            with self.assertRaises(SimError):
                self.sim.fault("trigger_error", **bad)
        with self.assertRaises(SimError):
            self.sim.fault("status", status=400,
                           codes={"a@example.com": 1})

    def test_batch_trigger_form(self):
        self.upsert([{"3": "a@example.com"}])
        eid = self.new_event("gocertify_consent_intent")
        path = "event/%s/trigger" % eid
        self.assertEnvelope(self.api("POST", path, {
            "key_id": "3", "contacts": []}), 400, 1006, "")
        self.assertEnvelope(self.api("POST", path, {
            "key_id": "3", "contacts": {}}), 400, 1001, "")
        for extra in ("external_id", "trigger_id", "data", "event_time"):
            self.assertEnvelope(self.api("POST", path, {
                "key_id": "3", extra: "a@example.com" if extra ==
                "external_id" else {},
                "contacts": [{"external_id": "a@example.com"}]}), 400, 1001)
        self.assertEnvelope(self.api("POST", path, {"contacts": [
            {"external_id": "a@example.com"}]}), 400, 2004)
        self.assertEnvelope(self.api("POST", path, {"key_id": "3",
            "contacts": [{"external_id": "a@example.com"}] * 1001}),
            400, 1000)
        big = {"key_id": "3", "contacts": [
            {"external_id": "a@example.com", "data": {"pad": "x" * 500000}},
            {"external_id": "a@example.com", "data": {"pad": "x" * 500000}}]}
        self.assertEnvelope(self.api("POST", path, big), 400, 10001)
        self.assertEqual(self.account()["triggers"], [])
        self.assertEqual(self.sim.stats()["batch_duplicate_keys"], 0)
        resp = self.api("POST", path, {"key_id": "3", "contacts": [
            {"external_id": "a@example.com", "trigger_id": "x"},
            {"external_id": "a@example.com", "trigger_id": "y"}]})
        self.assertEnvelope(resp, 200, 0)
        self.assertEqual(self.sim.stats()["batch_duplicate_keys"], 1)

    def test_upsert_size_limit(self):
        pad = "x" * 7990
        contacts = [{"3": "c%d@example.com" % i, "1": pad}
                    for i in range(1000)]
        resp = self.upsert(contacts)
        self.assertEnvelope(resp, 400, 10001, "")
        resp = self.upsert(contacts[:990])
        self.assertEnvelope(resp, 200, 0)
        self.assertEqual(len(resp.json["data"]["ids"]), 990)

    def test_create_race(self):
        self.sim.fault("create_race", count=2)
        resp = self.api("POST", "field", {"name": "gocertify_x_verified_at",
                                          "application_type": "date"})
        self.assertEnvelope(resp, 400, 9002, "")
        self.assertIn("gocertify_x_verified_at", [
            f["name"] for f in self.api("GET", "field").json["data"]])
        resp = self.api("POST", "event", {"name": "gocertify_offer_claimed"})
        self.assertEnvelope(resp, 400, 5003)
        self.assertEqual(len(self.api("GET", "event").json["data"]), 1)
        self.sim.fault("create_race", code=7001)
        self.assertEnvelope(self.api("POST", "event", {"name": "e2"}), 400, 7001)
        self.assertEqual(len(self.api("GET", "event").json["data"]), 2)

    def test_forget_ids(self):
        self.upsert([{"3": "jane@example.com"}])
        eid = self.new_event("gocertify_offer_claimed")
        self.api("POST", "field", {"name": "gocertify_y_verified_at",
                                   "application_type": "date"})
        fid = str(self.account()["fields"][-1]["id"])
        body = {"key_id": "3", "external_id": "jane@example.com"}
        self.sim.fault("forget_ids", method="POST", path_prefix="/api/v3/event/",
                       names=["gocertify_offer_claimed",
                              "gocertify_y_verified_at"])
        self.assertEqual(self.api("GET", "event").json["data"][0]["id"], eid)
        self.assertEnvelope(self.api("POST", "event/%s/trigger" % eid, body),
                            400, 5001)
        self.assertEqual(self.api("GET", "event").json["data"], [])
        resp = self.upsert([{"3": "jane@example.com", fid: "2025-01-31"}])
        self.assertEqual(list(resp.json["data"]["errors"]["jane@example.com"]),
                         ["2006"])
        self.assertNotEqual(self.new_event("gocertify_offer_claimed"), eid)


# ------------------------------------------------------------------ Yotpo --

class YotpoBase(SimTestCase):
    SIM = "YOTPO"
    AUTH = {"x-guid": "demo_guid", "x-api-key": "demo_api_key"}

    def call(self, method, path, body=None, headers=None, auth=True, **kw):
        h = dict(self.AUTH if auth is True else auth or {})
        h.update(headers or {})
        return self.conn.req(method, "/api/v2/" + path, body, h, **kw)

    def action(self, email="student@example.com", name="gocertify-students",
               **extra):
        body = {"type": "CustomAction", "customer_email": email,
                "action_name": name}
        body.update(extra)
        return self.call("POST", "actions", body)

    def setUp(self):
        super().setUp()
        # Most tests make bursts of calls; test_rate_limit sets 5 again.
        self.sim.config({"rate_limit_per_s": 1000})

    def merchant(self, guid="demo_guid"):
        return self.sim.state()["merchants"][guid]


class YotpoApiTest(YotpoBase):
    def test_auth(self):
        self.assertEqual(self.call("GET", "campaigns").status, 200)
        resp = self.call("GET", "campaigns", auth={
            "X-GUID": "demo_guid", "X-API-KEY": "demo_api_key"})
        self.assertEqual(resp.status, 200)
        for auth in ({}, {"x-guid": "demo_guid", "x-api-key": "nope"},
                     {"x-guid": "nope", "x-api-key": "demo_api_key"},
                     {"x-guid": "demo_guid"}):
            resp = self.call("GET", "campaigns", auth=auth)
            self.assertEqual((resp.status, resp.json),
                             (401, {"error": "unauthorized"}))
        self.assertEqual(self.sim.stats()["credentials_in_query"], 0)
        resp = self.conn.req("GET", "/api/v2/campaigns?guid=demo_guid&"
                             "api_key=demo_api_key")
        self.assertEqual(resp.status, 200)
        resp = self.call("POST", "actions", {
            "type": "CustomAction", "customer_email": "a@example.com",
            "action_name": "gocertify-students", "guid": "demo_guid",
            "api_key": "demo_api_key"}, auth=False)
        self.assertEqual(resp.status, 200)
        stats = self.sim.stats()
        self.assertEqual((stats["credentials_in_query"],
                          stats["credentials_in_body"], stats["unauthorized"]),
                         (1, 1, 4))
        self.assertEqual(self.sim.requests()[0]["merchant"], "demo_guid")

    def test_action_validation(self):
        good = {"type": "CustomAction", "customer_email": "a@example.com",
                "action_name": "gocertify-students"}
        resp = self.call("POST", "actions", raw=json.dumps(good).encode(),
                         headers={"Content-Type": "text/plain"})
        self.assertEqual(resp.status, 400)
        resp = self.call("POST", "actions", raw=b"{bad",
                         headers={"Content-Type": "application/json"})
        self.assertEqual(resp.status, 400)
        bad_bodies = [
            [good], dict(good, type="EnterHighestTier"),
            {k: v for k, v in good.items() if k != "type"},
            {k: v for k, v in good.items() if k != "customer_email"},
            dict(good, customer_email="not-an-email"),
            dict(good, customer_email=" a@example.com"),
            dict(good, customer_email="a@example"),
            {k: v for k, v in good.items() if k != "action_name"},
            dict(good, action_name=""),
            dict(good, created_at="yesterday"),
            dict(good, reward_points="10"),
            dict(good, reward_points=True),
            dict(good, history_title=5),
        ]
        for body in bad_bodies:
            resp = self.call("POST", "actions", body)
            self.assertEqual(resp.status, 400, body)
            self.assertIn("error", resp.json)
            self.assertEqual(resp.h("ratelimit-limit"), "1000")
        self.assertEqual(self.merchant()["customers"], {})

    def test_award_and_history(self):
        resp = self.action("Student@Example.com",
                           created_at="2025-01-31T12:00:00Z",
                           history_title="gc:tok-1")
        self.assertEqual((resp.status, resp.json), (200, {}))
        for name in ("ratelimit-limit", "ratelimit-remaining",
                     "ratelimit-reset"):
            self.assertIsNotNone(resp.h(name))
        self.assertEqual(self.action(name="gocertify-key-workers",
                                     reward_points=7).status, 200)
        merchant = self.merchant()
        cust = merchant["customers"]["student@example.com"]
        self.assertEqual(cust["points_balance"], 107)
        first, second = cust["history_items"]
        self.assertEqual(first["action"], "gc:tok-1")
        self.assertEqual(first["history_title"], "gc:tok-1")
        self.assertEqual(first["points"], 100)
        self.assertEqual(first["status"], "Approved")
        self.assertEqual(first["completed_at"], "2025-01-31T12:00:00Z")
        self.assertEqual(first["date"], "2025-01-31")
        self.assertEqual(second["action"],
                         "Custom action: gocertify-key-workers")
        self.assertIsNone(second["history_title"])
        self.assertEqual(second["completed_at"], second["created_at"])
        self.assertEqual([(a["action_name"], a["points"])
                          for a in merchant["awards"]],
                         [("gocertify-students", 100),
                          ("gocertify-key-workers", 7)])

        resp = self.call("GET", "customers?customer_email=STUDENT%40example.com"
                         "&with_history=true")
        self.assertEqual(resp.status, 200)
        body = resp.json
        self.assertEqual((body["email"], body["points_balance"],
                          body["points_earned"]),
                         ("student@example.com", 107, 107))
        self.assertIn("opt_in", body)
        self.assertEqual(body["history_items"], cust["history_items"])
        resp = self.call("GET", "customers?customer_email=student@example.com")
        self.assertNotIn("history_items", resp.json)

    def test_unknown_action_and_customer_id(self):
        self.assertEqual(self.action(name="gocertify-nobody").status, 200)
        self.assertEqual(self.sim.stats()["ignored_actions"], 1)
        self.assertEqual(self.merchant()["awards"], [])
        self.assertEqual(self.merchant()["ignored_actions"][0]["action_name"],
                         "gocertify-nobody")
        self.assertEqual(self.action(name="Gocertify-Students").status, 200)
        self.assertEqual(self.sim.stats()["ignored_actions"], 2)
        self.sim.config({"merchants": {"demo_guid": {"unknown_action": "404"}}})
        self.assertEqual(self.action(name="gocertify-nobody").status, 404)
        resp = self.call("POST", "actions", {
            "type": "CustomAction", "customer_id": "c-1",
            "action_name": "gocertify-students"})
        self.assertEqual(resp.status, 200)
        self.assertEqual(self.merchant()["customers"]["id:c-1"]
                         ["points_balance"], 100)
        self.assertEqual(self.call("GET", "customers?customer_id=c-1")
                         .json["points_balance"], 100)

    def test_customer_lookup_and_visibility_delay(self):
        resp = self.call("GET", "customers?customer_email=x@example.com")
        self.assertEqual((resp.status, resp.json),
                         (404, {"error": "customer not found"}))
        self.assertIsNotNone(resp.h("ratelimit-remaining"))
        self.assertEqual(self.call("GET", "customers").status, 400)
        self.sim.config({"visibility_delay_s": 0.4})
        self.action()
        path = "customers?customer_email=student@example.com&with_history=true"
        self.assertEqual(self.call("GET", path).status, 404)
        time.sleep(0.45)
        self.assertEqual(self.call("GET", path).json["points_balance"], 100)
        self.action(history_title="second")
        body = self.call("GET", path).json
        self.assertEqual((body["points_balance"], len(body["history_items"])),
                         (100, 1))
        time.sleep(0.45)
        body = self.call("GET", path).json
        self.assertEqual((body["points_balance"], len(body["history_items"])),
                         (200, 2))

    def test_campaigns(self):
        resp = self.call("GET", "campaigns")
        self.assertEqual(resp.status, 200)
        camps = resp.json
        self.assertEqual(sorted(c["reward_text"] for c in camps),
                         ["100 points", "250 points"])
        for camp in camps:
            self.assertEqual(camp["type"], "CustomActionCampaign")
            self.assertIsInstance(camp["id"], int)
            self.assertTrue(camp["title"])
            self.assertFalse([k for k in camp if "action" in k
                              and k != "min_actions_required"])
            self.assertNotIn("gocertify", json.dumps(camp))
        self.sim.config({"merchants": {"demo_guid": {"rules": {
            "gocertify-key-workers": None,
            "gocertify-seniors": {"points": 50, "title": "Seniors"}}}}})
        titles = {c["title"]: c["reward_text"]
                  for c in self.call("GET", "campaigns").json}
        self.assertEqual(titles["Seniors"], "50 points")
        self.assertEqual(len(titles), 2)
        self.assertEqual(self.call("GET", "nothing").status, 404)

    def test_rate_limit(self):
        self.sim.config({"rate_limit_per_s": 5,
                         "merchants": {"g2": {"api_key": "k2"}}})
        statuses = [self.call("GET", "campaigns") for _ in range(6)]
        self.assertEqual([r.status for r in statuses], [200] * 5 + [429])
        self.assertEqual([r.h("ratelimit-remaining") for r in statuses],
                         ["4", "3", "2", "1", "0", "0"])
        limited = statuses[-1]
        self.assertEqual(limited.h("ratelimit-limit"), "5")
        self.assertGreaterEqual(int(limited.h("ratelimit-reset")), 1)
        self.assertIsNone(limited.h("Retry-After"))
        # Per GUID: another merchant still gets through.
        self.assertEqual(self.call("GET", "campaigns", auth={
            "x-guid": "g2", "x-api-key": "k2"}).status, 200)
        self.sim.config({"retry_after": True})
        limited = self.call("GET", "campaigns")
        self.assertEqual(limited.status, 429)
        self.assertEqual(limited.h("Retry-After"),
                         limited.h("ratelimit-reset"))
        time.sleep(1.05)
        self.assertEqual(self.call("GET", "campaigns").status, 200)
        self.assertEqual(self.sim.stats()["rate_limited"], 2)

        # Fixed windows: start early in a wall-clock second.
        self.sim.config({"rate_limit_mode": "fixed", "rate_limit_per_s": 2,
                         "merchants": {"g3": {"api_key": "k3"}}})
        time.sleep(1.0 - time.time() % 1.0 + 0.01)
        auth = {"x-guid": "g3", "x-api-key": "k3"}
        codes = [self.call("GET", "campaigns", auth=auth).status
                 for _ in range(3)]
        self.assertEqual(codes, [200, 200, 429])

    def test_calls_before_reset_are_flagged(self):
        self.sim.fault("status", status=429, path_prefix="/api/v2/actions",
                       headers={"ratelimit-reset": "1", "Retry-After": "2"})
        self.assertEqual(self.action().status, 429)
        self.assertEqual(self.action().status, 200)
        # Another merchant is not held.
        self.sim.config({"merchants": {"g4": {"api_key": "k4"}}})
        self.call("GET", "campaigns", auth={"x-guid": "g4", "x-api-key": "k4"})
        recs = self.sim.requests()
        self.assertEqual([r["before_reset"] for r in recs],
                         [False, True, False])
        self.assertEqual(recs[0]["hold_key"], "demo_guid")
        # The longer of ratelimit-reset and Retry-After.
        self.assertGreater(recs[1]["early_ms"], 1000)
        self.assertEqual(self.sim.stats()["calls_before_reset"], 1)

    def test_status_faults(self):
        cases = [(423, {}, {"error": "locked"}),
                 (429, {"ratelimit-limit": "5", "ratelimit-remaining": "0",
                        "ratelimit-reset": "3"}, {"error": "slow down"}),
                 (500, {}, {"error": "boom"}),
                 (401, {}, {"error": "unauthorized"})]
        for status, headers, body in cases:
            self.sim.fault("status", status=status, headers=headers, body=body,
                           path_prefix="/api/v2/actions")
            resp = self.action()
            self.assertEqual((resp.status, resp.json), (status, body))
            for name, value in headers.items():
                self.assertEqual(resp.h(name), value)
            if not headers:
                self.assertIsNone(resp.h("ratelimit-limit"))
        self.assertEqual(self.merchant()["awards"], [])


# ------------------------------------------------ generic faults, both sims --

class GenericFaultsMixin:
    """Every generic fault kind, run against each simulator.  Subclasses
    provide apply() (one state-changing request on a given connection) and
    applied() (how many such requests took effect)."""

    PREFIX = None

    def fresh(self, timeout=5.0):
        return Conn(self.sim, timeout)

    def test_status(self):
        self.sim.fault("status", status=503, body={"x": 1},
                       headers={"Retry-After": "7"}, path_prefix=self.PREFIX)
        resp = self.apply(self.conn)
        self.assertEqual((resp.status, resp.json, resp.h("Retry-After")),
                         (503, {"x": 1}, "7"))
        self.assertEqual(self.applied(), 0)
        rec = self.sim.requests(path_prefix=self.PREFIX)[-1]
        self.assertEqual((rec["fault"], rec["applied"], rec["status"],
                          rec["outcome"]), ("status", False, 503, "replied"))
        # Text bodies are sent as they are (e.g. a proxy's HTML page).
        self.sim.fault("status", status=502, body="<html>bad gateway</html>",
                       headers={"Content-Type": "text/html"})
        resp = self.apply(self.conn)
        self.assertEqual((resp.status, resp.body, resp.h("Content-Type")),
                         (502, b"<html>bad gateway</html>", "text/html"))
        self.assertEqual(self.apply(self.conn).status, 200)
        self.assertEqual(self.applied(), 1)

    def test_delay(self):
        self.sim.fault("delay", ms=300, path_prefix=self.PREFIX)
        start = time.monotonic()
        self.assertEqual(self.apply(self.conn).status, 200)
        self.assertGreaterEqual(time.monotonic() - start, 0.3)
        self.assertEqual(self.applied(), 1)

    def test_drop(self):
        for extra in ({}, {"rst": True}):
            self.sim.fault("drop", path_prefix=self.PREFIX, **extra)
            conn = self.fresh()
            with self.assertRaises(DROPPED):
                self.apply(conn)
            conn.close()
        self.assertEqual(self.applied(), 0)
        recs = self.sim.requests(path_prefix=self.PREFIX)
        self.assertEqual([(r["outcome"], r["status"], r["applied"])
                          for r in recs], [("dropped", None, False)] * 2)

    def test_drop_after_apply(self):
        self.sim.fault("drop_after_apply", path_prefix=self.PREFIX)
        with self.assertRaises(DROPPED):
            self.apply(self.fresh())
        self.assertEqual(self.applied(), 1)
        rec = self.sim.requests(path_prefix=self.PREFIX)[-1]
        self.assertEqual((rec["outcome"], rec["applied"]), ("dropped", True))

    def test_delay_after_apply(self):
        self.sim.fault("delay_after_apply", ms=2000, path_prefix=self.PREFIX)
        conn = self.fresh(timeout=0.5)
        with self.assertRaises((socket.timeout, TimeoutError)):
            self.apply(conn)
        conn.close()
        # The effect happened although the client saw no reply.
        self.sim.wait_for(lambda c: self.applied() == 1)
        rec = self.sim.requests(path_prefix=self.PREFIX)[-1]
        self.assertEqual((rec["outcome"], rec["applied"]), ("pending", True))

    def test_status_after_apply(self):
        self.sim.fault("status_after_apply", status=500,
                       path_prefix=self.PREFIX)
        resp = self.apply(self.conn)
        self.assertEqual(resp.status, 500)
        self.assertIn("error" if self.SIM == "YOTPO" else "replyCode",
                      resp.json)
        self.assertEqual(self.applied(), 1)

    def test_count_matching_and_order(self):
        self.sim.fault("status", status=418, method="GET")   # never matches
        self.sim.fault("status", status=500, count=2, path_prefix=self.PREFIX)
        self.sim.fault("status", status=501, path_prefix=self.PREFIX)
        self.sim.fault("status", status=502, path_prefix="/elsewhere")
        codes = [self.apply(self.conn).status for _ in range(4)]
        self.assertEqual(codes, [500, 500, 501, 200])
        left = self.sim.faults()
        self.assertEqual([f["status"] for f in left], [418, 502])
        self.sim.fault("status", status=503, count=-1, path_prefix=self.PREFIX)
        self.assertEqual([self.apply(self.conn).status for _ in range(3)],
                         [503] * 3)
        self.assertEqual(self.sim.faults()[-1]["hits"], 3)
        self.sim.clear_faults()
        self.assertEqual(self.sim.faults(), [])
        self.assertEqual(self.apply(self.conn).status, 200)
        self.assertEqual(self.sim.stats()["faults_applied"], 6)

    def test_bad_fault_specs(self):
        for spec in ({"kind": "nope"}, {"kind": "status"},
                     {"kind": "status", "status": 999},
                     {"kind": "delay"}, {"kind": "drop", "count": 0},
                     {"kind": "drop", "count": "2"}):
            with self.assertRaises(SimError) as cm:
                self.sim.call("POST", "fault", spec)
            self.assertEqual(cm.exception.status, 400)
        self.assertEqual(self.sim.faults(), [])

    def test_keep_alive_recording_and_reset(self):
        for _ in range(3):
            self.assertEqual(self.apply(self.conn).status, 200)
        recs = self.sim.requests(path_prefix=self.PREFIX)
        self.assertEqual(len({r["connection"] for r in recs}), 1)
        stats = self.sim.stats()
        self.assertEqual(stats["connections"], 1)   # control calls not counted
        self.assertEqual(stats["requests"], 3 + self.SETUP_REQUESTS)
        rec = recs[0]
        self.assertEqual(rec["path"], self.PREFIX)
        self.assertEqual(rec["status"], 200)
        self.assertTrue(rec["applied"])
        self.assertIsInstance(rec["json"], dict)
        self.assertEqual(json.loads(rec["body"]), rec["json"])
        self.assertTrue(all(k == k.lower() for k in rec["headers"]))
        self.assertEqual(rec["headers"]["content-type"], "application/json")
        self.assertFalse(any(r["path"].startswith("/_sim")
                             for r in self.sim.requests()))

        # Connection: close is honoured, and the next request reconnects.
        resp = self.apply(self.conn, headers={"Connection": "close"})
        self.assertEqual(resp.h("Connection"), "close")
        self.conn.close()
        self.conn = self.fresh()
        self.apply(self.conn)
        self.assertEqual(self.sim.stats()["connections"], 2)

        self.sim.config({"some_knob": 1})
        self.sim.fault("drop")
        self.sim.reset()
        self.assertEqual(self.sim.requests(), [])
        self.assertEqual(self.sim.faults(), [])
        self.assertNotIn("some_knob", self.sim.config())
        self.assertEqual(self.sim.stats()["requests"], 0)
        self.assertEqual(self.applied(), 0)
        self.sim.config({"some_knob": 2})
        self.sim.reset(keep_config=True)
        self.assertEqual(self.sim.config()["some_knob"], 2)


class EmarsysGenericFaultTest(GenericFaultsMixin, EmarsysBase):
    PREFIX = "/api/v3/contact/"
    SETUP_REQUESTS = 1      # the token request, on the same connection
    n = 0

    def apply(self, conn, headers=None):
        EmarsysGenericFaultTest.n += 1
        return self.upsert([{"3": "u%d@example.com" % self.n}], conn=conn,
                           headers=headers)

    def applied(self):
        return len(self.account()["contacts"])

    def setUp(self):
        super().setUp()
        self._token = self.token()


class YotpoGenericFaultTest(GenericFaultsMixin, YotpoBase):
    PREFIX = "/api/v2/actions"
    SETUP_REQUESTS = 0

    def apply(self, conn, headers=None):
        h = dict(self.AUTH, **(headers or {}))
        return conn.req("POST", self.PREFIX, {
            "type": "CustomAction", "customer_email": "s@example.com",
            "action_name": "gocertify-students"}, h)

    def applied(self):
        return len(self.merchant()["awards"])


# --------------------------------------------------------------- lifetime --

class LifetimeTest(unittest.TestCase):
    def test_exits_when_stdin_closes(self):
        proc, port, sim = start_sim("yotpo", CERTS)
        self.assertTrue(sim.health()["ok"])
        proc.stdin.close()
        self.assertEqual(proc.wait(5), 0)

    def test_plain_http_and_max_seconds(self):
        proc, port, sim = start_sim("emarsys", CERTS, extra_args=[
            "--plain", "--max-seconds", "1",
            "--config-json", '{"token_ttl": 5, "accounts": {"x": {"secret": "y"}}}'])
        try:
            self.assertTrue(sim.base_url.startswith("http://"))
            self.assertEqual(sim.health()["kind"], "emarsys")
            # The startup config is what reset restores.
            sim.config({"token_ttl": 9})
            sim.reset()
            self.assertEqual(sim.config()["token_ttl"], 5)
            self.assertEqual(set(sim.state()["accounts"]), {"demo_client", "x"})
            self.assertEqual(proc.wait(5), 0)   # stdin still open
        finally:
            stop_sim(proc)

    def test_tls_is_verified(self):
        sim = EMARSYS[2]
        sim.reset()
        # A client that does not trust the test CA fails the handshake.
        bad = SimClient(sim.base_url, cafile=None)
        bad.ssl_context = ssl.create_default_context()
        with self.assertRaises(ssl.SSLCertVerificationError):
            bad.health()
        sim.wait_for(lambda c: c.stats()["tls_errors"] == 1)
        # Both names in the certificate verify.
        for host in ("127.0.0.1", "localhost"):
            self.assertTrue(SimClient("https://%s:%d" % (host, EMARSYS[1]),
                                      CERTS["ca"]).health()["ok"])

    def test_certs_are_reused(self):
        before = {k: os.stat(CERTS[k]).st_mtime_ns
                  for k in ("ca", "ca_key", "cert", "key")}
        self.assertEqual(make_certs(CERTS["dir"]), CERTS)
        self.assertEqual(before, {k: os.stat(CERTS[k]).st_mtime_ns
                                  for k in before})
        out = subprocess.run([sys.executable, os.path.join(HERE, "certs.py"),
                              CERTS["dir"]], check=True, capture_output=True)
        self.assertEqual(json.loads(out.stdout), CERTS)


if __name__ == "__main__":
    unittest.main()
