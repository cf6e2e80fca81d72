"""Emarsys batches in the dispatcher, through nginx -> gcrelay -> the
Emarsys simulator: contact upserts of one API user go out as one
`PUT contact/?create_if_not_exists=1` with a `contacts` array, triggers
of one event as one `POST event/{id}/trigger` with a `contacts` array,
and the reply is split back so each delivery keeps its own outcome and
attempt rows.  A contact Emarsys rejects fails only its own delivery; a
reply about the whole call (429) applies to every member; a reply that
cannot be attributed (HTTP 400 for the batch) sends each member alone.

sync_workers=0: the intake only records and answers 202, so every
delivery is the dispatcher's.  While the events are posted the dispatcher
is stopped (SIGSTOP), so it finds a backlog when it goes on: that is
what makes batches (a trickle of events gives batches of one or two).
"""

import contextlib
import os
import secrets
import signal
import threading
import time
import unittest

from stack import Stack, sample_event

ACCOUNT = "demo_client"
LONG_SCHEDULE = "[%s]" % ", ".join(["1"] * 30)
CONTACT = "/api/v3/contact"
EVENT = "/api/v3/event/"
FINAL = ("delivered", "failed", "skipped")


class BatchCase(unittest.TestCase):
    """Helpers; self.s is the test's stack."""

    s = None
    maxDiff = None

    def tearDown(self):
        if self.s is not None:
            try:
                self.assertEqual(self.s.emarsys.stats()["internal_errors"],
                                 0)
            finally:
                self.s.close()
                self.s = None

    def stack(self, concurrency=64, **kw):
        self.s = Stack(workers=2, sync_workers=0, concurrency=concurrency,
                       retry_schedule=LONG_SCHEDULE, **kw)
        # Pacing to the account's limit is not what these tests are about.
        self.s.emarsys.config({"rate_limit_per_minute": 100000})
        self.s.put_brand("acme", {"name": "Acme", "emarsys": {
            "client_id": ACCOUNT, "client_secret": "demo_secret"}})
        self.warm_up()
        return self.s

    def log_tail(self, n=8000):
        return self.s.log()[-n:]

    # ---- events -----------------------------------------------------------

    @staticmethod
    def email(tag, i):
        return "%s-%d@example.com" % (tag, i)

    def events(self, n, tag, kind="consent_intent"):
        """n events of one brand, each with a contact of its own."""
        return [sample_event(kind, brand_slug="acme", mobile=None,
                             email=self.email(tag, i)) for i in range(n)]

    def post_many(self, events, threads=8):
        """Post concurrently (every answer 202); returns the webhook ids
        in the order of events."""
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
                    r = self.s.post_event(events[i], webhook_id=wid)
                    out[i] = (wid, r)
                except Exception as exc:          # noqa: BLE001
                    errors.append(exc)
        ts = [threading.Thread(target=run) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        for wid, r in out:
            self.assertEqual(r.status, 202, r)
        return [wid for wid, _ in out]

    def warm_up(self):
        """One delivered consent so the token and ids are cached; clears
        the simulator's records."""
        ev = sample_event("consent_intent", brand_slug="acme", mobile=None,
                          email="warm-up@example.com")
        wid = self.post_many([ev], threads=1)[0]
        self.wait_final([wid])
        self.assertEqual(self.statuses([wid]), {wid: "delivered"},
                         self.log_tail())
        self.s.emarsys.clear_requests()

    def dispatcher_pid(self):
        """The live dispatcher: a child of the master whose pid logs with
        role "dispatcher"."""
        pids = self.s.dispatcher_pids()
        pid = pids[-1] if pids else None
        self.assertIsNotNone(pid, "no dispatcher pid in the log:\n" +
                             self.log_tail())
        return pid

    @contextlib.contextmanager
    def dispatcher_stopped(self):
        """The dispatcher stopped (SIGSTOP) inside the block: what is
        posted meanwhile is a backlog when it goes on."""
        pid = self.dispatcher_pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def post_backlog(self, events):
        with self.dispatcher_stopped():
            wids = self.post_many(events)
            # Nothing went to Emarsys meanwhile.
            self.assertEqual(self.s.emarsys.requests(path_prefix="/api/"),
                             [])
        return wids

    # ---- the store --------------------------------------------------------

    def statuses(self, wids):
        """{event id: status} of the Emarsys deliveries."""
        marks = ",".join("?" * len(wids))
        rows = self.s.query("SELECT event_id, status FROM deliveries "
                            "WHERE destination = 'emarsys' AND event_id IN "
                            "(%s)" % marks, *wids)
        return dict(rows)

    def delivery(self, wid):
        rows = self.s.query("SELECT status, reason, warning FROM deliveries "
                            "WHERE destination = 'emarsys' AND event_id = ?",
                            wid)
        self.assertEqual(len(rows), 1, rows)
        return rows[0]

    def attempts(self, wids):
        """{event id: [(step, outcome, http_status, reply_code), ...]} of
        the Emarsys attempts, in order."""
        marks = ",".join("?" * len(wids))
        out = {w: [] for w in wids}
        for e, step, outcome, status, code in self.s.query(
                "SELECT event_id, step, outcome, http_status, reply_code "
                "FROM attempts WHERE destination = 'emarsys' AND event_id "
                "IN (%s) ORDER BY id" % marks, *wids):
            out[e].append((step, outcome, status, code))
        return out

    def excerpts(self, wids, http_status):
        """{event id: [excerpt, ...]} of the attempts with that status."""
        marks = ",".join("?" * len(wids))
        out = {}
        for e, x in self.s.query(
                "SELECT event_id, excerpt FROM attempts WHERE destination = "
                "'emarsys' AND http_status = ? AND event_id IN (%s) ORDER "
                "BY id" % marks, http_status, *wids):
            out.setdefault(e, []).append(x)
        return out

    def wait_final(self, wids, timeout=60):
        last = {}

        def done():
            last.clear()
            last.update(self.statuses(wids))
            return len(last) == len(wids) and \
                all(st in FINAL for st in last.values())
        try:
            self.s.wait(done, timeout=timeout, interval=0.2,
                        what="every Emarsys delivery final")
        except AssertionError:
            stuck = sorted(w for w in wids if last.get(w) not in FINAL)
            raise AssertionError(
                "%d of %d deliveries not final after %ds, e.g. %r: %r\n"
                "attempts: %r\nlog tail:\n%s" % (
                    len(stuck), len(wids), timeout, stuck[:3],
                    [last.get(w) for w in stuck[:3]],
                    self.attempts(stuck[:3]), self.log_tail()))

    # ---- the simulator ----------------------------------------------------

    def state(self):
        return self.s.emarsys.state()["accounts"][ACCOUNT]

    def puts(self):
        return self.s.emarsys.requests(path_prefix=CONTACT, method="PUT")

    def trigger_calls(self):
        return [q for q in self.s.emarsys.requests(path_prefix=EVENT,
                                                   method="POST")
                if q["path"].rstrip("/").endswith("/trigger")]

    @staticmethod
    def put_keys(q):
        """The key values (emails) a PUT contact carried."""
        return [c.get("3") for c in q["json"]["contacts"]]

    @staticmethod
    def trigger_keys(q):
        """The external ids a trigger call carried (single or batch)."""
        if "contacts" in q["json"]:
            return [c.get("external_id") for c in q["json"]["contacts"]]
        return [q["json"].get("external_id")]

    def triggered(self):
        """external_id -> how many triggers Emarsys applied."""
        out = {}
        for t in self.state()["triggers"]:
            out[t["external_id"]] = out.get(t["external_id"], 0) + 1
        return out

    def assert_batch_forms(self):
        """Every call is one of the documented forms, within the limits,
        each contact once per call."""
        for q in self.puts():
            body = q["json"]
            self.assertEqual(q["query"].get("create_if_not_exists"), "1", q)
            self.assertEqual(set(body), {"key_id", "contacts"}, q["body"][:300])
            self.assertEqual(str(body["key_id"]), "3")
            self.assertLessEqual(len(body["contacts"]), 1000)
            self.assertLessEqual(len(q["body"].encode()), 8000000)
        for q in self.trigger_calls():
            body = q["json"]
            self.assertLessEqual(len(q["body"].encode()), 1000000)
            if "contacts" in body:
                self.assertEqual(set(body), {"key_id", "contacts"},
                                 q["body"][:300])
                self.assertLessEqual(len(body["contacts"]), 1000)
                for item in body["contacts"]:
                    self.assertEqual(set(item), {"external_id", "trigger_id",
                                                 "data"}, item)
        self.assertEqual(self.s.emarsys.stats()["batch_duplicate_keys"], 0)

    def assert_each_triggered_once(self, emails):
        trig = self.triggered()
        self.assertEqual({e: trig.get(e) for e in emails},
                         {e: 1 for e in emails})
        self.assertEqual(self.s.emarsys.stats()["deduplicated_triggers"], 0)


class BatchTest(BatchCase):
    def test_500_consents_batched_one_contact_rejected(self):
        self.stack(concurrency=1000)
        n, bad_i = 500, 137
        events = self.events(n, "c")
        emails = [e["email"] for e in events]
        bad = emails[bad_i]
        good = [e for e in emails if e != bad]
        # Emarsys rejects one contact's value (2007, reference 3.2).
        self.s.emarsys.fault("contact_error", code=2007, count=-1,
                             text="Invalid value for field id 3: %s" % bad,
                             key_values=[bad])
        t0 = time.monotonic()
        wids = self.post_backlog(events)
        self.wait_final(wids, timeout=90)
        took = time.monotonic() - t0
        st = self.statuses(wids)
        bad_wid = wids[bad_i]
        self.assertEqual(
            sorted(w for w, v in st.items() if v != "delivered"), [bad_wid],
            "not delivered: %r" % {w: v for w, v in st.items()
                                   if v != "delivered"})
        status, reason, _ = self.delivery(bad_wid)
        self.assertEqual(status, "failed")
        self.assertIn("2007", reason)
        self.assertIn("Invalid value for field id 3", reason)
        # Each delivery has its own attempt rows: the two steps, each
        # answered for that contact alone.
        att = self.attempts(wids)
        self.assertEqual(att[bad_wid],
                         [("upsert_contact", "response", 200, "2007")])
        wrong = {w: a for w, a in att.items() if w != bad_wid and a != [
            ("upsert_contact", "response", 200, "0"),
            ("trigger_event", "response", 200, "0")]}
        self.assertEqual(wrong, {}, "attempts of %d deliveries differ, e.g. "
                         "%r" % (len(wrong), list(wrong.items())[:3]))
        # Batched upserts: far fewer calls than contacts, none over 1000,
        # every contact sent once (the rejected one included).
        puts = self.puts()
        sizes = [len(q["json"]["contacts"]) for q in puts]
        self.assertLessEqual(len(puts), n // 10, "PUT contact sizes %r" %
                             sizes)
        self.assertGreater(max(sizes), 1)
        self.assertEqual(sorted(k for q in puts for k in self.put_keys(q)),
                         sorted(emails))
        self.assertEqual([q["status"] for q in puts], [200] * len(puts))
        # Batched triggers: the 499 others, each once; the rejected
        # contact never.
        trig = self.trigger_calls()
        tsizes = [len(self.trigger_keys(q)) for q in trig]
        self.assertLessEqual(len(trig), n // 10, "trigger sizes %r" % tsizes)
        self.assertGreater(max(tsizes), 1)
        self.assertTrue(all("contacts" in q["json"] for q in trig
                            if len(self.trigger_keys(q)) > 1))
        sent = sorted(k for q in trig for k in self.trigger_keys(q))
        self.assertEqual(sent, sorted(good))
        ids = [c["trigger_id"] for q in trig for c in q["json"].get(
            "contacts", [q["json"]])]
        self.assertEqual(len(set(ids)), len(ids))
        self.assert_each_triggered_once(good)
        self.assertNotIn(bad, self.triggered())
        self.assertNotIn(bad, [c["fields"].get("3")
                               for c in self.state()["contacts"]])
        self.assert_batch_forms()
        self.assertRegex(self.s.log(), r"batch of \d+ emarsys:")
        print("\n     500 consents: %d PUT contact %r, %d triggers %r, "
              "%.1fs" % (len(puts), sizes, len(trig), tsizes, took))

    def test_batch_trigger_one_contact_fails(self):
        self.stack()
        events = self.events(20, "t")
        emails = [e["email"] for e in events]
        dup, gone = emails[3], emails[11]
        good = [e for e in emails if e not in (dup, gone)]
        # 2010 (more than one contact) is permanent; 2008 (no contact)
        # makes gcrelay upsert once more and trigger again (reference
        # 4.2), then it fails.
        self.s.emarsys.fault("trigger_error", count=-1,
                             codes={dup: 2010, gone: 2008})
        wids = self.post_backlog(events)
        self.wait_final(wids)
        st = self.statuses(wids)
        dup_wid, gone_wid = wids[3], wids[11]
        self.assertEqual({w: v for w, v in st.items() if v != "delivered"},
                         {dup_wid: "failed", gone_wid: "failed"})
        att = self.attempts(wids)
        # The contact's error is presented as a single trigger's reply.
        self.assertEqual(att[dup_wid], [
            ("upsert_contact", "response", 200, "0"),
            ("trigger_event", "response", 400, "2010")], self.log_tail())
        self.assertEqual(att[gone_wid], [
            ("upsert_contact", "response", 200, "0"),
            ("trigger_event", "response", 400, "2008"),
            ("upsert_contact", "response", 200, "0"),
            ("trigger_event", "response", 400, "2008")], self.log_tail())
        _, reason, _ = self.delivery(dup_wid)
        self.assertIn("2010", reason)
        self.assertIn("More than one contact", reason)
        _, reason, _ = self.delivery(gone_wid)
        self.assertIn("2008", reason)
        for w in wids:
            if w not in (dup_wid, gone_wid):
                self.assertEqual(att[w], [
                    ("upsert_contact", "response", 200, "0"),
                    ("trigger_event", "response", 200, "0")], w)
        trig = self.trigger_calls()
        # The failing contacts were in a batch trigger with others.
        batched = [q for q in trig if "contacts" in q["json"] and
                   len(q["json"]["contacts"]) > 1]
        self.assertTrue(any(dup in self.trigger_keys(q) for q in batched),
                        [self.trigger_keys(q) for q in trig])
        self.assertTrue(any(gone in self.trigger_keys(q) for q in batched),
                        [self.trigger_keys(q) for q in trig])
        sent = [k for q in trig for k in self.trigger_keys(q)]
        self.assertEqual(sent.count(dup), 1)
        self.assertEqual(sent.count(gone), 2)
        self.assertEqual(sorted(k for k in sent if k not in (dup, gone)),
                         sorted(good))
        self.assert_each_triggered_once(good)
        self.assertNotIn(dup, self.triggered())
        self.assertNotIn(gone, self.triggered())
        self.assert_batch_forms()

    def test_batch_rejected_as_a_whole_each_sent_alone(self):
        self.stack()
        events = self.events(12, "w")
        emails = [e["email"] for e in events]
        # The first batch upsert (2 or more contacts) gets 400 / 1000:
        # nobody in particular caused it.
        self.s.emarsys.fault("status", status=400, method="PUT",
                             path_prefix=CONTACT, min_batch=2, count=1,
                             body={"replyCode": 1000, "replyText":
                                   "Batch size exceeded", "data": ""})
        wids = self.post_backlog(events)
        self.wait_final(wids)
        st = self.statuses(wids)
        self.assertEqual({w: v for w, v in st.items() if v != "delivered"},
                         {}, self.log_tail())
        puts = self.puts()
        rejected = [q for q in puts if q["status"] == 400]
        self.assertEqual(len(rejected), 1, [(q["status"], self.put_keys(q))
                                            for q in puts])
        members = self.put_keys(rejected[0])
        self.assertGreater(len(members), 1)
        later = [q for q in puts if q["seq"] > rejected[0]["seq"]]
        # Each member then went alone: one PUT with only its contact.
        for m in members:
            alone = [q for q in later if m in self.put_keys(q)]
            self.assertEqual([self.put_keys(q) for q in alone], [[m]],
                             "%s after the 400: %r" % (
                                 m, [self.put_keys(q) for q in later]))
        by_email = dict(zip(emails, wids))
        att = self.attempts(wids)
        wrong = {m: att[by_email[m]] for m in members
                 if att[by_email[m]] != [
                     ("upsert_contact", "response", 400, "1000"),
                     ("upsert_contact", "response", 200, "0"),
                     ("trigger_event", "response", 200, "0")]}
        self.assertEqual(wrong, {}, "attempts of the members of the "
                         "rejected batch upsert; excerpts of their 400 "
                         "rows: %r" % self.excerpts(
                             [by_email[m] for m in members], 400))
        for e in emails:
            if e not in members:
                self.assertEqual(att[by_email[e]], [
                    ("upsert_contact", "response", 200, "0"),
                    ("trigger_event", "response", 200, "0")], e)
        self.assertEqual(sorted(k for q in puts for k in self.put_keys(q)),
                         sorted(emails + members))
        self.assertIn("not attributable, each is sent alone", self.s.log())
        self.assert_each_triggered_once(emails)
        self.assert_batch_forms()

    def test_trigger_batch_rejected_as_a_whole_each_sent_alone(self):
        self.stack()
        events = self.events(12, "v")
        emails = [e["email"] for e in events]
        self.s.emarsys.fault("status", status=400, method="POST",
                             path_prefix=EVENT, min_batch=2, count=1,
                             body={"replyCode": 1000, "replyText":
                                   "Batch size exceeded", "data": ""})
        wids = self.post_backlog(events)
        self.wait_final(wids)
        st = self.statuses(wids)
        self.assertEqual({w: v for w, v in st.items() if v != "delivered"},
                         {}, self.log_tail())
        trig = self.trigger_calls()
        rejected = [q for q in trig if q["status"] == 400]
        self.assertEqual(len(rejected), 1, [(q["status"],
                                             self.trigger_keys(q))
                                            for q in trig])
        members = self.trigger_keys(rejected[0])
        self.assertGreater(len(members), 1)
        later = [q for q in trig if q["seq"] > rejected[0]["seq"]]
        for m in members:
            alone = [q for q in later if m in self.trigger_keys(q)]
            self.assertEqual([self.trigger_keys(q) for q in alone], [[m]],
                             "%s after the 400: %r" % (
                                 m, [self.trigger_keys(q) for q in later]))
            # Alone means the single form, with the same trigger_id.
            first = [c for c in rejected[0]["json"]["contacts"]
                     if c["external_id"] == m][0]
            self.assertEqual(alone[0]["json"]["trigger_id"],
                             first["trigger_id"])
        by_email = dict(zip(emails, wids))
        att = self.attempts(wids)
        # The batch's 400 is each member's attempt, with what Emarsys
        # said (replyCode 1000), not what an earlier step was told.
        wrong = {m: att[by_email[m]] for m in members
                 if att[by_email[m]] != [
                     ("upsert_contact", "response", 200, "0"),
                     ("trigger_event", "response", 400, "1000"),
                     ("trigger_event", "response", 200, "0")]}
        self.assertEqual(wrong, {}, "attempts of the members of the "
                         "rejected trigger batch; excerpts of their 400 "
                         "rows: %r" % self.excerpts(
                             [by_email[m] for m in members], 400))
        self.assertIn("not attributable, each is sent alone", self.s.log())
        self.assert_each_triggered_once(emails)
        self.assert_batch_forms()

    def test_429_on_a_batch_every_member_waits_for_the_reset(self):
        self.stack()
        events = self.events(12, "r")
        emails = [e["email"] for e in events]
        self.s.emarsys.fault("rate_limit", reset_in=2, method="PUT",
                             path_prefix=CONTACT, min_batch=2, count=1)
        wids = self.post_backlog(events)
        self.wait_final(wids)
        st = self.statuses(wids)
        self.assertEqual({w: v for w, v in st.items() if v != "delivered"},
                         {}, self.log_tail())
        limited = [q for q in self.s.emarsys.requests() if q["status"] == 429]
        self.assertEqual(len(limited), 1)
        members = self.put_keys(limited[0])
        self.assertGreater(len(members), 1)
        # Nobody called the account before the announced reset.
        early = [(q["seq"], q["method"], q["path"], q["early_ms"])
                 for q in self.s.emarsys.requests() if q["before_reset"]]
        self.assertEqual(early, [], "calls before the reset at %s\n%s" % (
            limited[0]["reset_at"], self.log_tail()))
        self.assertEqual(self.s.emarsys.stats()["calls_before_reset"], 0)
        for q in self.s.emarsys.requests(path_prefix="/api/v3/"):
            if q["seq"] > limited[0]["seq"]:
                self.assertGreaterEqual(q["time"], limited[0]["reset_at"])
        by_email = dict(zip(emails, wids))
        att = self.attempts(wids)
        for m in members:
            self.assertEqual(att[by_email[m]], [
                ("upsert_contact", "response", 429, "7003"),
                ("upsert_contact", "response", 200, "0"),
                ("trigger_event", "response", 200, "0")], m)
        # Every member upserted once more after the reset, and delivered
        # (triggered) once.
        puts = self.puts()
        self.assertEqual(sorted(k for q in puts for k in self.put_keys(q)),
                         sorted(emails + members))
        self.assertEqual(self.s.emarsys.stats()["rate_limited"], 1)
        self.assert_each_triggered_once(emails)
        self.assert_batch_forms()


if __name__ == "__main__":
    unittest.main()
