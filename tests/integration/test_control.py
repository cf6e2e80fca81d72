"""Issue 8, item 4: a control plane that never starves.  /healthz,
/metrics and /admin have their own socket and workers, so they answer
while every data worker waits on a slow remote API; the control socket
serves nothing else."""

import json
import fcntl
import os
import re
import socket
import subprocess
import threading
import time
import unittest

import fcgi
import stack
from stack import BUILD, Stack, sample_event

GCRELAY = os.path.join(BUILD, "gcrelay")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          **kw)


def gcrelay_kw(s):
    if s.user is None:
        return {}
    return {"user": s.user.pw_uid, "group": s.user.pw_gid,
            "extra_groups": []}


class NeverStarved(unittest.TestCase):
    """Both data workers held for 10 s by a slow Emarsys: health and the
    signed admin API still answer at once."""

    def test_health_and_admin_answer_while_data_workers_are_held(self):
        with Stack(workers=2, budget_ms=30000,
                   http_timeout_ms=20000) as s:
            s.demo_brand(yotpo=False)
            s.emarsys.fault("delay", ms=10000, count=-1,
                            path_prefix="/api/v3/contact")
            out = []

            def send(i):
                out.append(s.post_event(sample_event("consent_intent"),
                                        webhook_id="held_%d" % i))
            threads = [threading.Thread(target=send, args=(i,))
                       for i in range(2)]
            for t in threads:
                t.start()
            try:
                # Both data workers are now inside a delivery.
                s.emarsys.wait_for(lambda c: len(c.requests(
                    path_prefix="/api/v3/contact")) >= 2, timeout=10)
                # The data socket has no free worker: a health check
                # sent there waits (this is what used to starve).
                with self.assertRaises(socket.timeout):
                    fcgi.request(s.socket_path, "GET", "/healthz",
                                 timeout=1.5)
                t0 = time.monotonic()
                r = s.request("GET", "/healthz", timeout=3)
                self.assertEqual(r.status, 200, r)
                r = s.admin("GET", "/admin/v1/brands")
                self.assertEqual(r.status, 200, r)
                self.assertEqual([b["slug"] for b in r.json["brands"]],
                                 ["acme"])
                r = s.request("GET", "/metrics", timeout=3)
                self.assertEqual(r.status, 200, r)
                self.assertLess(time.monotonic() - t0, 3.0)
                self.assertTrue(all(t.is_alive() for t in threads))
            finally:
                s.emarsys.clear_faults()
                for t in threads:
                    t.join(60)
            self.assertEqual(len(out), 2)
            for r in out:
                self.assertIn(r.status, (200, 202), r)


class ControlSocket(unittest.TestCase):
    """What each socket serves, spoken to in FastCGI without nginx."""

    @classmethod
    def setUpClass(cls):
        cls.s = Stack(sims=False)
        cls.s.put_brand("acme", {"name": "Acme"})

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def signed(self):
        body = json.dumps(sample_event("consent_intent")).encode()
        wid = "msg_ctl_%d" % time.monotonic_ns()
        ts = int(time.time())
        self.wid = wid
        return body, {"Content-Type": "application/json", "webhook-id": wid,
                      "webhook-timestamp": str(ts),
                      "webhook-signature": stack.sign_webhook(
                          self.s.webhook_secrets[0], wid, ts, body)}

    def test_events_on_control_socket_is_404_problem(self):
        body, h = self.signed()
        for method in ("POST", "GET"):
            status, hdrs, raw = fcgi.request(self.s.control_path, method,
                                             "/v1/events", body, h)
            self.assertEqual(status, 404, raw)
            self.assertEqual(hdrs["Content-Type"],
                             "application/problem+json")
            doc = json.loads(raw)
            self.assertEqual(doc["status"], 404)
            self.assertEqual(doc["code"], "not_found")
            self.assertIn("not served on the control socket",
                          doc["detail"])
        self.assertEqual(self.s.query("SELECT count(*) FROM events WHERE "
                                      "id = ?", self.wid), [(0,)])

    def test_control_socket_serves_health_metrics_admin(self):
        for uri in ("/healthz", "/metrics"):
            status, _, raw = fcgi.request(self.s.control_path, "GET", uri)
            self.assertEqual(status, 200, raw)
        ts = int(time.time())
        h = {"X-Gcrelay-Key": stack.ADMIN_READ[0],
             "X-Gcrelay-Timestamp": str(ts),
             "X-Gcrelay-Signature": stack.sign_admin(
                 stack.ADMIN_READ[1], "GET", "/admin/v1/brands", ts, b"")}
        status, _, raw = fcgi.request(self.s.control_path, "GET",
                                      "/admin/v1/brands", b"", h)
        self.assertEqual(status, 200, raw)
        status, _, raw = fcgi.request(self.s.control_path, "GET", "/nope")
        self.assertEqual(status, 404)
        self.assertIn("no route for /nope", json.loads(raw)["detail"])

    def test_data_socket_still_serves_every_route(self):
        """An nginx that sends everything to the data socket (the old
        site config) keeps working."""
        status, _, _ = fcgi.request(self.s.socket_path, "GET", "/healthz")
        self.assertEqual(status, 200)
        body, h = self.signed()
        status, _, raw = fcgi.request(self.s.socket_path, "POST",
                                      "/v1/events", body, h)
        self.assertEqual(status, 200, raw)

    def test_children_and_log(self):
        # 2 workers, 1 control worker, 1 dispatcher.
        self.assertEqual(len(self.s.worker_pids()), 4)
        self.assertIn("started 2 workers, 1 control workers and 1 "
                      "dispatchers", self.s.log())
        self.assertIn("control on %s" % self.s.control_path, self.s.log())


