"""Canned upstreams for the bench: one nginx that answers, over TLS on
loopback, exactly what gcrelay needs from SAP Emarsys and Yotpo Loyalty
(/work/shared/reference/emarsys-api.md, yotpo-api.md), so that the
upstream side is never the bottleneck.  The Python simulators
(tests/sim) are for correctness; this is for throughput.

    up = CannedUpstream(stack)          # stack: a tests/lib/stack.Stack
    gcrelay: emarsys.token_url = https://127.0.0.1:<up.port>/oauth2/token
             emarsys.api_base  = https://127.0.0.1:<up.port>/api/v3/
             yotpo.api_base    = https://127.0.0.1:<up.port>/api/v2
             http.ca_file      = the test CA (stack.certs["ca"])
    up.set_mode(delay_ms=200, ratelimit=True)   # new conf + reload
    up.set_outage(True)                         # flag file: 503 everywhere
    off = up.log_offset(); ...; up.calls(off), up.awards(off)

Answers (all JSON):
  POST /oauth2/token            {"access_token":"bench-<client_id>",...}
                                (the token names the API user: the Basic
                                auth user, nginx's $remote_user)
  GET  /api/v3/field/translate/en  "Mobile SMS Opt-in" + the
                                gocertify_<group>_verified_at fields of
                                VERIFIED_GROUPS
  POST /api/v3/field            a new id (should not be needed)
  GET  /api/v3/event            gocertify_consent_intent (1001),
                                gocertify_offer_claimed (1002)
  POST /api/v3/event            a new id (should not be needed)
  PUT  /api/v3/contact/         {"replyCode":0,...,"data":{"ids":["1"]}}
  POST /api/v3/event/<id>/trigger  {"replyCode":0,...,"data":{}}
  POST /api/v2/actions          200 {}
  GET  /api/v2/customers        a customer with an empty history_items
Emarsys answers carry X-RateLimit-Limit: 1000, X-Ratelimit-Remaining and
X-RateLimit-Reset (unix time of the next second).

Options:
  delay     every canned answer waits delay_ms (echo_sleep, from Debian's
            libnginx-mod-http-echo, loaded with load_module); the token
            endpoint too.  Changing it rewrites the conf and reloads.
  outage    every call is answered 503 at once while the flag file
            exists (an `if (-f ...)` per location; no reload).
  ratelimit Emarsys API calls (/api/v3/, not the token endpoint) go
            through limit_req at 1000 requests/minute per API user (key:
            the Authorization header, i.e. the per-client token), burst
            RATELIMIT_BURST nodelay, limit_req_status 429 with Emarsys's
            7003 envelope.  The burst is small on purpose: a client that
            sends faster than 1000/min sees 429s within a second, as with
            the real API's per-minute window; 50 absorbs the start-up
            calls (token, field list, event list) of a fresh client.

Counting: the access log has one line per call, "status method uri
request_time body"; the body is logged (JSON-escaped) only for POST
/api/v2/actions, where history_title carries "(ref <verification
token>)": two 2xx awards with the same token are a double award.
echo_read_request_body makes nginx read the body so that $request_body
is set.  Answers given in an outage are logged too (status 503).
"""

import collections
import http.client
import os
import re
import signal
import subprocess
import time

ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
RATELIMIT_PER_MINUTE = 1000
RATELIMIT_BURST = 50

# Groups the bench's events name (stack.sample_event: parent "Key Worker",
# child "NHS Worker"), plus a few common ones.
VERIFIED_GROUPS = ["key_worker", "nhs_worker", "student", "teacher",
                   "military", "nurse", "graduate", "over_60"]
SMS_FIELD_ID = "12817"
EVENT_IDS = {"gocertify_consent_intent": "1001",
             "gocertify_offer_claimed": "1002"}

CONF = r"""
load_module %(echo)s;
worker_processes 1;
daemon off;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log warn;
events { worker_connections 8192; }
http {
  # %(mode)s
  log_format canned escape=json
      '$status $request_method $uri $request_time "$canned_body"';
  access_log %(dir)s/access.log canned;
  client_body_temp_path %(dir)s/body;
  proxy_temp_path %(dir)s/proxy;
  fastcgi_temp_path %(dir)s/fastcgi;
  uwsgi_temp_path %(dir)s/uwsgi;
  scgi_temp_path %(dir)s/scgi;
  client_body_buffer_size 64k;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  default_type application/json;
  map $uri $canned_body { /api/v2/actions $request_body; default "-"; }
  map $msec $canned_reset {
%(reset_map)s
  }
  limit_req_zone $http_authorization zone=emarsys:4m rate=%(rpm)dr/m;
  server {
    listen 127.0.0.1:%(port)d ssl;
    ssl_certificate %(cert)s;
    ssl_certificate_key %(key)s;
    ssl_session_cache shared:canned:4m;
%(locations)s
  }
  server {
    listen 127.0.0.1:%(ctl_port)d;
    access_log off;
    location = /_canned/mode { return 200 '%(mode)s'; }
  }
}
"""

