#!/usr/bin/env python3
"""Yotpo Loyalty & Referrals API v2 simulator for gcrelay tests.

Follows /work/shared/reference/yotpo-api.md: x-guid / x-api-key auth,
POST /api/v2/actions (Custom Action), GET /api/v2/customers (404 until the
asynchronous write is visible), GET /api/v2/campaigns, per-GUID rate limit
with ratelimit-* headers.  Merchants are keyed by GUID; each has earning
rules (action name -> points), customers with point history, and the list of
awards applied.

Run: python3 yotpo_sim.py --cert server.pem --key server.key [--port N]
     [--portfile F] [--max-seconds S] [--config-json '{...}']
See README.md beside this file for the control API and fault kinds.
"""

import collections
import datetime
import math
import os
import re
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simbase                                  # noqa: E402
from simbase import Reply, iso_now              # noqa: E402

API_PREFIX = "/api/v2/"

DEFAULT_MERCHANT = {
    "api_key": None,
    # action name -> points, or {"points": n, "title": "..."}; null removes.
    "rules": {},
    "unknown_action": "ignore",     # "ignore": 200, no points | "404"
}

DEFAULT_CONFIG = {
    "merchants": {
        "demo_guid": dict(DEFAULT_MERCHANT, api_key="demo_api_key",
                          rules={"gocertify-students": 100,
                                 "gocertify-key-workers": 250}),
    },
    "visibility_delay_s": 0,        # writes become readable after this
    "rate_limit_per_s": 5,          # per GUID (the documented lower figure)
    "rate_limit_mode": "sliding",   # "sliding": any 1 s span | "fixed": per
                                    # wall-clock second
    "retry_after": False,           # also send Retry-After on 429
}

# Practical email syntax (local@domain.tld), no surrounding whitespace.
EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*"
    r"[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")


def bad_request(message):
    # The real 400 body is undocumented; this shape is the sim's choice.
    return Reply(400, {"error": message})


