"""gcrelay store copy: a SQLite store with history moved into PostgreSQL,
then served from there by a host with the same secrets key: brands (with
their sealed secrets), events, deliveries, attempts and the award ledger
arrive, and no award is made again."""

import os
import subprocess
import unittest

from stack import BUILD, Stack, sample_event

GCRELAY = os.path.join(BUILD, "gcrelay")


class StoreCopy(unittest.TestCase):
    def test_sqlite_store_copied_into_postgresql(self):
        old = Stack(workers=2, store="sqlite")
        new = None
        try:
            old.demo_brand()
            events = [sample_event("offer_claimed") for _ in range(3)]
            wids = []
            for ev in events:
                r = old.post_event(ev)
                self.assertEqual(r.status, 200, r)
                wids.append(r.json["id"])
            tables = ("brands", "events", "deliveries", "attempts",
                      "yotpo_ledger", "emarsys_ids", "emarsys_tokens")
            before = {t: old.query("SELECT count(*) FROM %s" % t)[0][0]
                      for t in tables}
            ledger = old.query("SELECT brand, token, action, state, "
                               "event_id FROM yotpo_ledger ORDER BY token")
            awards = len(old.yotpo.state()["merchants"]["demo_guid"]
                         ["awards"])
            self.assertEqual(awards, 3)
            old.stop_gcrelay()

            db = "gc_copy_" + os.urandom(4).hex()
            old_pg = __import__("pgcluster").shared()
            old_pg.create_db(db)
            try:
                r = subprocess.run(
                    [GCRELAY, "store", "copy", "--from", old.db_path,
                     "--to", old_pg.url(db)], capture_output=True,
                    text=True)
                self.assertEqual(r.returncode, 0, r.stderr)
                # A second copy into the same (now full) store: refused.
                r2 = subprocess.run(
                    [GCRELAY, "store", "copy", "--from", old.db_path,
                     "--to", old_pg.url(db)], capture_output=True,
                    text=True)
                self.assertNotEqual(r2.returncode, 0)
                self.assertIn("must be an empty PostgreSQL store", r2.stderr)

                new = Stack(workers=2, peer=old, pg_db=db)
                after = {t: new.query("SELECT count(*) FROM %s" % t)[0][0]
                         for t in tables}
                self.assertEqual(after, before)
                self.assertEqual(new.query(
                    "SELECT brand, token, action, state, event_id FROM "
                    "yotpo_ledger ORDER BY token"), [tuple(x) for x in ledger])
                # The sealed secrets open with the same key.
                r = new.admin("GET", "/admin/v1/brands/acme")
                self.assertEqual(r.status, 200, r)
                for wid in wids:
                    r = new.admin("GET", "/admin/v1/events/" + wid)
                    self.assertEqual(r.json["status"], "delivered", r)
                # The same verifications again, new webhook ids: no award.
                for ev in events:
                    r = new.post_event(ev)
                    self.assertIn(r.status, (200, 202), r)
                self.assertEqual(len(new.yotpo.state()["merchants"]
                                     ["demo_guid"]["awards"]), 3)
                # New events keep numbering after the copied ones.
                r = new.post_event(sample_event("offer_claimed"))
                self.assertEqual(r.status, 200, r)
                self.assertEqual(len(new.yotpo.state()["merchants"]
                                     ["demo_guid"]["awards"]), 4)
            finally:
                if new is not None:
                    new.close()
                old_pg.drop_db(db)
        finally:
            old.close()


if __name__ == "__main__":
    unittest.main()
