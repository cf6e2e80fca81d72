#!/usr/bin/env python3
"""SAP Emarsys Core API v3 simulator for gcrelay tests.

Follows /work/shared/reference/emarsys-api.md: OAuth client credentials at
POST /oauth2/token, the API under /api/v3/ with the reply envelope
{"replyCode","replyText","data"}, per-contact errors inside HTTP 200,
X-RateLimit-* headers (with the documented mixed-case X-Ratelimit-Remaining)
and 429/7003 throttling.  Several accounts (keyed by OAuth client id) each
have their own fields, contacts, external events and triggers.

Run: python3 emarsys_sim.py --cert server.pem --key server.key [--port N]
     [--portfile F] [--max-seconds S] [--config-json '{...}']
See README.md beside this file for the control API and fault kinds.
"""

import base64
import datetime
import json
import math
import os
import re
import secrets
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simbase                                          # noqa: E402
from simbase import ControlError, Reply, iso_now        # noqa: E402

TOKEN_PATH = "/oauth2/token"
API_PREFIX = "/api/v3/"

DEFAULT_ACCOUNT = {
    "secret": None,
    "sms_field_id": 12817,          # null: no SMS module, so no such field
    "sms_field_name": "Mobile SMS Opt-in",
    "interactions": False,          # decides 5005 vs connectedTo on trigger
    "ids_as_numbers": False,        # ids as JSON numbers instead of strings
    "errors_as_list": False,        # empty "errors" as [] (PHP quirk)
    "connected_events": None,       # null: every event is connected
    "exists_code": None,            # 5003 or 7001; null: top-level setting
    "denied_permissions": [],       # e.g. ["field.create"] -> 403
    "field_slots": None,            # max custom fields (9004); null: no cap
    "fields": [],                   # pre-existing custom fields
    "events": [],                   # pre-existing external events (names)
}

DEFAULT_CONFIG = {
    "accounts": {
        "demo_client": dict(DEFAULT_ACCOUNT, secret="demo_secret"),
    },
    "token_ttl": 3600,
    "omit_expires_in": False,
    "rate_limit_per_minute": 1000,
    # Length of the rate-limit window; 60 is the real minute.  Windows are
    # aligned on multiples of this length in unix time.
    "rate_limit_window_s": 60,
    "exists_code": 5003,            # event "already exists" code: 5003 | 7001
    "unauthorized_body": "oauth",   # "oauth" | "envelope" (body of a 401)
}

TRUE_FALSE = [(1, "True"), (2, "False")]

# (id, name, application_type, string_id, choices).  System fields exist in
# every account with the same ids (reference section 3.2).
SYSTEM_FIELDS = [
    (1, "First Name", "shorttext", "first_name", None),
    (2, "Last Name", "shorttext", "last_name", None),
    (3, "Email", "longtext", "email", None),
    (4, "Date of Birth", "birthdate", "birth_date", None),
    (5, "Gender", "singlechoice", "gender", [(1, "Male"), (2, "Female")]),
    (14, "Country", "singlechoice", "country",
     [(n, "Country %d" % n) for n in range(1, 250)]),
    (15, "Phone", "shorttext", "phone", None),
    (31, "Opt-In", "special", "optin", TRUE_FALSE),
    (35, "Language", "singlechoice", "language",
     [(n, "Language %d" % n) for n in range(1, 50)]),
    (37, "Mobile", "shorttext", "mobile", None),
    (46, "Salutation", "singlechoice", "salutation",
     [(1, "Mr."), (2, "Ms.")]),
]
CHOICE_TYPES = ("singlechoice", "special")
DATE_TYPES = ("date", "birthdate")
CREATABLE_TYPES = ("shorttext", "longtext", "largetext", "date", "url",
                   "numeric")
LANGUAGES = set("ar bg bp cn cz de dk el en es et fi fr he hi hr hu it jp ko "
                "lt lv mk mo mx nl no pl pr ro ru sc sk sl sr sv th tr uk "
                "vi".split())

FIRST_CUSTOM_FIELD_ID = 10001
FIRST_EVENT_ID = 4000001
FIRST_CONTACT_ID = 100000001
MAX_BATCH = 1000
MAX_CONTACT_PAYLOAD = 8000000       # PUT contact: 8 MB
MAX_TRIGGER_PAYLOAD = 1000000       # trigger: 1 MB (the smaller reading)

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
EVENT_TIME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{3})?Z$")
DIGITS_RE = re.compile(r"^[0-9]+$")
NUMERIC_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")

EXISTS_TEXT = {
    5003: "An external event with this name already exists",
    7001: "An external event with the requested name already exists",
    9002: "A field with this name already exists",
}
CONTACT_ERROR_TEXT = {
    2008: "No contact found with the external id: %s - %s",
    2010: "More than one contact found with the external id: %s - %s",
}