def parse_iso(text):
    """ISO 8601 -> aware UTC datetime (naive means UTC), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc)


def query_flag(value):
    return (value or "").lower() in ("true", "1")


class YotpoSim(simbase.Sim):
    kind = "yotpo"
    FAULT_KINDS = ()    # 423/429/500/401 are generic status faults
    DEFAULT_CONFIG = DEFAULT_CONFIG
    COUNTERS = ("unauthorized", "rate_limited", "credentials_in_query",
                "credentials_in_body", "actions", "awards", "ignored_actions",
                "unknown_actions", "customers_created")

    # ---- state and config -------------------------------------------------

    def reset_state(self):
        self.merchants = {}
        self.windows = {}           # guid -> deque of times | [second, count]
        self._sync_merchants()

    def config_changed(self):
        self._sync_merchants()

    def _merchant_cfg(self, guid):
        raw = (self.config.get("merchants") or {}).get(guid)
        if not isinstance(raw, dict):
            return None
        cfg = dict(DEFAULT_MERCHANT)
        cfg.update(raw)
        return cfg

    def _sync_merchants(self):
        wanted = [g for g, raw in (self.config.get("merchants") or {}).items()
                  if isinstance(raw, dict)]
        for guid in list(self.merchants):
            if guid not in wanted:
                del self.merchants[guid]
        for guid in wanted:
            self.merchants.setdefault(guid, {"customers": {}, "awards": [],
                                             "ignored_actions": []})

    @staticmethod
    def _rules(cfg):
        """action name -> (points, title), skipping rules set to null."""
        out = {}
        for index, (name, rule) in enumerate((cfg["rules"] or {}).items()):
            if rule is None:
                continue
            if isinstance(rule, dict):
                out[name] = (int(rule.get("points", 0)),
                             rule.get("title") or "Custom action %d"
                             % (index + 1))
            else:
                out[name] = (int(rule), "Custom action %d" % (index + 1))
        return out

    def state(self):
        out = {}
        for guid, merchant in self.merchants.items():
            customers = {}
            for key, cust in merchant["customers"].items():
                items = [item for _, item in cust["history"]]
                customers[key] = {
                    "email": cust["email"], "customer_id": cust["customer_id"],
                    "points_balance": sum(i["points"] for i in items),
                    "points_earned": sum(i["points"] for i in items
                                         if i["points"] > 0),
                    "history_items": items, "created_at": cust["created_at"]}
            out[guid] = {"customers": customers, "awards": merchant["awards"],
                         "ignored_actions": merchant["ignored_actions"]}
        return {"merchants": out}

    def default_fault_body(self, status):
        return {"error": "simulated fault", "status": status}

    # ---- 429 holds (see simbase.record_request) ---------------------------

    def hold_key(self, req):
        if not req.path.startswith(API_PREFIX):
            return None
        return req.headers.get("x-guid") or None

    def hold_until(self, reply):
        """Now plus the longer of ratelimit-reset and Retry-After (both in
        seconds)."""
        wait = None
        for name, value in reply.headers:
            if name.lower() in ("ratelimit-reset", "retry-after"):
                try:
                    secs = float(value)
                except ValueError:
                    continue
                wait = secs if wait is None else max(wait, secs)
        return None if wait is None else time.time() + wait

    # ---- dispatch ---------------------------------------------------------

    def handle(self, req, fault):
        if not req.path.startswith(API_PREFIX):
            return Reply(404, {"error": "not found"})
        guid, key = self._credentials(req)
        cfg = self._merchant_cfg(guid) if guid else None
        if cfg is None or cfg["api_key"] is None or key != cfg["api_key"]:
            self.count("unauthorized")
            return Reply(401, {"error": "unauthorized"})
        req.record["merchant"] = guid
        allowed, headers = self._rate_check(guid)
        if not allowed:
            self.count("rate_limited")
            return Reply(429, {"error": "Too Many Requests"}, headers)
        route = (req.method, req.path[len(API_PREFIX):].strip("/"))
        merchant = self.merchants[guid]
        if route == ("POST", "actions"):
            reply = self._actions(req, cfg, merchant)
        elif route == ("GET", "customers"):
            reply = self._customers(req, merchant)
        elif route == ("GET", "campaigns"):
            reply = self._campaigns(cfg)
        else:
            reply = Reply(404, {"error": "not found"})
        reply.headers.extend(headers)
        return reply

    def _credentials(self, req):
        """(guid, api_key) from the headers, else the query string, else the
        JSON body (legacy).  The last two are counted: they leak the secret
        into URLs and logs, and gcrelay must never use them."""
        body = req.json if isinstance(req.json, dict) else {}
        if "guid" in req.query or "api_key" in req.query:
            self.count("credentials_in_query")
        if "guid" in body or "api_key" in body:
            self.count("credentials_in_body")
        guid = req.headers.get("x-guid") or req.query.get("guid") \
            or body.get("guid")
        key = req.headers.get("x-api-key") or req.query.get("api_key") \
            or body.get("api_key")
        return guid, key

    def _rate_check(self, guid):
        """Count one request for `guid`.  Returns (allowed, headers).
        Rejected requests do not use up the budget."""
        limit = int(self.config.get("rate_limit_per_s") or 0)
        if self.config.get("rate_limit_mode") == "fixed":
            second = int(time.time())
            slot = self.windows.get(guid)
            if not isinstance(slot, list) or slot[0] != second:
                slot = self.windows[guid] = [second, 0]
            used, reset = slot[1], 1
            if used < limit:
                slot[1] += 1
        else:
            now = time.monotonic()
            times = self.windows.get(guid)
            if not isinstance(times, collections.deque):
                times = self.windows[guid] = collections.deque()
            while times and times[0] <= now - 1.0:
                times.popleft()
            used = len(times)
            if used < limit:
                times.append(now)
            oldest = times[0] if times else now
            reset = max(1, int(math.ceil(oldest + 1.0 - now)))
        allowed = used < limit
        remaining = max(0, limit - used - 1) if allowed else 0
        headers = [("ratelimit-limit", limit),
                   ("ratelimit-remaining", remaining),
                   ("ratelimit-reset", reset)]
        if not allowed and self.config.get("retry_after"):
            headers.append(("Retry-After", reset))
        return allowed, headers

    # ---- endpoints --------------------------------------------------------

    def _actions(self, req, cfg, merchant):
        if req.content_type() != "application/json":
            return bad_request("Content-Type must be application/json")
        body = req.json
        if not req.json_ok or not isinstance(body, dict):
            return bad_request("the body must be a JSON object")
        # "type" is required here even though a newer doc says it defaults to
        # CustomAction: gcrelay must always send it (reference 3.2).
        if body.get("type") != "CustomAction":
            return bad_request("type must be CustomAction")
        email, cust_id = body.get("customer_email"), body.get("customer_id")
        if email in (None, "") and cust_id in (None, ""):
            return bad_request("customer_email or customer_id is required")
        if email not in (None, "") and (not isinstance(email, str)
                                        or not EMAIL_RE.match(email)):
            return bad_request("customer_email is not a valid email address")
        if cust_id not in (None, "") and not isinstance(cust_id, (str, int)):
            return bad_request("customer_id must be a string")
        action = body.get("action_name")
        if not isinstance(action, str) or not action:
            return bad_request("action_name is required")
        created_at = body.get("created_at")
        if created_at is not None and parse_iso(created_at) is None:
            return bad_request("created_at is not an ISO 8601 date-time")
        title = body.get("history_title")
        if title is not None and not isinstance(title, str):
            return bad_request("history_title must be a string")
        points = body.get("reward_points")
        if points is not None and (isinstance(points, bool)
                                   or not isinstance(points, int)):
            return bad_request("reward_points must be an integer")

        # Action names match exactly (case-sensitive): reference 3.2.
        rule = self._rules(cfg).get(action)
        if rule is None and cfg["unknown_action"] == "404":
            self.count("unknown_actions")
            return Reply(404, {"error": "no active campaign matches "
                                        "action_name"})
        self.count("actions")
        cust = self._find_or_create(merchant, email or None,
                                    None if cust_id in (None, "")
                                    else str(cust_id))
        entry = {"seq": req.record["seq"], "customer_email": email,
                 "customer_id": cust_id, "action_name": action,
                 "history_title": title, "created_at": created_at,
                 "received_at": iso_now()}
        if rule is None:
            # Accepted silently without points (reference: unconfirmed).
            self.count("ignored_actions")
            merchant["ignored_actions"].append(entry)
            return Reply(200, {})
        entry["points"] = rule[0] if points is None else points
        now = time.time()
        completed = created_at or iso_now(now)
        cust["history"].append((time.monotonic(), {
            "action": title or "Custom action: %s" % action,
            "history_title": title,
            "points": entry["points"],
            "status": "Approved",
            "created_at": iso_now(now),
            "completed_at": completed,
            "date": parse_iso(completed).date().isoformat(),
        }))
        merchant["awards"].append(entry)
        self.count("awards")
        # The real success body is undocumented: keep it minimal.
        return Reply(200, {})

    def _find_or_create(self, merchant, email, cust_id):
        """Find a customer by email (case-insensitive), else by customer id;
        create one when neither matches."""
        customers = merchant["customers"]
        if email and email.lower() in customers:
            cust = customers[email.lower()]
        else:
            cust = next((c for c in customers.values()
                         if cust_id and c["customer_id"] == cust_id), None)
        if cust is None:
            cust = {"email": email.lower() if email else None,
                    "customer_id": cust_id, "history": [],
                    "created_mono": time.monotonic(),
                    "created_at": iso_now()}
            customers[email.lower() if email else "id:" + cust_id] = cust
            self.count("customers_created")
        elif cust_id and not cust["customer_id"]:
            cust["customer_id"] = cust_id
        return cust

    def _customers(self, req, merchant):
        email = req.query.get("customer_email")
        cust_id = req.query.get("customer_id")
        if not email and not cust_id:
            return bad_request("customer_email or customer_id is required")
        customers = merchant["customers"]
        if email:
            cust = customers.get(email.lower())
        else:
            cust = next((c for c in customers.values()
                         if c["customer_id"] == cust_id), None)
        # Writes are asynchronous: a customer or history item is readable
        # only visibility_delay_s after it was written.
        delay = float(self.config.get("visibility_delay_s") or 0)
        now = time.monotonic()
        if cust is None or now - cust["created_mono"] < delay:
            return Reply(404, {"error": "customer not found"})
        items = [item for at, item in cust["history"] if now - at >= delay]
        out = {
            "email": cust["email"], "first_name": None, "last_name": None,
            "phone_number": None,
            "points_balance": sum(i["points"] for i in items),
            "points_earned": sum(i["points"] for i in items if i["points"] > 0),
            "total_spend_cents": 0, "total_purchases": 0, "perks_redeemed": 0,
            "last_purchase_at": None, "last_seen_at": cust["created_at"],
            "points_expire_at": None, "third_party_id": cust["customer_id"],
            "pos_account_id": None, "has_store_account": False,
            "opt_in": True, "opted_in_at": cust["created_at"],
            "credit_balance": "0", "vip_tier_actions_completed": {},
            "vip_tier_upgrade_requirements": {},
        }
        if query_flag(req.query.get("with_history")):
            out["history_items"] = items        # oldest first
        if query_flag(req.query.get("with_referral_code")):
            out["referral_code"] = {"code": "sim%08x" % zlib.crc32(
                (cust["email"] or cust["customer_id"]).encode())}
        return Reply(200, out)

    def _campaigns(self, cfg):
        # No action-name field: the real API does not expose it (3.6).
        out = []
        for name, (points, title) in self._rules(cfg).items():
            out.append({
                "id": 100000 + zlib.crc32(name.encode()) % 900000,
                "title": title, "type": "CustomActionCampaign",
                "details": "", "cta_text": "", "share_text": "", "url": "",
                "username": "", "entity_id": "", "icon": "",
                "reward_text": "%d points" % points,
                "created_at": "2025-01-01T00:00:00.000Z",
                "updated_at": "2025-01-01T00:00:00.000Z",
                "expires_at": None, "max_completions_per_user": None,
                "min_actions_required": 1})
        return Reply(200, out)


if __name__ == "__main__":
    sys.exit(simbase.main(YotpoSim))
