"""Store faults under a running gcrelay (issue 9, items 1, 3 and 4), through
nginx -> gcrelay: the database file deleted, made read-only, or its disk
full.  No event may be answered 2xx unless its record is in the file at
the store's path; /healthz and intake must agree; once the fault is gone
gcrelay recovers by itself within seconds, and a restart finds every event
it answered 2xx.
"""

import os
import signal
import subprocess
import tempfile
import time
import unittest

from stack import Stack, sample_event

RECOVER_S = 6  # store_health retries once a second; give it a margin



# Not collected when the suites run on PostgreSQL (tests/lib/itrun.py):
# each breaks the SQLite file; tests/postgresql/test_faults.py stops and
# restarts the database instead.
SQLITE_ONLY = {
    "test_deleted_file_refuses_events_and_recovers_when_put_back":
        "deletes the SQLite file",
    "test_deleted_file_is_never_recreated_by_a_running_gcrelay":
        "deletes the SQLite file",
    "test_read_only_file_refuses_events_and_recovers":
        "makes the SQLite file read-only",
    "test_full_disk_health_and_intake_agree_and_recover":
        "fills the file system holding the SQLite file",
}

class StoreFaultCase(unittest.TestCase):
    s = None

    def tearDown(self):
        if self.s is not None:
            self.s.close()
            self.s = None

    def post(self):
        """One event; (webhook id, status, problem code or None)."""
        wid = "msg_" + os.urandom(6).hex()
        r = self.s.post_event(sample_event(), webhook_id=wid)
        code = None
        if r.status >= 400:
            self.assertEqual(r.headers.get("Content-Type"),
                             "application/problem+json", r)
            code = (r.json or {}).get("code")
        return wid, r.status, code

    def healthz(self):
        r = self.s.request("GET", "/healthz")
        return r.status, r.json

    def until_accepted(self):
        """Post until an event is answered 2xx; the ids answered 2xx."""
        deadline = time.monotonic() + RECOVER_S
        while time.monotonic() < deadline:
            wid, status, _ = self.post()
            if status in (200, 202):
                return wid
            time.sleep(0.2)
        self.fail("intake did not recover within %ds; log:\n%s"
                  % (RECOVER_S, self.s.log()[-3000:]))

    def stored_ids(self):
        return {r[0] for r in self.s.query("SELECT id FROM events")}

    def restart(self):
        self.s.stop_gcrelay()
        self.s.start_gcrelay()
        self.s.wait_healthy()

    def assert_unavailable(self, n=6):
        """n events in a row answered 503 store_unavailable, and /healthz
        says the same; returns their ids."""
        refused = []
        for _ in range(n):
            wid, status, code = self.post()
            self.assertEqual((status, code), (503, "store_unavailable"),
                             "event %s answered %d during the fault"
                             % (wid, status))
            refused.append(wid)
            hs, body = self.healthz()
            self.assertEqual(hs, 503, body)
            self.assertEqual(body["status"], "unavailable")
        return refused


class TestDeletedStore(StoreFaultCase):
    def test_deleted_file_refuses_events_and_recovers_when_put_back(self):
        """rm gcrelay.db: 503 (nothing recorded) until the file is back;
        a restart finds every event answered 2xx."""
        self.s = Stack(workers=2)
        self.s.demo_brand()
        accepted = {self.post()[0] for _ in range(4)}
        self.assertEqual(accepted, accepted & self.stored_ids())

        # The operator's copy is a second name for the same file: putting
        # it back is what restoring it looks like to gcrelay.
        keep = self.s.db_path + ".keep"
        os.link(self.s.db_path, keep)
        os.unlink(self.s.db_path)
        refused = self.assert_unavailable()

        os.link(keep, self.s.db_path)
        os.unlink(keep)
        accepted.add(self.until_accepted())
        self.assertEqual(self.healthz()[0], 200)

        self.restart()
        stored = self.stored_ids()
        self.assertEqual(accepted - stored, set(), "2xx events lost")
        self.assertEqual(set(refused) & stored, set(),
                         "503 events were recorded")
        self.assertIn("store: unavailable: database file: No such file",
                      self.s.log())

    def test_deleted_file_is_never_recreated_by_a_running_gcrelay(self):
        """A running gcrelay does not start afresh on an empty database
        (its brands are gone: every event would be refused as 404, which
        tells the sender not to retry)."""
        self.s = Stack(workers=2)
        self.s.demo_brand()
        self.post()
        os.unlink(self.s.db_path)
        self.assert_unavailable(n=3)
        time.sleep(1.5)  # a recovery try has happened meanwhile
        self.assert_unavailable(n=3)
        self.assertFalse(os.path.exists(self.s.db_path))


