"""End to end in one pass: the module `make valgrind` runs with gcrelay
under valgrind (any leak or error report fails it)."""

import unittest

from stack import Stack, sample_event


class Smoke(unittest.TestCase):

    def test_consent_and_claim_reach_both_destinations(self):
        with Stack(budget_ms=60000, http_timeout_ms=30000) as s:
            s.demo_brand()
            r = s.post_event(sample_event("consent_intent"), webhook_id="c1")
            self.assertEqual(r.status, 200, r)
            ev = sample_event("offer_claimed", token="TOKSMOKE1")
            r = s.post_event(ev, webhook_id="o1")
            self.assertEqual(r.status, 200, r)
            self.assertEqual([d["status"] for d in r.json["deliveries"]],
                             ["delivered", "delivered"])
            r = s.post_event(ev, webhook_id="o1")
            self.assertTrue(r.json["duplicate"])
            bal = s.yotpo.state()["merchants"]["demo_guid"]["customers"][
                "jane.doe@example.com"]["points_balance"]
            self.assertEqual(bal, 100)
            acct = s.emarsys.state()["accounts"]["demo_client"]
            self.assertEqual(sorted(t["event_name"] for t in acct["triggers"]),
                             ["gocertify_consent_intent",
                              "gocertify_offer_claimed"])
            r = s.admin("GET", "/admin/v1/events/o1")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json["status"], "delivered")
            self.assertEqual(s.request("GET", "/metrics").status, 200)
            self.assertEqual(s.stop_gcrelay(), 0)


if __name__ == "__main__":
    unittest.main()