def envelope(code, text, data=""):
    return {"replyCode": code, "replyText": text, "data": data}


def fail(code, text, status=400):
    """A whole-request error: HTTP 400 (by default) with data ""."""
    return Reply(status, envelope(code, text))


def slug(name):
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def parse_id(value):
    """An id given as a JSON number or a numeric string -> int, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and DIGITS_RE.match(value):
        return int(value)
    return None


def valid_date(text):
    if not isinstance(text, str) or not DATE_RE.match(text):
        return False
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def valid_event_time(text):
    m = EVENT_TIME_RE.match(text) if isinstance(text, str) else None
    if not m:
        return False
    try:
        datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return False
    return True


def norm_value(value):
    """Stored values keep their JSON type; compare them as strings."""
    return value if isinstance(value, str) else json.dumps(value)


class EmarsysSim(simbase.Sim):
    kind = "emarsys"
    FAULT_KINDS = ("expire_tokens", "rate_limit", "contact_error",
                   "trigger_error", "create_race", "forget_ids")
    DEFAULT_CONFIG = DEFAULT_CONFIG
    COUNTERS = ("unauthorized", "rate_limited", "tokens_rejected",
                "deduplicated_triggers", "triggers", "cleared_values",
                "contacts_created", "contacts_updated", "fields_created",
                "events_created", "forbidden", "batch_duplicate_keys")

    # Routes under /api/v3/ (path without prefix and slashes at the ends):
    # (method, regex, handler, endpoint permission of reference 2.3).
    ROUTES = [
        ("GET", r"field", "field_list", "field.get"),
        ("GET", r"field/translate/([A-Za-z]{2})", "field_list", "field.list"),
        ("GET", r"field/([^/]+)/choice", "field_choices",
         "field.singlechoice.get"),
        ("GET", r"field/([^/]+)/choice/translate/([A-Za-z]{2})",
         "field_choices", "field.singlechoice.trans.list"),
        ("POST", r"field", "field_create", "field.create"),
        ("PUT", r"contact", "contact_update", "contact.update"),
        ("GET", r"event", "event_list", "externalevent.list"),
        ("POST", r"event", "event_create", "externalevent.create"),
        ("GET", r"event/([^/]+)", "event_get", "externalevent.list"),
        ("POST", r"event/([^/]+)/trigger", "event_trigger",
         "externalevent.trigger"),
    ]
    ROUTES = [(m, re.compile(p + r"\Z"), h, perm) for m, p, h, perm in ROUTES]

    # ---- state and config -------------------------------------------------

    def reset_state(self):
        self.accounts = {}
        self.tokens = {}                # token -> (client_id, expiry mono)
        self.tokens_issued = {}         # client_id -> count
        self.windows = {}               # client_id -> [window index, count]
        self.next_contact_id = FIRST_CONTACT_ID
        self.next_event_id = FIRST_EVENT_ID
        self._sync_accounts()

    def config_changed(self):
        self._sync_accounts()

    def _acct_cfg(self, cid):
        raw = (self.config.get("accounts") or {}).get(cid)
        if not isinstance(raw, dict):
            return None
        cfg = dict(DEFAULT_ACCOUNT)
        cfg.update(raw)
        if cfg["exists_code"] is None:
            cfg["exists_code"] = self.config.get("exists_code") or 5003
        return cfg

    def _sync_accounts(self):
        """Make the account states match the config: add new accounts, drop
        removed ones (and their tokens), and create configured SMS field,
        fields and events that are missing.  Never deletes other data."""
        wanted = [cid for cid, raw in (self.config.get("accounts") or {}).items()
                  if isinstance(raw, dict)]
        for cid in list(self.accounts):
            if cid not in wanted:
                del self.accounts[cid]
                self.tokens = {t: v for t, v in self.tokens.items()
                               if v[0] != cid}
        for cid in wanted:
            cfg = self._acct_cfg(cid)
            acct = self.accounts.get(cid)
            if acct is None:
                acct = self.accounts[cid] = self._new_account()
            self._sync_sms_field(acct, cfg)
            for spec in cfg.get("fields") or []:
                if self._field_by_name(acct, spec["name"]) is None:
                    self._add_field(acct, spec["name"],
                                    spec.get("application_type", "shorttext"),
                                    spec.get("id"))
            for spec in cfg.get("events") or []:
                name = spec["name"] if isinstance(spec, dict) else spec
                if self._event_by_name(acct, name) is None:
                    self._add_event(acct, name)

    def _new_account(self):
        fields = {}
        for fid, name, atype, sid, choices in SYSTEM_FIELDS:
            fields[fid] = {"id": fid, "name": name, "application_type": atype,
                           "string_id": sid, "system": True, "sms": False,
                           "choices": choices}
        return {"fields": fields, "contacts": {}, "events": {},
                "triggers": [], "trigger_ids": {},
                "next_field_id": FIRST_CUSTOM_FIELD_ID}

    def _sync_sms_field(self, acct, cfg):
        want_id, want_name = cfg["sms_field_id"], cfg["sms_field_name"]
        for f in list(acct["fields"].values()):
            if f["sms"] and (want_id is None or f["id"] != want_id
                             or f["name"] != want_name):
                del acct["fields"][f["id"]]
        if want_id is not None and want_id not in acct["fields"]:
            self._add_field(acct, want_name, "singlechoice", want_id,
                            choices=TRUE_FALSE, sms=True)

    def _add_field(self, acct, name, atype, fid=None, choices=None, sms=False):
        if fid is None:
            fid = acct["next_field_id"]
        # Ids only grow, so a forgotten (deleted) id is never handed out again.
        acct["next_field_id"] = max(acct["next_field_id"], fid + 1)
        acct["fields"][fid] = {"id": fid, "name": name,
                               "application_type": atype,
                               "string_id": slug(name), "system": False,
                               "sms": sms, "choices": choices}
        return acct["fields"][fid]

    def _add_event(self, acct, name):
        eid = self.next_event_id
        self.next_event_id += 1
        acct["events"][eid] = {"id": eid, "name": name, "created": iso_now()}
        acct["trigger_ids"][eid] = set()
        return acct["events"][eid]

    @staticmethod
    def _field_by_name(acct, name):
        """Names compare case-insensitively (a documented sim choice)."""
        for f in acct["fields"].values():
            if f["name"].lower() == name.lower():
                return f
        return None

    @staticmethod
    def _event_by_name(acct, name):
        for e in acct["events"].values():
            if e["name"].lower() == name.lower():
                return e
        return None

    def state(self):
        out = {}
        now = time.monotonic()
        for cid, acct in self.accounts.items():
            out[cid] = {
                "fields": [{k: f[k] for k in ("id", "name", "application_type",
                                             "string_id", "system")}
                           for f in sorted(acct["fields"].values(),
                                           key=lambda f: f["id"])],
                "contacts": list(acct["contacts"].values()),
                "events": [{"id": e["id"], "name": e["name"]}
                           for e in acct["events"].values()],
                "triggers": acct["triggers"],
                "live_tokens": sum(1 for c, exp in self.tokens.values()
                                   if c == cid and exp > now),
            }
        return {"accounts": out}

    def stats(self):
        out = super().stats()
        out["tokens_issued"] = dict(self.tokens_issued)
        return out

    # ---- faults -----------------------------------------------------------

    def check_fault(self, fault):
        kind = fault["kind"]
        if kind == "forget_ids":
            names = fault.get("names")
            if not isinstance(names, list) or not names \
                    or not all(isinstance(n, str) for n in names):
                raise ControlError("forget_ids needs names: [field or event "
                                   "names]")
        if kind == "rate_limit":
            if not isinstance(fault.get("reset_in", 1), (int, float)):
                raise ControlError("reset_in must be a number of seconds")
        if kind in ("contact_error", "trigger_error", "create_race") \
                and "code" in fault:
            if parse_id(fault["code"]) is None:
                raise ControlError("code must be an integer reply code")

    def check_fault_filter(self, fault):
        """min_batch and key_values narrow down any fault kind."""
        if "codes" in fault:
            codes = fault["codes"]
            if fault["kind"] not in ("contact_error", "trigger_error") \
                    or not isinstance(codes, dict) or not codes \
                    or "key_values" in fault or "code" in fault \
                    or any(parse_id(c) is None for c in codes.values()):
                raise ControlError("codes ({key value: reply code}) is for "
                                   "contact_error and trigger_error, "
                                   "instead of code and key_values")
        if "min_batch" in fault:
            n = fault["min_batch"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ControlError("min_batch must be a positive integer")
        if "key_values" in fault:
            kv = fault["key_values"]
            if not isinstance(kv, list) or not kv \
                    or not all(isinstance(v, str) and v for v in kv):
                raise ControlError("key_values must be a list of key values "
                                   "(non-empty strings)")

    def fault_filter(self, fault, req):
        # min_batch: only a batch (a "contacts" array) of at least that
        # many contacts.  key_values: only a request carrying one of those
        # contacts (PUT contact: the key field's value; trigger:
        # external_id).
        if "min_batch" in fault:
            body = req.json if isinstance(req.json, dict) else {}
            items = body.get("contacts")
            if not isinstance(items, list) or len(items) < fault["min_batch"]:
                return False
        wanted = fault.get("key_values") or list(fault.get("codes") or ())
        if wanted and not set(wanted) & set(self._request_keys(req)):
            return False
        return True

    def _request_keys(self, req):
        """The contacts' key values a PUT contact or trigger carries."""
        body = req.json if isinstance(req.json, dict) else {}
        handler = self._route(req)[0]
        items = body.get("contacts")
        if handler == "contact_update":
            key = str(parse_id(body.get("key_id", "3")))
            return [norm_value(c.get(key)) for c in items or []
                    if isinstance(c, dict) and c.get(key) is not None] \
                if isinstance(items, list) else []
        if handler == "event_trigger":
            if isinstance(items, list):
                return [c.get("external_id") for c in items
                        if isinstance(c, dict)
                        and isinstance(c.get("external_id"), str)]
            ext = body.get("external_id")
            return [ext] if isinstance(ext, str) else []
        return []

    def fault_applies(self, fault, req):
        # contact_error, trigger_error and create_race only make sense on
        # their endpoints; they are not consumed by other requests.
        handler = self._route(req)[0]
        if fault["kind"] == "contact_error":
            return handler == "contact_update"
        if fault["kind"] == "trigger_error":
            return handler == "event_trigger"
        if fault["kind"] == "create_race":
            return handler in ("field_create", "event_create")
        return True

    @staticmethod
    def _fault_hits(fault, key):
        """Whether a contact_error / trigger_error fault rejects the
        contact with this key value (all of them without key_values)."""
        if "codes" in fault:
            return key in fault["codes"]
        return "key_values" not in fault or key in fault["key_values"]

    @staticmethod
    def _fault_error(fault, key_id, key):
        if "codes" in fault:
            code = parse_id(fault["codes"][key])
        else:
            code = parse_id(fault.get("code", 2010))
        text = fault.get("text") or CONTACT_ERROR_TEXT.get(
            code, "Simulated contact error %s - %s") % (key_id, key)
        return code, text

    def default_fault_body(self, status):
        if status == 429:
            return envelope(7003, "Too many requests for this account and "
                            "resource within the last minute.")
        return envelope(1, "Simulated fault (HTTP %d)" % status)

    def _forget(self, fault):
        """forget_ids: delete fields and events with the given names, in one
        account (fault "account") or all, so their old ids become unknown."""
        names = {n.lower() for n in fault["names"]}
        for cid, acct in self.accounts.items():
            if fault.get("account") not in (None, cid):
                continue
            for fid in [f["id"] for f in acct["fields"].values()
                        if f["name"].lower() in names]:
                del acct["fields"][fid]
            for eid in [e["id"] for e in acct["events"].values()
                        if e["name"].lower() in names]:
                del acct["events"][eid]
                acct["trigger_ids"].pop(eid, None)

    # ---- 429 holds (see simbase.record_request) ---------------------------

    def hold_key(self, req):
        if not req.path.startswith(API_PREFIX):
            return None         # the token endpoint is not rate limited
        return self._bearer_account(req)

    def hold_until(self, reply):
        for name, value in reply.headers:
            if name.lower() == "x-ratelimit-reset":
                try:
                    return float(value)     # unix seconds
                except ValueError:
                    return None
        return None

    # ---- dispatch ---------------------------------------------------------

    def handle(self, req, fault):
        kind = fault["kind"] if fault else None
        if kind == "expire_tokens":
            self.tokens.clear()
        elif kind == "forget_ids":
            self._forget(fault)
        elif kind == "rate_limit":
            return self._fault_rate_limited(fault)
        if req.path.rstrip("/") == TOKEN_PATH:
            return self._token(req)
        if req.path.startswith(API_PREFIX):
            return self._api(req, fault)
        return Reply(404, envelope(1, "Not Found"))

    def _route(self, req):
        """(handler name, args, permission) for an API request, or Nones."""
        if not req.path.startswith(API_PREFIX):
            return None, (), None
        rest = req.path[len(API_PREFIX):].strip("/")
        for method, regex, handler, perm in self.ROUTES:
            m = regex.match(rest)
            if m and method == req.method:
                return handler, m.groups(), perm
        return None, (), None

    # ---- OAuth token endpoint ---------------------------------------------

    def _token(self, req):
        def oauth_error(status, error, desc=None):
            body = {"error": error}
            if desc:
                body["error_description"] = desc
            return Reply(status, body, [("Cache-Control", "no-store")])

        if req.method != "POST":
            return oauth_error(405, "invalid_request", "POST required")
        if req.content_type() != "application/x-www-form-urlencoded":
            return oauth_error(400, "invalid_request",
                               "Content-Type must be "
                               "application/x-www-form-urlencoded")
        # Client authentication: HTTP Basic only (client_secret_basic).
        # Credentials in the form body are not accepted (reference 2.1).
        cid, secret = None, None
        auth = req.headers.get("authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                cid, _, secret = base64.b64decode(
                    auth[6:].strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                cid = None
        cfg = self._acct_cfg(cid) if cid else None
        if cfg is None or cfg["secret"] is None or secret != cfg["secret"]:
            self.count("tokens_rejected")
            reply = oauth_error(401, "invalid_client",
                                "Client authentication failed")
            return reply.header("WWW-Authenticate", 'Basic realm="emarsys"')
        req.record["account"] = cid
        form = dict(urllib.parse.parse_qsl(req.text, keep_blank_values=True))
        grant = form.get("grant_type")
        if not grant:
            return oauth_error(400, "invalid_request",
                               "grant_type is required")
        if grant != "client_credentials":
            return oauth_error(400, "unsupported_grant_type")

        ttl = float(self.config.get("token_ttl") or 3600)
        token = secrets.token_urlsafe(32)
        self.tokens[token] = (cid, time.monotonic() + ttl)
        self.tokens_issued[cid] = self.tokens_issued.get(cid, 0) + 1
        body = {"access_token": token, "token_type": "Bearer"}
        if not self.config.get("omit_expires_in"):
            body["expires_in"] = int(math.ceil(ttl))
        return Reply(200, body, [("Cache-Control", "no-store"),
                                 ("Pragma", "no-cache")])

    # ---- API --------------------------------------------------------------

    def _bearer_account(self, req):
        auth = req.headers.get("authorization", "")
        if auth[:7].lower() != "bearer ":
            return None
        entry = self.tokens.get(auth[7:].strip())
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0] if entry[0] in self.accounts else None

    def _unauthorized(self):
        self.count("unauthorized")
        if self.config.get("unauthorized_body") == "envelope":
            body = envelope(1, "Unauthorized")
        else:
            body = {"error": "invalid_token",
                    "error_description": "The access token is missing, "
                                         "invalid or expired"}
        return Reply(401, body, [("WWW-Authenticate",
                                  'Bearer error="invalid_token"')])

    def _rate_headers(self, limit, remaining, reset):
        # Exactly the documented spelling, mixed case included.
        return [("X-RateLimit-Limit", limit),
                ("X-Ratelimit-Remaining", remaining),
                ("X-RateLimit-Reset", reset)]

    def _rate_check(self, cid):
        """Count one request against the account's window.  Returns
        (allowed, rate-limit headers)."""
        limit = int(self.config.get("rate_limit_per_minute") or 0)
        window = float(self.config.get("rate_limit_window_s") or 60)
        idx = int(time.time() // window)
        slot = self.windows.get(cid)
        if slot is None or slot[0] != idx:
            slot = self.windows[cid] = [idx, 0]
        slot[1] += 1
        reset = int(math.ceil((idx + 1) * window))
        headers = self._rate_headers(limit, max(0, limit - slot[1]), reset)
        return slot[1] <= limit, headers

    def _too_many(self, headers):
        self.count("rate_limited")
        return Reply(429, envelope(7003, "Too many requests for this account "
                                   "and resource within the last minute."),
                     headers)

    def _fault_rate_limited(self, fault):
        headers = []
        if not fault.get("omit_headers"):
            limit = int(self.config.get("rate_limit_per_minute") or 0)
            reset = int(math.ceil(time.time() + fault.get("reset_in", 1)))
            headers = self._rate_headers(limit, 0, reset)
        return self._too_many(headers)

    def _api(self, req, fault):
        cid = self._bearer_account(req)
        if cid is None:
            return self._unauthorized()
        req.record["account"] = cid
        acct, cfg = self.accounts[cid], self._acct_cfg(cid)
        allowed, headers = self._rate_check(cid)
        if not allowed:
            return self._too_many(headers)
        handler, args, perm = self._route(req)
        if handler is None:
            reply = Reply(404, envelope(1, "Not Found"))
        elif perm in (cfg.get("denied_permissions") or []):
            # The real 403 body is undocumented; the status is what counts.
            self.count("forbidden")
            reply = Reply(403, envelope(1, "Forbidden"))
        else:
            reply = getattr(self, "_" + handler)(req, acct, cfg, fault, *args)
        reply.headers.extend(headers)
        return reply

    def _body_object(self, req, limit):
        """The JSON object body of a PUT/POST, or (None, error reply)."""
        if len(req.raw) > limit:
            return None, fail(10001, "Payload too large: the limit is %d "
                              "bytes" % limit)
        if req.content_type() != "application/json":
            return None, fail(10001, "Invalid Content-Type: "
                              "application/json is required")
        if not req.json_ok:
            return None, fail(1010, "Invalid JSON payload")
        if not isinstance(req.json, dict):
            return None, fail(1001, "Invalid parameters: the payload must be "
                              "a JSON object")
        return req.json, None

    def _id_out(self, cfg, value):
        return value if cfg["ids_as_numbers"] else str(value)

    def _errors_out(self, cfg, errors):
        return [] if not errors and cfg["errors_as_list"] else errors

    # ---- fields -----------------------------------------------------------

    def _field_list(self, req, acct, cfg, fault, lang="en"):
        if lang.lower() not in LANGUAGES:
            return fail(1001, "Invalid language: %s" % lang)
        # Names are served in English whatever the language.
        data = [{"id": self._id_out(cfg, f["id"]), "name": f["name"],
                 "application_type": f["application_type"],
                 "string_id": f["string_id"]}
                for f in sorted(acct["fields"].values(), key=lambda f: f["id"])]
        return Reply(200, envelope(0, "OK", data))

    def _field_choices(self, req, acct, cfg, fault, field_id, lang="en"):
        fid = parse_id(field_id)
        field = acct["fields"].get(fid)
        if field is None or not field["choices"]:
            return fail(2006, "Invalid field id: %s" % field_id)
        data = [{"id": self._id_out(cfg, n), "choice": text,
                 "bit_position": self._id_out(cfg, n)}
                for n, text in field["choices"]]
        return Reply(200, envelope(0, "OK", data))

    def _field_create(self, req, acct, cfg, fault):
        body, err = self._body_object(req, MAX_CONTACT_PAYLOAD)
        if err:
            return err
        name, atype = body.get("name"), body.get("application_type")
        if not isinstance(name, str) or not name.strip() \
                or not isinstance(atype, str) or not atype:
            return fail(9005, "Parameters name and application_type are "
                        "required")
        if atype not in CREATABLE_TYPES:
            return fail(9006, "This type of field cannot be created via the "
                        "API")
        reserved = {n.lower() for _, n, _, _, _ in SYSTEM_FIELDS} \
            | {s for _, _, _, s, _ in SYSTEM_FIELDS}
        if name.lower() in reserved:
            return fail(9003, "Reserved name")
        if self._field_by_name(acct, name) is not None:
            return fail(9002, EXISTS_TEXT[9002])
        if fault and fault["kind"] == "create_race":
            # Another worker "won": the field exists, this call loses.
            self._add_field(acct, name, atype)
            self.count("fields_created")
            code = parse_id(fault.get("code", 9002))
            return fail(code, EXISTS_TEXT.get(code, EXISTS_TEXT[9002]))
        slots = cfg.get("field_slots")
        if slots is not None and sum(
                1 for f in acct["fields"].values() if not f["system"]) >= slots:
            return fail(9004, "No more slots to create the field")
        field = self._add_field(acct, name, atype)
        self.count("fields_created")
        return Reply(200, envelope(0, "OK", {"id": field["id"]}))

    # ---- contacts ---------------------------------------------------------

    def _contact_update(self, req, acct, cfg, fault):
        body, err = self._body_object(req, MAX_CONTACT_PAYLOAD)
        if err:
            return err
        # key_id defaults to 3 (email), as documented.
        key_id = parse_id(body.get("key_id", "3"))
        if key_id is None or key_id not in acct["fields"]:
            return fail(2004, "Invalid key field id: %s"
                        % json.dumps(body.get("key_id")))
        contacts = body.get("contacts")
        if not isinstance(contacts, list):
            return fail(1001, "Invalid parameters: contacts must be an array")
        if len(contacts) > MAX_BATCH:
            return fail(1000, "Batch size exceeded: at most %d contacts per "
                        "request" % MAX_BATCH)
        if not contacts:
            return fail(1006, "Empty parameter: contacts")
        if not all(isinstance(c, dict) for c in contacts):
            return fail(1001, "Invalid parameters: every contact must be an "
                        "object")
        create = req.query.get("create_if_not_exists") == "1"
        self._count_duplicates([c.get(str(key_id)) for c in contacts])
        ids, errors = [], {}
        for index, contact in enumerate(contacts):
            key = contact.get(str(key_id))
            if fault and fault["kind"] == "contact_error" and \
                    self._fault_hits(fault, norm_value(key)):
                code, text = self._fault_error(fault, key_id, key)
                errors[str(index) if key in (None, "") else
                       norm_value(key)] = {str(code): text}
                continue
            cid, error = self._upsert_one(acct, key_id, index, contact,
                                          create)
            if error:
                errors[cid] = {str(error[0]): error[1]}
            else:
                ids.append(self._id_out(cfg, cid))
        return Reply(200, envelope(0, "OK", {
            "ids": ids, "errors": self._errors_out(cfg, errors)}))

    def _count_duplicates(self, keys):
        """A key value twice in one batch: its entry in data.errors could
        belong to either contact (stat batch_duplicate_keys)."""
        seen = set()
        for key in keys:
            if key is None or key == "" or isinstance(key, (dict, list)):
                continue
            key = norm_value(key)
            if key in seen:
                self.count("batch_duplicate_keys")
            seen.add(key)

    def _upsert_one(self, acct, key_id, index, contact, create):
        """Create or update one contact.  Returns (contact id, None) or
        (errors key, (code, text)); a contact with an error is not touched.
        Errors are keyed by the key value, or by the contact's position in
        the batch when the key value is missing."""
        key = str(key_id)
        value = contact.get(key)
        if value is None or value == "" or isinstance(value,
                                                      (bool, dict, list)):
            return str(index), (2005, "No value provided for key field: %s"
                                % key_id)
        kval = norm_value(value)
        for name in contact:
            fid = parse_id(name) if isinstance(name, str) else None
            if fid is None or fid not in acct["fields"]:
                return kval, (2006, "Invalid field id: %s" % name)
        for name, val in contact.items():
            problem = check_value(acct["fields"][int(name)], val)
            if problem:
                return kval, problem
        found = [c for c in acct["contacts"].values()
                 if key in c["fields"] and norm_value(c["fields"][key]) == kval]
        if len(found) > 1:
            return kval, (2010, CONTACT_ERROR_TEXT[2010] % (key_id, kval))
        if not found and not create:
            return kval, (2008, CONTACT_ERROR_TEXT[2008] % (key_id, kval))
        if found:
            record = found[0]
            self.count("contacts_updated")
        else:
            record = {"id": self.next_contact_id, "fields": {}, "cleared": [],
                      "writes": 0, "created_at": iso_now()}
            self.next_contact_id += 1
            acct["contacts"][record["id"]] = record
            self.count("contacts_created")
        for name, val in contact.items():
            name = str(int(name))       # canonical id string ("03" -> "3")
            if val == "":
                # An empty string clears the field; keep a trace because
                # gcrelay must never send one.
                record["fields"].pop(name, None)
                record["cleared"].append(name)
                self.count("cleared_values")
            else:
                record["fields"][name] = val
        record["writes"] += 1
        record["updated_at"] = iso_now()
        return record["id"], None

    # ---- events -----------------------------------------------------------

    def _event_out(self, cfg, event):
        return {"id": self._id_out(cfg, event["id"]), "name": event["name"]}

    def _event_list(self, req, acct, cfg, fault):
        data = [self._event_out(cfg, e) for e in acct["events"].values()]
        return Reply(200, envelope(0, "OK", data))

    def _event_get(self, req, acct, cfg, fault, event_id):
        event, err = self._find_event(acct, event_id)
        return err or Reply(200, envelope(0, "OK", self._event_out(cfg, event)))

    def _find_event(self, acct, event_id):
        eid = parse_id(event_id)
        if eid is None:
            return None, fail(5004, "Event ID is invalid")
        if eid not in acct["events"]:
            return None, fail(5001, "No event found with the specified ID")
        return acct["events"][eid], None

    def _event_create(self, req, acct, cfg, fault):
        body, err = self._body_object(req, MAX_CONTACT_PAYLOAD)
        if err:
            return err
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            return fail(5002, "Parameter name is required")
        code = cfg["exists_code"]
        if self._event_by_name(acct, name) is not None:
            return fail(code, EXISTS_TEXT.get(code, EXISTS_TEXT[5003]))
        if fault and fault["kind"] == "create_race":
            self._add_event(acct, name)
            self.count("events_created")
            code = parse_id(fault.get("code", code))
            return fail(code, EXISTS_TEXT.get(code, EXISTS_TEXT[5003]))
        event = self._add_event(acct, name)
        self.count("events_created")
        return Reply(200, envelope(0, "OK", self._event_out(cfg, event)))

    def _event_trigger(self, req, acct, cfg, fault, event_id):
        if len(req.raw) > MAX_TRIGGER_PAYLOAD:
            return fail(10001, "Payload too large: events are limited to "
                        "1 MB")
        event, err = self._find_event(acct, event_id)
        if err:
            return err
        body, err = self._body_object(req, MAX_TRIGGER_PAYLOAD)
        if err:
            return err
        key_id = parse_id(body.get("key_id"))
        if key_id is None or key_id not in acct["fields"]:
            return fail(2004, "Invalid key field id: %s"
                        % json.dumps(body.get("key_id")))
        connected = cfg["connected_events"] is None \
            or event["name"] in cfg["connected_events"]
        if "contacts" in body:
            return self._trigger_batch(req, acct, cfg, event, key_id, body,
                                       connected, fault)
        if fault and fault["kind"] == "trigger_error" and \
                self._fault_hits(fault, body.get("external_id")):
            return fail(*self._fault_error(fault, key_id,
                                           body.get("external_id")))
        problem, _ = self._trigger_one(req, acct, event, key_id, body,
                                       connected)
        if problem:
            return fail(*problem)
        if cfg["interactions"]:
            return Reply(200, envelope(0, "OK",
                                       {"connectedTo": connected_to(connected)}))
        if not connected:
            return fail(5005, "No program or campaign is triggered.")
        return Reply(200, envelope(0, "OK", {}))

    def _trigger_batch(self, req, acct, cfg, event, key_id, body, connected,
                       fault):
        items = body["contacts"]
        if not isinstance(items, list):
            return fail(1001, "Invalid parameters: contacts must be an array")
        if len(items) > MAX_BATCH:
            return fail(1000, "Batch size exceeded: at most %d contacts per "
                        "request" % MAX_BATCH)
        if not items:
            return fail(1006, "Empty parameter: contacts")
        # The per-contact members belong in the items of a batch (3.4);
        # at the top level beside contacts they would be ambiguous.
        mixed = sorted(set(body) & {"external_id", "trigger_id", "data",
                                    "event_time"})
        if mixed:
            return fail(1001, "Invalid parameters: %s belong in each item of "
                        "contacts" % ", ".join(mixed))
        self._count_duplicates([i.get("external_id") for i in items
                                if isinstance(i, dict)])
        ids, errors = [], {}
        for index, item in enumerate(items):
            item = item if isinstance(item, dict) else {}
            ext = item.get("external_id")
            if fault and fault["kind"] == "trigger_error" and \
                    self._fault_hits(fault, ext):
                problem, contact_id = self._fault_error(fault, key_id,
                                                        ext), None
            else:
                problem, contact_id = self._trigger_one(
                    req, acct, event, key_id, item, connected)
            if problem:
                errors[ext if isinstance(ext, str) and ext else str(index)] = \
                    {str(problem[0]): problem[1]}
            else:
                ids.append(self._id_out(cfg, contact_id))
        if not cfg["interactions"] and not connected:
            return fail(5005, "No program or campaign is triggered.")
        data = {"ids": ids, "errors": self._errors_out(cfg, errors)}
        if cfg["interactions"]:
            data["connectedTo"] = connected_to(connected)
        return Reply(200, envelope(0, "OK", data))

    def _trigger_one(self, req, acct, event, key_id, item, connected):
        """Validate and record one trigger.  Returns (None, contact id) or
        ((code, text), None).  A trigger_id already seen for this event is
        accepted but not recorded again (deduplicated)."""
        ext = item.get("external_id")
        if not isinstance(ext, str) or not ext:
            return (2005, "No value provided for key field: external_id"), None
        if "data" in item and not isinstance(item["data"], dict):
            return (5011, "Event data is not an object"), None
        if "event_time" in item and not valid_event_time(item["event_time"]):
            return (5010, "Invalid event_time: use YYYY-MM-DDTHH:MM:SSZ or "
                    "YYYY-MM-DDTHH:MM:SS.mmmZ"), None
        trigger_id = item.get("trigger_id")
        if trigger_id is not None and not isinstance(trigger_id, str):
            return (10001, "trigger_id must be a string"), None
        key = str(key_id)
        found = [c for c in acct["contacts"].values()
                 if key in c["fields"] and norm_value(c["fields"][key]) == ext]
        if not found:
            return (2008, CONTACT_ERROR_TEXT[2008] % (key_id, ext)), None
        if len(found) > 1:
            return (2010, CONTACT_ERROR_TEXT[2010] % (key_id, ext)), None
        contact_id = found[0]["id"]
        seen = acct["trigger_ids"].setdefault(event["id"], set())
        if trigger_id is not None and trigger_id in seen:
            self.count("deduplicated_triggers")
            return None, contact_id
        if trigger_id is not None:
            seen.add(trigger_id)
        self.count("triggers")
        acct["triggers"].append({
            "seq": req.record["seq"], "event_id": event["id"],
            "event_name": event["name"], "key_id": key_id,
            "external_id": ext, "contact_id": contact_id,
            "trigger_id": trigger_id, "data": item.get("data"),
            "event_time": item.get("event_time"), "connected": connected,
            "time": iso_now()})
        return None, contact_id


def connected_to(connected):
    """data.connectedTo of an Interactions account (reference 3.4)."""
    if not connected:
        return False
    return {"email": False, "acProgram": True, "interactionsProgram": True}


def check_value(field, value):
    """Validate one contact field value.  Returns None or (2007, text)."""
    fid, atype = field["id"], field["application_type"]
    if value is None or isinstance(value, (bool, list, dict)):
        return 2007, "Invalid value for field id %d: %s" % (
            fid, json.dumps(value))
    if value == "":
        return None                     # clears the field
    if atype in DATE_TYPES:
        if not valid_date(value):
            return 2007, ("Invalid date format for field id %d. The valid "
                          "date format is YYYY-MM-DD" % fid)
    elif atype in CHOICE_TYPES:
        choice = parse_id(value)
        if choice is None or choice not in {n for n, _ in field["choices"]}:
            return 2007, ("Invalid value for field id %d: %s is not a choice "
                          "id" % (fid, json.dumps(value)))
    elif atype == "numeric":
        if not isinstance(value, (int, float)) and not (
                isinstance(value, str) and NUMERIC_RE.match(value)):
            return 2007, "Invalid value for field id %d: not numeric" % fid
    elif not isinstance(value, (str, int, float)):
        return 2007, "Invalid value for field id %d" % fid
    return None


if __name__ == "__main__":
    sys.exit(simbase.main(EmarsysSim))
