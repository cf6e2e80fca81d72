"""What delivering costs in round trips to PostgreSQL, where the count is
gcrelay's own (gcrelay_store_round_trips_total on /metrics; SQLite is
in-process and has none).  Runs in the runner's PostgreSQL pass only."""

import os
import re
import signal
import sys
import time
import unittest

from stack import Stack, sample_event

N = 96  # events held back, then delivered by the dispatcher in one go


def round_trips(s):
    text = s.request("GET", "/metrics").raw.decode()
    m = re.search(r"(?m)^gcrelay_store_round_trips_total (\d+)$", text)
    assert m is not None, text
    return int(m.group(1))


class FinishTogether(unittest.TestCase):
    def test_runs_that_end_together_are_stored_together(self):
        """A brand's Emarsys deliveries that one batch call ends are
        stored in a few batches, not one round trip per event: the
        dispatcher, held while intake records N consent events, then
        claims them, sends one batch upsert and one batch trigger, and
        stores what ended together (up to 32 events to a batch).  Each
        event also costs its token and ids read (one round trip), so
        with a store per event the count would be above 2 x N."""
        s = Stack(workers=2, sync_workers=0)
        try:
            s.emarsys.config({"rate_limit_per_minute": 100000})
            s.demo_brand(yotpo=False)
            # The account's token and ids are known, as in steady work
            # (the first event fetches them while the others wait).
            r = s.post_event(sample_event("consent_intent"))
            self.assertEqual(r.status, 202, r)
            s.wait(lambda: s.query(
                "SELECT status FROM deliveries WHERE event_id = ? AND "
                "destination = 'emarsys'", r.json["id"]) ==
                [("delivered",)], timeout=10, what="first event delivered")
            s.emarsys.clear_requests()
            (pid,) = s.dispatcher_pids()
            time.sleep(0.5)  # past its look after that, holding nothing
            os.kill(pid, signal.SIGSTOP)
            try:
                for i in range(N):
                    wid = "msg_cost_%d_%s" % (i, os.urandom(4).hex())
                    r = s.post_event(sample_event(
                        "consent_intent", email="cost%d@example.com" % i),
                        webhook_id=wid)
                    self.assertEqual(r.status, 202, r)
                before = round_trips(s)
            finally:
                os.kill(pid, signal.SIGCONT)
            s.wait(lambda: s.query(
                "SELECT count(*) FROM deliveries WHERE destination = "
                "'emarsys' AND status = 'delivered'") == [(N + 1,)],
                timeout=30, what="every event delivered")
            took = round_trips(s) - before
            calls = ["%s %s" % (q["method"], q["path"])
                     for q in s.emarsys.requests(path_prefix="/api/v3/")]
            sys.stderr.write("%d events: %d round trips; Emarsys calls "
                             "%s\n" % (N, took, calls))
            # The premise: one batch upsert and one batch trigger (a
            # batch holds up to 1000; the claims may split them).
            self.assertLessEqual(len(calls), 4, calls)
            # The token and ids (N), the claims, the stores (N / 32),
            # /metrics and the idle polls of about a second: well under
            # 1.5 per event; one store per event is 2 or more.
            self.assertLess(took, N * 3 // 2, (took, calls))
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