class TestReadOnlyStore(StoreFaultCase):
    def test_read_only_file_refuses_events_and_recovers(self):
        """chmod 0400 (and a worker respawned meanwhile opens it
        read-only): intake and /healthz both say 503; chmod 0600 and both
        recover within seconds, the respawned worker too, and what was
        accepted is delivered."""
        self.s = Stack(workers=2)
        self.s.demo_brand(emarsys=False)
        accepted = {self.post()[0]}
        os.chmod(self.s.db_path, 0o400)
        old = set(self.s.worker_pids())
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        self.s.wait(lambda: len(set(self.s.worker_pids()) - old) >= 2,
                    what="workers respawned")
        refused = self.assert_unavailable(n=8)

        os.chmod(self.s.db_path, 0o600)
        accepted.add(self.until_accepted())
        # Both workers (the requests are spread over them), not just one.
        for _ in range(6):
            wid, status, _ = self.post()
            self.assertIn(status, (200, 202))
            accepted.add(wid)
        self.assertEqual(self.healthz()[0], 200)

        def delivered():
            rows = self.s.query("SELECT event_id, status FROM deliveries")
            done = {e for e, st in rows if st == "delivered"}
            return accepted <= done
        self.s.wait(delivered, timeout=20, what="accepted events delivered")
        self.assertEqual(set(refused) & self.stored_ids(), set())
        log = self.s.log()
        # A fault is logged once per process, not on every poll.
        self.assertLessEqual(log.count("store: unavailable"), 8, log[-3000:])
        self.assertNotIn("not an error", log)


class TestFullDisk(StoreFaultCase):
    def setUp(self):
        self.mnt = tempfile.mkdtemp(prefix="gcrelay-full-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755",
                        "tmpfs", self.mnt], check=True)

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            subprocess.run(["umount", "-l", self.mnt], check=False)
            os.rmdir(self.mnt)

    def fill(self, path):
        """Fill the filesystem to the last byte."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (65536, 4096, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def test_full_disk_health_and_intake_agree_and_recover(self):
        self.s = Stack(workers=2, start=False)
        state = os.path.join(self.mnt, "state")
        os.mkdir(state, 0o700)
        self.s._chown(state)
        self.s.db_path = os.path.join(state, "gcrelay.db")
        self.s.write_config()
        self.s.start()
        self.s.demo_brand()
        accepted = {self.post()[0] for _ in range(3)}

        filler = os.path.join(self.mnt, "filler")
        self.fill(filler)
        # The first writes find the disk full; from then on intake and
        # /healthz agree that the store cannot take events.
        statuses = []
        for _ in range(30):
            wid, status, code = self.post()
            statuses.append(status)
            if status in (200, 202):
                accepted.add(wid)
            hs, body = self.healthz()
            if status == 503:
                self.assertEqual(code, "store_unavailable")
                self.assertEqual(hs, 503, body)
                break
        self.assertEqual(statuses[-1], 503, statuses)
        self.assertIn("full", self.healthz()[1]["detail"])
        refused = self.assert_unavailable(n=4)

        os.unlink(filler)
        accepted.add(self.until_accepted())
        self.assertEqual(self.healthz()[0], 200)
        self.restart()
        stored = self.stored_ids()
        self.assertEqual(accepted - stored, set(), "2xx events lost")
        self.assertEqual(set(refused) & stored, set())


if __name__ == "__main__":
    unittest.main()
