"""The PostgreSQL store stopped and started under a running gcrelay:
intake answers 503 with nothing recorded, /healthz says why, and the
connection is re-established on its own.  Runs in the runner's PostgreSQL
pass only (it stops the shared throwaway cluster for a moment)."""

import os
import time
import unittest

from stack import Stack, sample_event


class DatabaseRestart(unittest.TestCase):
    def post(self, s, wid=None):
        wid = wid or "msg_" + os.urandom(6).hex()
        r = s.post_event(sample_event("offer_claimed"), webhook_id=wid)
        return wid, r

    def test_database_down_refuses_then_reconnects(self):
        s = Stack(workers=2)
        try:
            s.demo_brand()
            accepted = []
            for _ in range(3):
                wid, r = self.post(s)
                self.assertIn(r.status, (200, 202), r)
                accepted.append(wid)
            s.pg.stop()
            refused = []
            try:
                for _ in range(4):
                    wid, r = self.post(s)
                    self.assertEqual(r.status, 503, r)
                    self.assertEqual(r.json.get("code"), "store_unavailable",
                                     r)
                    refused.append(wid)
                    h = s.request("GET", "/healthz")
                    self.assertEqual(h.status, 503, h)
                    self.assertEqual(h.json["status"], "unavailable", h)
                    # Why: the database and its connection.
                    self.assertRegex(h.json["detail"],
                                     r"^database (unreachable|does not "
                                     r"answer): .*connection", h)
            finally:
                s.pg.start()
            # Each process reconnects on its own: no restart of gcrelay.
            s.wait(lambda: s.request("GET", "/healthz").status == 200,
                   timeout=20, what="healthy again")
            deadline = time.monotonic() + 20
            while True:
                wid, r = self.post(s)
                if r.status in (200, 202) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self.assertIn(r.status, (200, 202), r)
            ids = {row[0] for row in s.query("SELECT id FROM events")}
            self.assertEqual(set(accepted) | {wid}, ids)
            self.assertFalse(set(refused) & ids)
            # The sender retries a refused delivery: it goes through, once.
            again, r = self.post(s, refused[0])
            self.assertIn(r.status, (200, 202), r)
            self.assertEqual(s.query("SELECT count(*) FROM events WHERE "
                                     "id = ?", refused[0]), [(1,)])
            s.wait(lambda: s.query(
                "SELECT count(*) FROM deliveries WHERE status NOT IN "
                "('delivered', 'skipped')") == [(0,)], timeout=30,
                what="every accepted event delivered")
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