OUTAGE = """if (-f %(flag)s) { return 503 '{"replyCode":1,"replyText":"canned \
outage","data":""}'; }"""

EM_HEADERS = """
      add_header X-RateLimit-Limit %(rpm)d always;
      add_header X-Ratelimit-Remaining %(remaining)s always;
      add_header X-RateLimit-Reset $canned_reset always;"""


def _reset_map():
    """$msec -> the next whole second (unix time): +1 on the integer part
    with a carry over the last two digits (x99 stays x99: rare)."""
    lines = []
    for d in range(9):
        lines.append('    "~^(?<p>\\d*)%d\\." ${p}%d;' % (d, d + 1))
    for d in range(9):
        lines.append('    "~^(?<p>\\d*)%d9\\." ${p}%d0;' % (d, d + 1))
    # regex maps try in order: the x9 patterns first, the catch-all last.
    return "\n".join(lines[9:] + lines[:9] +
                     ['    "~^(?<p>\\d*)\\." $p;'])


class CannedUpstream:
    def __init__(self, s, name="canned", delay_ms=0, ratelimit=False):
        self.s = s
        self.dir = os.path.join(s.dir, name)
        os.mkdir(self.dir)
        self.flag = os.path.join(self.dir, "outage")
        self.access_log = os.path.join(self.dir, "access.log")
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.gen = 0
        self.delay_ms = delay_ms
        self.ratelimit = ratelimit
        self.proc = None
        for _ in range(5):
            from stack import free_port
            self.port, self.ctl_port = free_port(), free_port()
            self._write()
            self.proc = subprocess.Popen(
                ["nginx", "-p", self.dir, "-c", self.conf],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(self.dir, "stderr"), "ab"),
                preexec_fn=s._preexec)
            if self._wait_mode(10):
                return
            err = open(os.path.join(self.dir, "stderr")).read()
            self.stop()
            if "Address already in use" not in err:
                raise RuntimeError("canned nginx did not start: " + err)
        raise RuntimeError("canned nginx could not bind free ports")

    @property
    def mode(self):
        return "gen=%d delay_ms=%d ratelimit=%d" % (
            self.gen, self.delay_ms, int(self.ratelimit))

    # ---- configuration ------------------------------------------------------

    def _answer(self, body, em=False, status=200):
        sleep = ("echo_sleep %.3f; " % (self.delay_ms / 1000.0)
                 if self.delay_ms > 0 else "")
        hdr = ""
        if em:
            hdr = EM_HEADERS % {"rpm": RATELIMIT_PER_MINUTE,
                                "remaining": RATELIMIT_PER_MINUTE - 1}
        st = "" if status == 200 else "echo_status %d; " % status
        body = body.replace("'", "\\'")
        return "%s\n      %s%secho_read_request_body; echo -n '%s';" % (
            hdr, st, sleep, body)

    def _loc(self, match, method, body, em=False, limited=False):
        out = OUTAGE % {"flag": self.flag}
        lim = ""
        if limited and self.ratelimit:
            lim = ("\n      limit_req zone=emarsys burst=%d nodelay;"
                   "\n      limit_req_status 429;"
                   "\n      error_page 429 @emarsys429;" % RATELIMIT_BURST)
        return """
    location %s {
      %s
      limit_except %s { deny all; }%s%s
    }""" % (match, out, method, lim, self._answer(body, em))

    def _locations(self):
        ok = '{"replyCode":0,"replyText":"OK","data":%s}'
        fields = [{"id": SMS_FIELD_ID, "name": "Mobile SMS Opt-in",
                   "application_type": "singlechoice"},
                  {"id": "3", "name": "Email",
                   "application_type": "longtext"}]
        for n, g in enumerate(VERIFIED_GROUPS):
            fields.append({"id": str(20001 + n),
                           "name": "gocertify_%s_verified_at" % g,
                           "application_type": "date"})
        events = [{"id": i, "name": n} for n, i in EVENT_IDS.items()]
        import json
        j = lambda v: json.dumps(v, separators=(",", ":"))  # noqa: E731
        locs = [
            self._loc("= /oauth2/token", "POST",
                      '{"access_token":"bench-$remote_user",'
                      '"token_type":"bearer","expires_in":3600}'),
            self._loc("= /api/v3/field/translate/en", "GET",
                      ok % j(fields), em=True, limited=True),
            self._loc("= /api/v3/field", "POST",
                      ok % '{"id":"29999"}', em=True, limited=True),
            self._loc("= /api/v3/event", "GET",
                      ok % j(events), em=True, limited=True),
            self._loc("= /api/v3/contact/", "PUT",
                      ok % '{"ids":["1"]}', em=True, limited=True),
            self._loc("~ ^/api/v3/event/[0-9]+/trigger$", "POST",
                      ok % "{}", em=True, limited=True),
            self._loc("= /api/v2/actions", "POST", "{}"),
            self._loc("= /api/v2/customers", "GET",
                      '{"email":"bench@example.com","points_balance":0,'
                      '"history_items":[]}'),
        ]
        locs.append("""
    location @emarsys429 {%s
      return 429 '{"replyCode":7003,"replyText":"Too many requests",\
"data":""}';
    }
    location / { return 404 '{"error":"not canned"}'; }""" % (
            EM_HEADERS % {"rpm": RATELIMIT_PER_MINUTE, "remaining": 0}))
        return "".join(locs)

    def _write(self):
        text = CONF % {
            "echo": ECHO_MODULE, "dir": self.dir, "port": self.port,
            "ctl_port": self.ctl_port, "cert": self.s.certs["cert"],
            "key": self.s.certs["key"], "rpm": RATELIMIT_PER_MINUTE,
            "reset_map": _reset_map(), "mode": self.mode,
            "locations": self._locations()}
        with open(self.conf, "w") as f:
            f.write(text)

    def _wait_mode(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.ctl_port,
                                               timeout=1)
                c.request("GET", "/_canned/mode")
                r = c.getresponse()
                body = r.read().decode()
                c.close()
                if body == self.mode:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def set_mode(self, delay_ms=None, ratelimit=None):
        """Rewrite the conf and reload; returns once the new workers
        answer (the old ones finish their requests meanwhile)."""
        if delay_ms is not None:
            self.delay_ms = delay_ms
        if ratelimit is not None:
            self.ratelimit = ratelimit
        self.gen += 1
        self._write()
        self.proc.send_signal(signal.SIGHUP)
        if not self._wait_mode(15):
            raise RuntimeError("canned nginx did not reload: %s" % open(
                os.path.join(self.dir, "error.log")).read()[-2000:])

    def set_outage(self, on):
        if on:
            open(self.flag, "w").close()
        elif os.path.exists(self.flag):
            os.unlink(self.flag)

    # ---- counting -----------------------------------------------------------

    def log_offset(self):
        try:
            return os.path.getsize(self.access_log)
        except OSError:
            return 0

    def _lines(self, offset):
        with open(self.access_log, "rb") as f:
            f.seek(offset)
            for line in f:
                parts = line.rstrip(b"\n").split(b" ", 4)
                if len(parts) == 5:
                    yield parts

    @staticmethod
    def path_class(uri):
        if uri.startswith("/api/v3/event/") and uri.endswith("/trigger"):
            return "/api/v3/event/<id>/trigger"
        return uri

    def calls(self, offset=0):
        """Counter of (method, path, status) since offset."""
        c = collections.Counter()
        for st, meth, uri, _, _ in self._lines(offset):
            c[(meth.decode(), self.path_class(uri.decode()),
               st.decode())] += 1
        return c

    def awards(self, offset=0):
        """Counter token -> 2xx POST /api/v2/actions since offset."""
        c = collections.Counter()
        rx = re.compile(rb"\(ref ([^)\\\"]+)\)")
        for st, meth, uri, _, body in self._lines(offset):
            if uri == b"/api/v2/actions" and st.startswith(b"2"):
                m = rx.search(body)
                c[m.group(1).decode() if m else "?"] += 1
        return c

    def stop(self, timeout=5):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def summarize_calls(calls):
    """'PUT /api/v3/contact/ 200 x3, ...' sorted by path."""
    return ", ".join("%s %s %s x%d" % (m, p, s, n) for (m, p, s), n in
                     sorted(calls.items(), key=lambda kv: (kv[0][1],
                                                           kv[0][0],
                                                           kv[0][2])))