class Listeners(unittest.TestCase):
    """Config defaults, validation and inherited sockets."""

    def conf(self, s, listen):
        text = open(s.config_path).read().replace(
            'listen = { socket = "%s"; mode = "0666"; };' % s.socket_path,
            listen)
        with open(s.config_path, "w") as f:
            f.write(text)

    def test_validation(self):
        with Stack(sims=False, start=False) as s:
            d = s.state_dir
            for listen, want in [
                    ('listen = { socket = "%s/a.sock"; control_socket = '
                     '"%s/a.sock"; };' % (d, d),
                     "listen.control_socket must differ from listen.socket"),
                    ('listen = { control_socket = "/tmp/c"; control_port = '
                     '9001; };', "set listen.control_socket or "
                     "listen.control_port, not both"),
                    ("listen = { port = 65535; };",
                     "listen.port 65535 leaves no default "
                     "listen.control_port"),
                    ("listen = { port = 9000; control_port = 9000; };",
                     "listen.control_port must differ from listen.port"),
                    ("control_workers = 17;",
                     "control_workers must be between 1 and 16")]:
                with self.subTest(listen=listen):
                    path = os.path.join(s.dir, "v.conf")
                    base = open(s.config_path).read()
                    if listen.startswith("listen"):
                        base = re.sub(r"listen = \{[^\n]*\};", listen, base)
                    else:
                        base += "\n" + listen + "\n"
                    with open(path, "w") as f:
                        f.write(base)
                    r = run([GCRELAY, "-t", "-c", path])
                    self.assertEqual(r.returncode, 1, r.stdout)
                    self.assertRegex(r.stderr, r"v\.conf:\d+: ")
                    self.assertIn(want, r.stderr)

    def test_tcp_default_control_port_is_port_plus_one(self):
        for _ in range(20):
            port = stack.free_port()
            if port < 65535 and _tcp_free(port + 1):
                break
        with Stack(sims=False, start=False) as s:
            self.conf(s, "listen = { port = %d; };" % port)
            s.gcrelay = subprocess.Popen(
                [GCRELAY, "-c", s.config_path],
                stdout=open(s.log_path, "ab"), stderr=subprocess.STDOUT,
                env=s._gcrelay_env(), **gcrelay_kw(s))
            deadline = time.monotonic() + 10
            while True:
                try:
                    status, _, raw = fcgi.request(("127.0.0.1", port + 1),
                                                   "GET", "/healthz")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise AssertionError(s.log())
                    time.sleep(0.05)
            self.assertEqual(status, 200, raw)
            status, _, _ = fcgi.request(("127.0.0.1", port + 1),
                                        "POST", "/v1/events")
            self.assertEqual(status, 404)
            self.assertEqual(s.stop_gcrelay(), 0)

    def test_systemd_hands_both_sockets(self):
        """LISTEN_FDS=2: fd 3 is the data socket, fd 4 the control one;
        gcrelay creates neither and removes neither."""
        with Stack(sims=False, start=False) as s:
            socks = []
            for path in (s.socket_path, s.control_path):
                ls = socket.socket(socket.AF_UNIX)
                ls.bind(path)
                os.chmod(path, 0o666)
                ls.listen(16)
                socks.append(ls)
            # Above 4 (and below 10, for sh) whatever else is open: sh
            # closes a and b after copying them to 3 and 4.
            a, b = (fcntl.fcntl(x.fileno(), fcntl.F_DUPFD, 5)
                    for x in socks)
            cmd = ['LISTEN_PID=$$ LISTEN_FDS=2 exec "$0" -c "$1" '
                   '3<&%d 4<&%d %d<&- %d<&-' % (a, b, a, b)]
            s.gcrelay = subprocess.Popen(
                ["sh", "-c"] + cmd + [GCRELAY, s.config_path],
                stdin=subprocess.DEVNULL, pass_fds=(a, b),
                stdout=open(s.log_path, "ab"), stderr=subprocess.STDOUT,
                env=s._gcrelay_env(), **gcrelay_kw(s))
            for x in socks:
                x.close()
            os.close(a)
            os.close(b)
            s.start_nginx()
            s.wait_healthy()
            log = s.log()
            self.assertIn("inherited data listening socket on fd 3", log)
            self.assertIn("inherited control listening socket on fd 4", log)
            status, _, _ = fcgi.request(s.control_path, "POST", "/v1/events")
            self.assertEqual(status, 404)
            status, _, _ = fcgi.request(s.socket_path, "GET", "/healthz")
            self.assertEqual(status, 200)
            self.assertEqual(s.stop_gcrelay(), 0)
            self.assertTrue(os.path.exists(s.control_path))

    def test_sighup_keeps_both_planes(self):
        with Stack(sims=False, config_extra="control_workers = 2;") as s:
            pids = set(s.worker_pids())
            self.assertEqual(len(pids), 5)
            os.kill(s.gcrelay.pid, 1)
            s.wait(lambda: len(s.worker_pids()) == 5 and
                   not (set(s.worker_pids()) & pids), what="new generation")
            self.assertEqual(s.request("GET", "/healthz").status, 200)
            status, _, _ = fcgi.request(s.control_path, "POST", "/v1/events")
            self.assertEqual(status, 404)
        self.assertFalse(os.path.exists(s.control_path))


def _tcp_free(port):
    with socket.socket() as x:
        try:
            x.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


if __name__ == "__main__":
    unittest.main()
