"""A step of the wall clock (issue 9, item 10), through nginx -> gcrelay ->
the simulators.

gcrelay runs under libfaketime (Debian package faketime) with file-based
control: the test steps gcrelay's wall clock by hours in the middle of a
request, a hold or a backoff, while CLOCK_MONOTONIC keeps going
(DONT_FAKE_MONOTONIC=1): the realistic case of NTP or an operator setting
the clock.  Stored times (leases, next_attempt_at) stay wall-clock by
design; every deadline, wait, hold and backoff in a process must not move.
The tests assert what users see: how long a sender waits and what it is
answered, whether a held account is called again once its reset has come,
whether a crashed child comes back, whether a stop cuts a request short.
Each fails against the wall-clock code (see the test docstrings).
"""

import calendar
import json
import os
import re
import secrets
import signal
import threading
import time
import unittest

import stack as stack_mod
from stack import SANITIZERS, Stack, sample_event

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
ACCOUNT = "demo_client"
HOUR = 3600
BACKOFF_RE = re.compile(r"respawning in (\d+) s")


def setUpModule():
    if not os.path.exists(LIBFAKETIME):
        raise RuntimeError("%s is missing: install the Debian package "
                           "faketime (deploy/deps.sh does)" % LIBFAKETIME)


def faked_env(spec):
    """Environment entries that run a program under libfaketime; spec is
    a FAKETIME value, or None for file-based control (see ClockStack)."""
    env = {"LD_PRELOAD": LIBFAKETIME, "DONT_FAKE_MONOTONIC": "1",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    if spec is not None:
        env["FAKETIME"] = spec
    return env


_make_certs = stack_mod.make_certs


def backdated_certs(path):
    """The simulators' certificates, valid from two days ago, so that
    gcrelay still accepts them after its clock is stepped back."""
    saved = dict(os.environ)
    os.environ.update(faked_env("-2d"))
    try:
        return _make_certs(path)
    finally:
        os.environ.clear()
        os.environ.update(saved)


stack_mod.make_certs = backdated_certs


class ClockStack(Stack):
    """A Stack whose gcrelay (every process of it) reads its wall clock
    through libfaketime from a file the test rewrites: step() moves it."""

    def __init__(self, **kw):
        self.offset = 0
        self.clock_file = None
        super().__init__(**kw)

    def _gcrelay_env(self):
        env = super()._gcrelay_env()
        env.update(faked_env(None))
        env["FAKETIME_TIMESTAMP_FILE"] = self.clock_file
        env["FAKETIME_NO_CACHE"] = "1"  # read the file at every call
        if SANITIZERS:  # ASan must otherwise be the first library
            env["ASAN_OPTIONS"] += ":verify_asan_link_order=0"
        return env

    def start(self):
        self.clock_file = os.path.join(self.dir, "faketime")
        self.step(0)
        super().start()

    def step(self, seconds):
        """Step gcrelay's wall clock by seconds (monotonic: untouched)."""
        self.offset += seconds
        tmp = self.clock_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%+d\n" % self.offset)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.clock_file)

    def now(self):
        """gcrelay's idea of now, in unix seconds."""
        return int(time.time()) + self.offset

    def stepped_in_log(self):
        """How far gcrelay's last log line (written just now) is from the
        real time less the offset, in seconds: about 0 when its wall clock
        really was stepped (libfaketime took)."""
        lines = [ln for ln in self.log().splitlines() if ln.startswith("{")]
        t = json.loads(lines[-1])["time"]
        logged = calendar.timegm(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S"))
        return logged - time.time() - self.offset

    def post_event(self, event, webhook_id=None, ts=None, **kw):
        return super().post_event(event, webhook_id,
                                  self.now() if ts is None else ts, **kw)

    def admin_ts(self, key_id, method, uri, signed):
        now = self.now()
        for d in range(0, 250):
            for ts in (now - d, now + d):
                if (key_id, method, uri, signed, ts) not in self.admin_used:
                    return ts
        raise AssertionError("no unused admin timestamp left")


class ClockStep(unittest.TestCase):
    s = None

    def assert_stepped(self):
        """The step did reach gcrelay: else every test here would pass
        without testing anything."""
        self.assertLess(abs(self.s.stepped_in_log()), 5,
                        "gcrelay's wall clock was not stepped")

    def tearDown(self):
        if self.s is not None:
            try:
                for sim in (self.s.emarsys, self.s.yotpo):
                    self.assertEqual(sim.stats()["internal_errors"], 0)
            finally:
                self.s.close()
                self.s = None

    def stack(self, **kw):
        self.s = ClockStack(**kw)
        self.s.put_brand("acme", {
            "name": "Acme UK",
            "emarsys": {"client_id": ACCOUNT,
                        "client_secret": "demo_secret"}})
        return self.s

    def post_in_thread(self, ev):
        """Post ev from a thread: (thread, {"r", "took"} once done)."""
        out = {}

        def run():
            t0 = time.monotonic()
            try:
                out["r"] = self.s.post_event(
                    ev, webhook_id="msg_" + secrets.token_hex(8))
            except Exception as exc:      # noqa: BLE001
                out["r"] = exc
            out["took"] = time.monotonic() - t0
        t = threading.Thread(target=run)
        t.start()
        return t, out

    def wait_token_request(self):
        """Until gcrelay's token request has reached Emarsys."""
        self.s.wait(lambda: self.s.emarsys.requests(
            path_prefix="/oauth2/token"), timeout=10,
            what="the token request")

    def emarsys_status(self, wid):
        rows = self.s.query("SELECT status FROM deliveries WHERE "
                            "event_id = ? AND destination = 'emarsys'", wid)
        return rows[0][0] if rows else None

    # ---- the engine's deadlines -------------------------------------------

    def test_backward_step_does_not_stretch_the_sync_budget(self):
        """Every Emarsys call takes 6 s; the clock goes back 2 h while the
        token is fetched.  The sender is still answered at the 2 s sync
        budget (202: the dispatcher finishes it).  On the wall clock the
        budget had 2 h left, each call ran to its 6 s reply: 20 s+."""
        s = self.stack(sync_budget_ms=2000, http_timeout_ms=8000)
        s.emarsys.fault("delay", ms=1500, path_prefix="/oauth2/token")
        s.emarsys.fault("delay", ms=6000, path_prefix="/api/v3/", count=-1)
        t, out = self.post_in_thread(sample_event("consent_intent"))
        self.wait_token_request()
        s.step(-2 * HOUR)
        t.join(90)
        r = out["r"]
        self.assertNotIsInstance(r, Exception)
        self.assertLess(out["took"], 3.5, "sender waited %.1f s for a "
                        "2 s budget: %r" % (out["took"], r))
        self.assertEqual(r.status, 202, r)
        self.assert_stepped()
        s.emarsys.clear_faults()

    def test_forward_step_does_not_cut_the_sync_budget(self):
        """The token takes 0.8 s of a 3 s budget; the clock jumps 10 s
        ahead meanwhile.  The event is still delivered at once (200).  On
        the wall clock the budget was gone: 202, "time budget used up".
        (10 s stays within the lease's 15 s slack: leases are stored, on
        the wall clock, and a jump past them lets the dispatcher take the
        delivery over, which is right for a stored lease.)"""
        s = self.stack(sync_budget_ms=3000, http_timeout_ms=3000)
        s.emarsys.fault("delay", ms=800, path_prefix="/oauth2/token")
        t, out = self.post_in_thread(sample_event("consent_intent"))
        self.wait_token_request()
        s.step(10)
        t.join(30)
        r = out["r"]
        self.assertNotIsInstance(r, Exception)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([d["status"] for d in r.json["deliveries"]
                          if d["destination"] == "emarsys"], ["delivered"])
        self.assert_stepped()

    def test_backward_step_does_not_stretch_a_429_hold(self):
        """Emarsys answers 429 with a reset 4 s away; then the clock goes
        back 2 h.  A new event for that account is delivered once the
        reset has come, and nothing calls the account before it.  With
        the hold on the wall clock it lasted 2 h and 4 s."""
        s = self.stack(sync_budget_ms=2000)
        reset = int(time.time()) + 4
        s.emarsys.fault("status", status=429, path_prefix="/api/v3/contact",
                        headers={"X-RateLimit-Reset": str(reset)})
        r = s.post_event(sample_event("consent_intent"), webhook_id="e1")
        self.assertEqual(r.status, 202, r)
        self.assertTrue([q for q in s.emarsys.requests() if q["status"]
                         == 429], "the 429 was not answered")
        s.step(-2 * HOUR)
        r = s.post_event(sample_event("consent_intent"), webhook_id="e2")
        self.assertIn(r.status, (200, 202), r)
        s.wait(lambda: self.emarsys_status("e2") == "delivered",
               timeout=20, interval=0.2, what="e2 delivered after the reset")
        early = [(q["path"], q["early_ms"]) for q in s.emarsys.requests()
                 if q.get("before_reset")]
        self.assertEqual(early, [], "calls before the 429's reset")
        self.assert_stepped()

    # ---- the supervisor -----------------------------------------------------

    def kill_until_backoff(self):
        """Kill one slot's child again and again, each time at once after
        its start (a crash loop), until the master backs off; returns the
        backoff in seconds."""
        s = self.s
        children = set(s.worker_pids())
        victim = min(children)

        def respawned_or_backoff():
            m = BACKOFF_RE.search(s.log())
            if m is not None:
                return ("backoff", int(m.group(1)))
            new = set(s.worker_pids()) - children
            return ("respawned", new.pop()) if new else None
        for _ in range(4):
            os.kill(victim, signal.SIGUSR2)  # dies by it (libfcgi owns USR1)
            kind, v = s.wait(respawned_or_backoff, timeout=10,
                             what="a respawn or a backoff")
            if kind == "backoff":
                return v
            children.add(v)
            victim = v
        self.fail("no backoff after 4 quick crashes:\n" + s.log()[-3000:])

    def test_backward_step_does_not_delay_a_respawn(self):
        """A child keeps crashing: it comes back after a backoff of a
        second or two.  The clock goes back 2 h during it: the child is
        still back within seconds (on the wall clock: after 2 h)."""
        s = self.stack()
        n = len(s.worker_pids())
        delay = self.kill_until_backoff()
        s.step(-2 * HOUR)
        s.wait(lambda: len(s.worker_pids()) == n, timeout=delay + 4,
               what="the child back after its %d s backoff" % delay)
        self.assertEqual(s.request("GET", "/healthz").status, 200)
        self.assert_stepped()

    def test_forward_step_does_not_cut_a_stop_short(self):
        """SIGTERM while a request waits 3 s on Emarsys, and the clock
        jumps 3 h ahead: the request is still answered in full and
        gcrelay exits 0.  On the wall clock the 20 s grace period was over
        at once and the master killed the worker mid-request (502)."""
        s = self.stack(sync_budget_ms=6000, http_timeout_ms=8000)
        s.emarsys.fault("delay", ms=3000, path_prefix="/oauth2/token")
        t, out = self.post_in_thread(sample_event("consent_intent"))
        self.wait_token_request()
        s.gcrelay.send_signal(signal.SIGTERM)
        s.wait(lambda: "stopping: waiting for in-flight" in s.log(),
               timeout=5, what="the stop")
        s.step(3 * HOUR)
        t.join(30)
        r = out["r"]
        self.assertNotIsInstance(r, Exception)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(s.gcrelay.wait(30), 0)
        self.assertNotIn("grace period over", s.log())
        self.assert_stepped()


if __name__ == "__main__":
    unittest.main()
