"""Issue 2: process model, config, store, signed admin API, brands,
gcrelayctl, health, logging, nginx and systemd files."""

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import fcgi
import stack
from stack import ADMIN_READ, ADMIN_WRITE, BUILD, ROOT, Stack, sample_event

GCRELAY = os.path.join(BUILD, "gcrelay")
# The one 401 text for every admin authentication failure (issue 9).
AUTH_DETAIL = "request signature is missing, stale, replayed or does not match"
GCRELAYCTL = os.path.join(BUILD, "gcrelayctl")

BRAND = {
    "name": "Acme UK",
    "emarsys": {"client_id": "demo_client",
                "client_secret": "demo_secret_0123456789abcdef",
                "key_field": "email",
                "fields": {"sms_opt_in": 12817}},
    "yotpo": {"guid": "demo_guid_0123456789abcdef",
              "api_key": "yotpo_key_0123456789abcdef_XYZ9",
              "max_rps": 5,
              "actions": {"students": "gocertify-students"}},
}


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          **kw)



# Not collected when the suites run on PostgreSQL (tests/lib/itrun.py):
# they are about the SQLite file itself.
SQLITE_ONLY = {
    "test_store_files_are_private":
        "the modes of the SQLite file and its -wal/-shm; on PostgreSQL "
        "gcrelay keeps no store file",
    "test_crashing_worker_backs_off":
        "crashes new workers by making the SQLite file unopenable (chmod)",
    "test_healthz_reports_unreadable_store":
        "makes the SQLite file unreadable (chmod)",
    "test_purge_leaves_no_email_in_the_files":
        "reads the bytes of the SQLite file and WAL after secure_delete "
        "and a checkpoint; PostgreSQL keeps dead row versions in its heap "
        "until VACUUM",
}

class ConfigCheck(unittest.TestCase):
    """gcrelay -t: every key validated, errors as file:line: message."""

    @classmethod
    def setUpClass(cls):
        cls.s = Stack(sims=False, start=False)

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def check(self, text):
        path = os.path.join(self.s.dir, "t.conf")
        with open(self.s.config_path) as f:
            base = f.read()
        with open(path, "w") as f:
            f.write(base + "\n" + text)
        return run([GCRELAY, "-t", "-c", path]), path

    def test_valid_config_passes(self):
        r = run([GCRELAY, "-t", "-c", self.s.config_path])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration ok", r.stdout)

    def test_errors_name_file_and_line(self):
        cases = [
            ("workers = 0;", "workers must be between 1 and 256"),
            ("wrokers = 3;", "unknown setting 'wrokers'"),
            ("log_level = \"loud\";", "log_level must be one of"),
            ("limits = { max_body_bytes = 10; };",
             "limits.max_body_bytes must be between"),
            ("retrier = { interval_ms = \"fast\"; };",
             "retrier.interval_ms must be an integer"),
            ("emarsys = { api_base = \"http://x/\"; };",
             "emarsys.api_base must be an https:// URL"),
        ]
        for text, want in cases:
            with self.subTest(text=text):
                # Settings are appended after the base file: a repeated
                # group is itself an error, so use a fresh file per case.
                base = open(self.s.config_path).read()
                name = text.split("=")[0].strip()
                kept = "\n".join(l for l in base.splitlines()
                                 if not l.strip().startswith(name + " ")
                                 and not l.strip().startswith(name + "="))
                path = os.path.join(self.s.dir, "c.conf")
                content = kept + "\n" + text + "\n"
                with open(path, "w") as f:
                    f.write(content)
                r = run([GCRELAY, "-t", "-c", path])
                self.assertEqual(r.returncode, 1)
                line = content[:content.rindex(text)].count("\n") + 1
                self.assertRegex(r.stderr, r"^%s:%d: " % (re.escape(path),
                                                         line))
                self.assertIn(want, r.stderr)

    def test_admin_key_rules(self):
        base = open(self.s.config_path).read()
        for bad, want in [
                ('role = "write";', 'role = "admin";'),
                ('secret = "%s";' % ADMIN_WRITE[1], 'secret = "short";')]:
            path = os.path.join(self.s.dir, "k.conf")
            with open(path, "w") as f:
                f.write(base.replace(bad, want, 1))
            r = run([GCRELAY, "-t", "-c", path])
            self.assertEqual(r.returncode, 1)
            self.assertRegex(r.stderr, r":\d+: admin.keys\[0\]\.(role|secret)")

    def test_bad_webhook_secret_and_missing_key_file(self):
        base = open(self.s.config_path).read()
        path = os.path.join(self.s.dir, "w.conf")
        with open(path, "w") as f:
            f.write(base.replace(self.s.webhook_secrets[0], "whsec_!!!"))
        r = run([GCRELAY, "-t", "-c", path])
        self.assertIn("webhook.secrets[0] must be", r.stderr)
        with open(path, "w") as f:
            f.write(re.sub(r'secrets_key_file = "[^"]*"',
                           'secrets_key_file = "/nonexistent/key"', base))
        r = run([GCRELAY, "-t", "-c", path])
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot read key file /nonexistent/key", r.stderr)

    def test_file_modes_like_ssh(self):
        """Issue 9: a key file others may read, or a config or key file
        group or others may write, is refused with file:line: message;
        the shipped modes (config 0640, key 0440) pass."""
        key = os.path.join(self.s.dir, "modes.key")
        with open(key, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        base = re.sub(r'secrets_key_file = "[^"]*"',
                      'secrets_key_file = "%s"' % key,
                      open(self.s.config_path).read())
        path = os.path.join(self.s.dir, "modes.conf")
        with open(path, "w") as f:
            f.write(base)
        key_line = base[:base.index("secrets_key_file")].count("\n") + 1
        cases = [  # (config mode, key mode, line, message or None)
            (0o640, 0o440, 0, None),
            (0o600, 0o400, 0, None),
            (0o644, 0o640, 0, None),
            (0o640, 0o444, key_line, "key file %s has mode 0444" % key),
            (0o640, 0o404, key_line, "key file %s has mode 0404" % key),
            (0o640, 0o460, key_line, "key file %s has mode 0460" % key),
            (0o640, 0o442, key_line, "key file %s has mode 0442" % key),
            (0o646, 0o440, 0, "config file %s has mode 0646" % path),
            (0o660, 0o440, 0, "config file %s has mode 0660" % path),
        ]
        try:
            for cmode, kmode, line, want in cases:
                with self.subTest(config=oct(cmode), key=oct(kmode)):
                    os.chmod(path, cmode)
                    os.chmod(key, kmode)
                    r = run([GCRELAY, "-t", "-c", path])
                    if want is None:
                        self.assertEqual(r.returncode, 0, r.stderr)
                        continue
                    self.assertEqual(r.returncode, 1, r.stdout)
                    self.assertRegex(r.stderr, r"^%s:%d: " % (
                        re.escape(path), line))
                    self.assertIn(want, r.stderr)
                    self.assertIn("must not be", r.stderr)
        finally:
            os.chmod(path, 0o600)
            os.chmod(key, 0o400)

    def test_start_refuses_readable_key(self):
        """The same check runs at start, not only under -t."""
        key = os.path.join(self.s.dir, "start.key")
        with open(key, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        os.chmod(key, 0o444)
        path = os.path.join(self.s.dir, "start.conf")
        with open(path, "w") as f:
            f.write(re.sub(r'secrets_key_file = "[^"]*"',
                           'secrets_key_file = "%s"' % key,
                           open(self.s.config_path).read()))
        kw = {}
        if self.s.user is not None:
            kw = {"user": self.s.user.pw_uid, "group": self.s.user.pw_gid,
                  "extra_groups": []}
            os.chown(key, self.s.user.pw_uid, self.s.user.pw_gid)
        r = run([GCRELAY, "-c", path], **kw)
        self.assertEqual(r.returncode, 1)
        self.assertIn("key file %s has mode 0444" % key, r.stderr)

    def test_syntax_error_and_missing_file(self):
        path = os.path.join(self.s.dir, "s.conf")
        with open(path, "w") as f:
            f.write("workers = 2;\nstore = { path = ; };\n")
        r = run([GCRELAY, "-t", "-c", path])
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"s\.conf:2: ")
        r = run([GCRELAY, "-t", "-c", "/nonexistent.conf"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent.conf:0: cannot read", r.stderr)

    def test_example_config_is_valid(self):
        """deploy/gcrelay.conf.example passes -t once its placeholders are
        filled in, so it documents real, accepted settings."""
        text = open(os.path.join(ROOT, "deploy", "gcrelay.conf.example")).read()
        key = os.path.join(self.s.dir, "secrets.key")
        text = text.replace("/etc/gcrelay/secrets.key", key)
        text = re.sub(r'"whsec_REPLACE_ME[^"]*"',
                      '"%s"' % stack.new_whsec(), text)
        path = os.path.join(self.s.dir, "example.conf")
        with open(path, "w") as f:
            f.write(text)
        r = run([GCRELAY, "-t", "-c", path])
        self.assertEqual(r.returncode, 0, r.stderr)

    @unittest.skipUnless(os.getuid() == 0, "needs root to test the refusal")
    def test_refuses_to_run_as_root(self):
        r = run([GCRELAY, "-c", self.s.config_path])
        self.assertEqual(r.returncode, 1)
        self.assertIn("refusing to run as root", r.stderr)


class AdminAuth(unittest.TestCase):
    """HMAC-signed admin requests: every check has its own 401/403."""

    @classmethod
    def setUpClass(cls):
        cls.s = Stack(sims=False)

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def assertProblem(self, r, status, detail):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.headers.get("Content-Type"),
                         "application/problem+json")
        self.assertEqual(r.json["status"], status)
        self.assertIn(detail, r.json["detail"])
        for _, secret in (ADMIN_WRITE, ADMIN_READ):
            self.assertNotIn(secret, r.raw.decode())
        self.assertEqual(self.s.request("GET", "/healthz").status, 200)

    def test_valid_signature(self):
        r = self.s.admin("GET", "/admin/v1/brands")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, {"brands": []})

    def test_read_key_may_read(self):
        r = self.s.admin("GET", "/admin/v1/brands", key=ADMIN_READ)
        self.assertEqual(r.status, 200)

    def test_bad_signature(self):
        r = self.s.admin("GET", "/admin/v1/brands",
                         headers={"X-Gcrelay-Signature": "v1," +
                                  "A" * 43 + "="})
        self.assertProblem(r, 401, AUTH_DETAIL)

    def test_malformed_signature(self):
        r = self.s.admin("GET", "/admin/v1/brands",
                         headers={"X-Gcrelay-Signature": "sha256=abc"})
        self.assertProblem(r, 401, AUTH_DETAIL)

    def test_stale_and_future_timestamps(self):
        # 10 s past the 300 s tolerance: a whole second lost to flooring
        # now, or a slow (sanitizer) run, must not bring them inside it.
        now = int(time.time())
        r = self.s.admin("GET", "/admin/v1/brands", ts=now - 310)
        self.assertProblem(r, 401, AUTH_DETAIL)
        r = self.s.admin("GET", "/admin/v1/brands", ts=now + 310)
        self.assertProblem(r, 401, AUTH_DETAIL)
        self.assertEqual(self.s.admin("GET", "/admin/v1/brands",
                                      ts=now - 290).status, 200)

    def test_wrong_role(self):
        r = self.s.admin("PUT", "/admin/v1/brands/acme", BRAND,
                         key=ADMIN_READ)
        self.assertProblem(r, 403, 'has role "read"')
        r = self.s.admin("DELETE", "/admin/v1/brands/acme", key=ADMIN_READ)
        self.assertProblem(r, 403, "needs role \"write\"")

    def test_unknown_key(self):
        r = self.s.admin("GET", "/admin/v1/brands",
                         key=("nobody", "x" * 40))
        self.assertProblem(r, 401, AUTH_DETAIL)

    def test_missing_headers(self):
        for h in ("X-Gcrelay-Key", "X-Gcrelay-Timestamp",
                  "X-Gcrelay-Signature"):
            r = self.s.admin("GET", "/admin/v1/brands", headers={h: None})
            self.assertProblem(r, 401, AUTH_DETAIL)

    def test_tampered_body(self):
        body = json.dumps(BRAND).encode()
        r = self.s.admin("PUT", "/admin/v1/brands/acme", body,
                         sign_body=body.replace(b"Acme", b"Acne"))
        self.assertProblem(r, 401, AUTH_DETAIL)
        self.assertEqual(self.s.admin("GET", "/admin/v1/brands/acme").status,
                         404)

    def test_query_is_signed(self):
        uri = "/admin/v1/events?limit=5"
        ts = int(time.time())
        sig = stack.sign_admin(ADMIN_WRITE[1], "GET", "/admin/v1/events", ts,
                               b"")
        r = self.s.request("GET", uri, headers={
            "X-Gcrelay-Key": ADMIN_WRITE[0], "X-Gcrelay-Timestamp": str(ts),
            "X-Gcrelay-Signature": sig})
        self.assertProblem(r, 401, AUTH_DETAIL)
        self.assertEqual(self.s.admin("GET", uri).status, 200)

    def signed(self, method, uri, body=b"", key=ADMIN_WRITE, ts=None):
        """Headers for one request, kept so it can be sent again as is."""
        return self.s.admin_headers(method, uri, body, key, ts)

    def test_replayed_delete_is_refused(self):
        """Issue 9: a captured DELETE replayed after the brand was
        re-created must not delete it again."""
        uri = "/admin/v1/brands/replayco"
        self.s.put_brand("replayco", BRAND)
        h = self.signed("DELETE", uri)
        self.assertEqual(self.s.request("DELETE", uri, headers=h).status, 204)
        self.s.put_brand("replayco", BRAND)
        r = self.s.request("DELETE", uri, headers=h)
        self.assertProblem(r, 401, AUTH_DETAIL)
        self.assertEqual(self.s.admin("GET", uri).status, 200)
        self.assertEqual(self.s.query("SELECT count(*) FROM brands WHERE "
                                      "slug = 'replayco'"), [(1,)])
        self.assertIn("signature was already used", self.s.log())
        self.assertEqual(self.s.admin("DELETE", uri).status, 204)

    def test_replayed_read_is_refused(self):
        """Each signed request is good once, GET too."""
        h = self.signed("GET", "/admin/v1/brands", key=ADMIN_READ)
        r = self.s.request("GET", "/admin/v1/brands", headers=h)
        self.assertEqual(r.status, 200, r)
        r = self.s.request("GET", "/admin/v1/brands", headers=h)
        self.assertProblem(r, 401, AUTH_DETAIL)

    def test_replay_with_other_base64_spelling(self):
        """The last base64 character has two unused bits: a spelling the
        decoder accepts for the same MAC is the same signature."""
        h = self.signed("GET", "/admin/v1/brands")
        r = self.s.request("GET", "/admin/v1/brands", headers=h)
        self.assertEqual(r.status, 200, r)
        sig = h["X-Gcrelay-Signature"]
        abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        last = abc.index(sig[-2])
        h["X-Gcrelay-Signature"] = sig[:-2] + abc[last ^ 1] + "="
        r = self.s.request("GET", "/admin/v1/brands", headers=h)
        self.assertProblem(r, 401, AUTH_DETAIL)

    def test_garbage_is_not_recorded(self):
        """Only a valid signature enters the replay cache."""
        before = self.s.query("SELECT count(*) FROM admin_replay")[0][0]
        for i in range(5):
            self.s.admin("GET", "/admin/v1/brands", headers={
                "X-Gcrelay-Signature": "v1," + "B" * 42 + "%d=" % i})
            self.s.admin("GET", "/admin/v1/brands", key=("k%d" % i, "x" * 40))
        self.assertEqual(self.s.query("SELECT count(*) FROM admin_replay"),
                         [(before,)])

    def test_failures_are_indistinguishable(self):
        """Issue 9: unknown key, wrong signature, stale, future, malformed,
        missing and replayed all answer the same bytes but the request id;
        the reason goes to the log and the metrics only."""
        now = int(time.time())
        h = self.signed("GET", "/admin/v1/brands?x=1", ts=now - 3)
        self.assertEqual(self.s.request("GET", "/admin/v1/brands?x=1",
                                        headers=h).status, 200)
        m0 = self.admin_failures()
        rs = [
            self.s.admin("GET", "/admin/v1/brands", key=("nobody", "x" * 40)),
            self.s.admin("GET", "/admin/v1/brands",
                         key=(ADMIN_WRITE[0], "y" * 40)),
            self.s.admin("GET", "/admin/v1/brands", ts=now - 301),
            self.s.admin("GET", "/admin/v1/brands", ts=now + 301),
            self.s.admin("GET", "/admin/v1/brands",
                         headers={"X-Gcrelay-Signature": "sha256=abc"}),
            self.s.admin("GET", "/admin/v1/brands",
                         headers={"X-Gcrelay-Key": None}),
            self.s.request("GET", "/admin/v1/brands?x=1", headers=h),
        ]
        bodies = set()
        for r in rs:
            self.assertProblem(r, 401, AUTH_DETAIL)
            rid = r.json.get("request_id")
            raw = r.raw.decode()
            if rid:
                raw = raw.replace(rid, "RID")
            bodies.add(raw)
        self.assertEqual(len(bodies), 1, bodies)
        self.assertEqual(self.admin_failures(), m0 + len(rs))
        log = self.s.log()
        for reason in ("unknown key id", "signature does not match",
                       "too old", "in the future", "must be", "missing "
                       "X-Gcrelay-Key", "already used"):
            self.assertIn(reason, log)

    def admin_failures(self):
        r = self.s.request("GET", "/metrics")
        m = re.search(r"^gcrelay_admin_auth_failures_total (\d+)$",
                      r.raw.decode(), re.M)
        return int(m.group(1))


class AdminReplayShared(unittest.TestCase):
    """The replay cache is in the store: every process refuses a replay."""

    def test_replay_refused_by_every_worker(self):
        with Stack(sims=False, workers=2,
                   config_extra="control_workers = 2;\n") as s:
            s.put_brand("acme", BRAND)
            uri = "/admin/v1/brands/acme"
            ts = int(time.time())
            h = {"X-Gcrelay-Key": ADMIN_WRITE[0],
                 "X-Gcrelay-Timestamp": str(ts),
                 "X-Gcrelay-Signature": stack.sign_admin(
                     ADMIN_WRITE[1], "DELETE", uri, ts, b"")}
            # First on the data socket, replays on the control socket:
            # other processes than the one that saw it.
            status, _, raw = fcgi.request(s.socket_path, "DELETE", uri, b"",
                                          h)
            self.assertEqual(status, 204, raw)
            s.put_brand("acme", BRAND)
            for _ in range(8):
                status, _, raw = fcgi.request(s.control_path, "DELETE", uri,
                                              b"", h)
                self.assertEqual(status, 401, raw)
                self.assertEqual(json.loads(raw)["detail"], AUTH_DETAIL)
                r = s.request("DELETE", uri, headers=h)
                self.assertEqual(r.status, 401, r)
            self.assertEqual(s.admin("GET", uri).status, 200)


class Brands(unittest.TestCase):
    """Brand CRUD, validation, write-only secrets encrypted at rest."""

    @classmethod
    def setUpClass(cls):
        cls.s = Stack(sims=False)

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def test_round_trip(self):
        s = self.s
        r = s.admin("PUT", "/admin/v1/brands/rt", BRAND)
        self.assertEqual(r.status, 201, r)
        doc = r.json
        self.assertEqual(doc["slug"], "rt")
        self.assertEqual(doc["emarsys"]["client_secret"], "****cdef")
        self.assertEqual(doc["yotpo"]["api_key"], "****XYZ9")
        self.assertEqual(doc["yotpo"]["guid"], "****cdef")
        self.assertEqual(doc["yotpo"]["actions"],
                         {"students": "gocertify-students"})
        self.assertEqual(doc["emarsys"]["fields"], {"sms_opt_in": 12817})
        self.assertEqual(s.admin("GET", "/admin/v1/brands/rt").json, doc)
        listed = s.admin("GET", "/admin/v1/brands", key=ADMIN_READ).json
        self.assertIn(doc, listed["brands"])
        # A PUT that omits secrets (or sends the mask back) keeps them.
        upd = json.loads(json.dumps(BRAND))
        del upd["emarsys"]["client_secret"]
        upd["yotpo"]["api_key"] = "****XYZ9"
        upd["name"] = "Acme United Kingdom"
        r = s.admin("PUT", "/admin/v1/brands/rt", upd)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["name"], "Acme United Kingdom")
        self.assertEqual(r.json["emarsys"]["client_secret"], "****cdef")
        self.assertEqual(r.json["yotpo"]["api_key"], "****XYZ9")
        # Removing a destination object removes its configuration.
        del upd["yotpo"]
        r = s.admin("PUT", "/admin/v1/brands/rt", upd)
        self.assertNotIn("yotpo", r.json)
        r = s.admin("DELETE", "/admin/v1/brands/rt")
        self.assertEqual(r.status, 204)
        r = s.admin("GET", "/admin/v1/brands/rt")
        self.assertEqual(r.status, 404)
        self.assertEqual(r.headers["Content-Type"], "application/problem+json")
        self.assertEqual(s.admin("DELETE", "/admin/v1/brands/rt").status, 404)

    def test_validation_errors_name_fields(self):
        bad = {"name": "", "emarsys": {"client_id": "x", "key_field": "phone",
                                       "fields": {"email": "3"},
                                       "clientSecret": "oops"},
               "yotpo": {"guid": "g" * 10, "api_key": "k" * 10,
                         "max_rps": 500, "actions": {"students": ""}},
               "extra": 1}
        r = self.s.admin("PUT", "/admin/v1/brands/bad", bad)
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.headers["Content-Type"], "application/problem+json")
        fields = {e["field"]: e["detail"] for e in r.json["errors"]}
        for f in ["name", "emarsys.key_field", "emarsys.fields.email",
                  "emarsys.clientSecret", "emarsys.client_secret",
                  "yotpo.max_rps", "yotpo.actions.students", "extra"]:
            self.assertIn(f, fields)
        self.assertEqual(fields["emarsys.client_secret"], "required")
        self.assertEqual(self.s.admin("GET", "/admin/v1/brands/bad").status,
                         404)

    def test_bad_slug_json_and_media_type(self):
        r = self.s.admin("PUT", "/admin/v1/brands/Bad_Slug", BRAND)
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json["code"], "invalid_slug")
        r = self.s.admin("PUT", "/admin/v1/brands/ok", b"{not json")
        self.assertEqual(r.status, 400)
        self.assertIn("malformed JSON", r.json["detail"])
        r = self.s.admin("PUT", "/admin/v1/brands/ok", b"{}",
                         headers={"Content-Type": "text/plain"})
        self.assertEqual(r.status, 415)
        r = self.s.admin("POST", "/admin/v1/brands")
        self.assertEqual(r.status, 405)
        self.assertIn("GET", r.headers["Allow"])

    def test_secrets_encrypted_at_rest_and_never_logged(self):
        s = self.s
        self.assertEqual(s.admin("PUT", "/admin/v1/brands/sec",
                                 BRAND).status, 201)
        plain = [BRAND["emarsys"]["client_secret"], BRAND["yotpo"]["api_key"],
                 BRAND["yotpo"]["guid"]]
        if s.pg is None:  # checkpoint so the main file holds everything
            with s.db() as c:
                c.execute("PRAGMA wal_checkpoint(FULL)")
        stored = s.store_contents()
        self.assertTrue(stored)
        for path, data in stored.items():
            for p in plain:
                self.assertNotIn(p.encode(), data, path)
        doc = json.loads(s.query("SELECT doc FROM brands WHERE slug='sec'")[0][0])
        self.assertTrue(doc["emarsys"]["client_secret"].startswith("v1:"))
        log = s.log()
        for p in plain + [ADMIN_WRITE[1], ADMIN_READ[1]]:
            self.assertNotIn(p, log)


class Processes(unittest.TestCase):
    """Master supervision: respawn, reload, graceful stop, health."""

    def test_killed_worker_is_replaced(self):
        with Stack(sims=False) as s:
            before = set(s.worker_pids())
            # 2 workers, 1 control worker, 1 dispatcher
            self.assertEqual(len(before), 4)
            victim = sorted(before)[0]
            os.kill(victim, signal.SIGKILL)
            s.wait(lambda: victim not in s.worker_pids() and
                   len(s.worker_pids()) == 4, what="respawn")
            for _ in range(6):
                self.assertEqual(s.request("GET", "/healthz").status, 200)
            self.assertIn("killed by signal 9", s.log())
            m = s.request("GET", "/metrics").raw.decode()
            self.assertIn("gcrelay_child_restarts_total 1", m)

    def test_sigusr1_makes_children_exit_and_be_replaced(self):
        """FastCGI's SIGUSR1 ("finish and exit") makes each child exit and
        the master start another; no worker is left spinning on accept."""
        with Stack(sims=False) as s:
            before = set(s.worker_pids())
            for pid in before:
                os.kill(pid, signal.SIGUSR1)
            s.wait(lambda: not (before & set(s.worker_pids())) and
                   len(s.worker_pids()) == 4, timeout=10,
                   what="every child replaced")
            self.assertEqual(s.request("GET", "/healthz").status, 200)
            time.sleep(0.5)
            self.assertLess(s.log().count("Interrupted system call"), 3)

    def test_store_files_are_private(self):
        """Issue 9: a fresh database and its -wal and -shm files are
        0600 whatever the umask (the tests run with 022)."""
        old = os.umask(0o022)
        try:
            s = Stack(sims=False)
        finally:
            os.umask(old)
        with s:
            s.demo_brand("modes", emarsys=False, yotpo=False)
            for suffix in ("", "-wal", "-shm"):
                path = s.db_path + suffix
                with self.subTest(file=path):
                    self.assertTrue(os.path.exists(path), path)
                    self.assertEqual(os.stat(path).st_mode & 0o777, 0o600,
                                     oct(os.stat(path).st_mode))

    def test_crashing_worker_backs_off(self):
        with Stack(sims=False) as s:
            os.chmod(s.db_path, 0)  # a new worker cannot open the store
            try:
                os.kill(sorted(s.worker_pids())[0], signal.SIGKILL)
                s.wait(lambda: "respawning in 2 s" in s.log(), timeout=15,
                       what="backoff")
                self.assertIn("respawning in 1 s", s.log())
                # The others serve on meanwhile.
                self.assertEqual(s.request("GET", "/metrics").status, 200)
            finally:
                os.chmod(s.db_path, 0o600)
            s.wait(lambda: len(s.worker_pids()) == 4, timeout=15,
                   what="recovered")

    def test_sighup_with_broken_config_keeps_serving(self):
        with Stack(sims=False) as s:
            pids = set(s.worker_pids())
            good = open(s.config_path).read()
            with open(s.config_path, "w") as f:
                f.write(good + "\nworkers = banana;\n")
            os.kill(s.gcrelay.pid, signal.SIGHUP)
            s.wait(lambda: "reload failed" in s.log(), what="reload logged")
            self.assertEqual(set(s.worker_pids()), pids)
            self.assertEqual(s.request("GET", "/healthz").status, 200)
            # A valid change is applied: new workers with the new count.
            with open(s.config_path, "w") as f:
                f.write(good.replace("workers = 2;", "workers = 3;"))
            os.kill(s.gcrelay.pid, signal.SIGHUP)
            s.wait(lambda: len(s.worker_pids()) == 5 and
                   not (set(s.worker_pids()) & pids), what="new generation")
            self.assertEqual(s.request("GET", "/healthz").status, 200)

    def test_sigterm_finishes_in_flight_and_exits_0(self):
        with Stack() as s:
            s.demo_brand(yotpo=False)
            s.emarsys.fault("delay", ms=1500, path_prefix="/api/v3/contact")
            out = {}

            def send():
                out["r"] = s.post_event(sample_event("consent_intent"))
            t = threading.Thread(target=send)
            t.start()
            s.emarsys.wait_for(lambda c: c.requests(
                path_prefix="/api/v3/contact"), timeout=10)
            s.gcrelay.send_signal(signal.SIGTERM)
            t.join(30)
            self.assertEqual(out["r"].status, 200, out["r"])
            self.assertEqual(s.gcrelay.wait(30), 0)
            self.assertIn('"msg":"stopped"', s.log())

    def _signal_with_50_in_flight(self, sig):
        """Issue 9: 50 requests inside delivery (the simulator holds each
        Emarsys call 2 s) when sig comes; every one is answered in full
        and gcrelay then stops with status 0."""
        n = 50
        with Stack(workers=n, http_timeout_ms=6000, budget_ms=20000,
                   sync_budget_ms=20000) as s:
            s.demo_brand(yotpo=False)
            s.emarsys.fault("delay", ms=2000, count=-1,
                            path_prefix="/api/v3/contact")
            out = [None] * n

            def send(i):
                try:
                    out[i] = s.post_event(sample_event(
                        "consent_intent", email="sig%d@example.com" % i))
                except Exception as e:  # noqa: BLE001
                    out[i] = e
            threads = [threading.Thread(target=send, args=(i,))
                       for i in range(n)]
            for t in threads:
                t.start()
            s.emarsys.wait_for(lambda c: len(c.requests(
                path_prefix="/api/v3/contact")) >= n, timeout=30)
            s.gcrelay.send_signal(sig)
            for t in threads:
                t.join(60)
            for i, r in enumerate(out):
                with self.subTest(request=i):
                    self.assertIsInstance(r, stack.Response, r)
                    self.assertIn(r.status, (200, 202), r)
                    self.assertIsInstance(r.json, dict, r)
                    self.assertTrue(r.json, r)
            if sig == signal.SIGHUP:
                s.wait(lambda: "reloaded" in s.log(), what="reload")
                self.assertEqual(s.stop_gcrelay(), 0)
            else:
                self.assertEqual(s.gcrelay.wait(30), 0)
            self.assertIn('"msg":"stopped"', s.log())
            self.assertNotIn("not written", s.log())

    def test_sigterm_answers_50_in_flight(self):
        self._signal_with_50_in_flight(signal.SIGTERM)

    def test_sighup_answers_50_in_flight(self):
        self._signal_with_50_in_flight(signal.SIGHUP)

    def _data_worker_pids(self, s):
        """The children holding the data socket (the workers proper)."""
        inodes = set()
        with open("/proc/net/unix") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 8 and parts[7] == s.socket_path:
                    inodes.add(parts[6])
        pids = []
        for pid in s.worker_pids():
            try:
                fds = os.listdir("/proc/%d/fd" % pid)
                links = [os.readlink("/proc/%d/fd/%s" % (pid, fd))
                         for fd in fds]
            except OSError:
                continue
            if any(ln == "socket:[%s]" % i for ln in links for i in inodes):
                pids.append(pid)
        return pids

    def test_kill_storm_never_hangs_requests(self):
        """Issue 9: kill -9 every data worker 10 times in about 2 s.  Requests
        meanwhile are answered or fail fast, never wait out a crash
        backoff or nginx's read timeout; afterwards intake works."""
        with Stack(sims=False) as s:
            s.demo_brand("storm", emarsys=False, yotpo=False)
            self.assertEqual(len(self._data_worker_pids(s)), 2)
            results, stop = [], threading.Event()

            def client():
                while not stop.is_set():
                    t0 = time.monotonic()
                    try:
                        r = s.post_event(sample_event(brand_slug="storm"))
                    except Exception as e:  # noqa: BLE001
                        r = e
                    results.append((time.monotonic() - t0, r))
            clients = [threading.Thread(target=client) for _ in range(4)]
            for t in clients:
                t.start()
            try:
                for i in range(10):
                    # Whatever the backoff, a data worker is back at once.
                    pids = s.wait(lambda: self._data_worker_pids(s),
                                  timeout=1.5, interval=0.02,
                                  what="a data worker before kill %d" % i)
                    for pid in pids:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    time.sleep(0.2)
                time.sleep(3)
            finally:
                stop.set()
            stop.set()
            for t in clients:
                t.join(60)
            self.assertTrue(results)
            for took, r in results:
                with self.subTest(took=took, r=r):
                    self.assertIsInstance(r, stack.Response, r)
                    self.assertLess(took, 5.0, r)
                    self.assertIn(r.status, (200, 202, 502, 503, 504), r)
                    if r.status >= 500:
                        self.assertIn("problem+json",
                                      r.headers.get("Content-Type", ""))
            # Afterwards one worker at least is there and intake works.
            s.wait(lambda: self._data_worker_pids(s), timeout=3,
                   what="a data worker")
            t0 = time.monotonic()
            r = s.post_event(sample_event(brand_slug="storm"))
            self.assertIn(r.status, (200, 202), r)
            self.assertLess(time.monotonic() - t0, 5.0)

    def test_healthz_reports_unreadable_store(self):
        with Stack(sims=False) as s:
            self.assertEqual(s.request("GET", "/healthz").json["status"],
                             "ok")
            os.chmod(s.db_path, 0)
            try:
                r = s.request("GET", "/healthz")
                self.assertEqual(r.status, 503)
                self.assertEqual(r.json["status"], "unavailable")
                self.assertIn("Permission denied", r.json["detail"])
            finally:
                os.chmod(s.db_path, 0o600)
            self.assertEqual(s.request("GET", "/healthz").status, 200)

    def test_inherited_socket_on_fd0(self):
        """spawn-fcgi / systemd StandardInput=socket hand gcrelay a
        listening socket on fd 0: the data socket."""
        with Stack(sims=False, start=False) as s:
            lsock = socket.socket(socket.AF_UNIX)
            lsock.bind(s.socket_path)
            os.chmod(s.socket_path, 0o666)
            lsock.listen(16)
            kw = {}
            if s.user is not None:
                kw = {"user": s.user.pw_uid, "group": s.user.pw_gid,
                      "extra_groups": []}
            s.gcrelay = subprocess.Popen(
                [GCRELAY, "-c", s.config_path], stdin=lsock.fileno(),
                stdout=open(s.log_path, "ab"), stderr=subprocess.STDOUT,
                env=s._gcrelay_env(), **kw)
            lsock.close()
            s.start_nginx()
            s.wait_healthy()
            self.assertIn("inherited data listening socket on fd 0", s.log())
            # The control socket was not inherited: made from the config.
            self.assertIn("control on %s" % s.control_path, s.log())

    def test_tcp_listener(self):
        port = stack.free_port()
        with Stack(sims=False, start=False) as s:
            text = open(s.config_path).read().replace(
                'listen = { socket = "%s"; mode = "0666"; };' % s.socket_path,
                "listen = { port = %d; control_port = %d; };" % (
                    port, stack.free_port()))
            with open(s.config_path, "w") as f:
                f.write(text)
            s.start_gcrelay_tcp = True
            log = open(s.log_path, "ab")
            kw = {}
            if s.user is not None:
                kw = {"user": s.user.pw_uid, "group": s.user.pw_gid,
                      "extra_groups": []}
            s.gcrelay = subprocess.Popen([GCRELAY, "-c", s.config_path],
                                         stdout=log, stderr=log,
                                         env=s._gcrelay_env(), **kw)
            s.wait(lambda: subprocess.run(
                ["ss", "-ltn", "sport = :%d" % port], capture_output=True,
                text=True).stdout.count("127.0.0.1:%d" % port) > 0,
                what="tcp listener")
            self.assertEqual(s.stop_gcrelay(), 0)


class Observability(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.s = Stack(sims=False)

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def test_json_log_lines_with_request_id(self):
        r = self.s.request("GET", "/healthz")
        rid = r.headers["X-Request-Id"]
        self.s.wait(lambda: rid in self.s.log(), what="log line")
        line = [l for l in self.s.log().splitlines() if rid in l][-1]
        rec = json.loads(line)
        for k in ["time", "level", "pid", "req", "route", "status",
                  "duration_ms", "method"]:
            self.assertIn(k, rec)
        self.assertEqual(rec["req"], rid)
        self.assertEqual(rec["route"], "healthz")
        self.assertEqual(rec["status"], 200)
        for l in self.s.log().splitlines():
            json.loads(l)  # every line is JSON

    def test_one_request_id_header(self):
        """Issue 9: gcrelay sets X-Request-Id (nginx's $request_id when
        it passes one); the site must not add a second one."""
        for method, path in [("GET", "/healthz"), ("GET", "/metrics"),
                             ("POST", "/v1/events"),
                             ("GET", "/admin/v1/brands")]:
            with self.subTest(path=path):
                conn = http.client.HTTPConnection("127.0.0.1", self.s.port,
                                                  timeout=30)
                try:
                    conn.request(method, path, b"{}" if method == "POST"
                                 else None)
                    r = conn.getresponse()
                    stack.contract_record(method, path, r.status,
                                          r.getheaders(), r.read())
                    ids = [v for k, v in r.getheaders()
                           if k.lower() == "x-request-id"]
                finally:
                    conn.close()
                self.assertEqual(len(ids), 1, r.getheaders())
                self.assertRegex(ids[0], r"^[0-9a-f]{16,32}$")
        with open(os.path.join(ROOT, "nginx", "gcrelay.conf")) as f:
            site = f.read()
        self.assertNotRegex(site, r"(?m)^\s*add_header\s+X-Request-Id")

    def test_metrics_text(self):
        self.s.request("GET", "/healthz")
        r = self.s.request("GET", "/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers["Content-Type"].startswith("text/plain"))
        text = r.raw.decode()
        for name in ["gcrelay_http_requests_total{route=\"healthz\","
                     "status=\"200\"}", "# TYPE gcrelay_events_total counter",
                     "gcrelay_outbox_depth 0",
                     "gcrelay_upstream_latency_seconds_bucket"]:
            self.assertIn(name, text)

    def store_round_trips(self):
        text = self.s.request("GET", "/metrics").raw.decode()
        m = re.search(r"(?m)^gcrelay_store_round_trips_total (\d+)$", text)
        self.assertIsNotNone(m, text)
        return int(m.group(1))

    def test_metrics_count_store_round_trips(self):
        self.s.put_brand("bare", {"name": "Bare"})
        before = self.store_round_trips()
        r = self.s.post_event(sample_event(brand_slug="bare"),
                              webhook_id="msg_round_trips")
        self.assertEqual(r.status, 200, r)
        after = self.store_round_trips()
        if self.s.pg is None:
            # SQLite is in-process: nothing is sent anywhere.
            self.assertEqual((before, after), (0, 0))
        else:
            # Intake's brand read (just put: no process keeps it), its
            # one-statement insert and its answer at least, besides the
            # /metrics read itself.
            self.assertGreaterEqual(after - before, 3)

    def test_unknown_route_is_problem_json(self):
        r = self.s.request("GET", "/v2/nothing")
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json["status"], 404)


class NginxProblems(unittest.TestCase):
    """Issue 9: nginx's own 400, 403 and 502 answers are problem+json too."""

    def raw(self, port, data, source="127.0.0.1"):
        """Send data as is; (status, content type, body) of the answer."""
        with socket.create_connection(("127.0.0.1", port), 10,
                                      source_address=(source, 0)) as c:
            c.sendall(data)
            c.settimeout(10)
            out = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                out += chunk
        head, _, body = out.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        hdrs = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        request_line = data.split(b"\r\n", 1)[0].decode("latin-1").split()
        stack.contract_record(request_line[0] if request_line else "",
                              request_line[1] if len(request_line) > 1
                              else "", int(lines[0].split()[1]), hdrs, body)
        return int(lines[0].split()[1]), hdrs.get("content-type", ""), body

    def assertProblem(self, status, ctype, body, want):
        self.assertEqual(status, want, body)
        self.assertTrue(ctype.startswith("application/problem+json"),
                        (ctype, body))
        doc = json.loads(body)
        self.assertEqual(doc["status"], want)
        self.assertTrue(doc["title"] and doc["detail"] and doc["code"], doc)

    def test_bad_requests_are_problem_json(self):
        with Stack(sims=False) as s:
            cases = [
                ("bad request line", b"GARBAGE\r\n\r\n"),
                ("header too large",
                 b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " +
                 b"a" * 20000 + b"\r\nConnection: close\r\n\r\n"),
                ("no Host", b"GET /healthz HTTP/1.1\r\n"
                 b"Connection: close\r\n\r\n"),
            ]
            for what, data in cases:
                with self.subTest(what=what):
                    self.assertProblem(*self.raw(s.port, data), 400)
            self.assertEqual(s.request("GET", "/healthz").status, 200)

    def test_outside_the_allow_list_is_problem_json(self):
        """127.0.0.2 is not in the allow-lists of /admin/ and /metrics."""
        with Stack(sims=False) as s:
            for path in ("/metrics", "/admin/v1/brands"):
                with self.subTest(path=path):
                    req = ("GET %s HTTP/1.1\r\nHost: x\r\n"
                           "Connection: close\r\n\r\n" % path).encode()
                    self.assertProblem(*self.raw(s.port, req, "127.0.0.2"),
                                       403)
            r = s.request("GET", "/metrics")
            self.assertEqual(r.status, 200)

    def test_no_upstream_is_problem_json(self):
        with Stack(sims=False) as s:
            self.assertEqual(s.stop_gcrelay(), 0)
            for path in ("/healthz", "/v1/events"):
                with self.subTest(path=path):
                    r = s.request("GET", path)
                    self.assertProblem(r.status,
                                       r.headers.get("Content-Type", ""),
                                       r.raw, 502)


class Ctl(unittest.TestCase):
    """gcrelayctl against the live admin API."""

    @classmethod
    def setUpClass(cls):
        cls.s = Stack(sims=False)
        cls.conf = os.path.join(cls.s.dir, "ctl.conf")
        with open(cls.conf, "w") as f:
            f.write('url = "http://127.0.0.1:%d";\nkey_id = "%s";\n'
                    'secret = "%s";\n' % (cls.s.port, ADMIN_WRITE[0],
                                          ADMIN_WRITE[1]))

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def ctl(self, *args, env=None, stdin=None):
        e = {"PATH": os.environ["PATH"], "HOME": self.s.dir}
        e.update(env or {})
        return subprocess.run([GCRELAYCTL] + list(args), input=stdin,
                              capture_output=True, text=True, env=e,
                              timeout=30)

    def test_put_list_get_delete(self):
        r = self.ctl("--config", self.conf, "brands", "put", "ctl-acme",
                     stdin=json.dumps(BRAND))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"client_secret": "****cdef"', r.stdout)
        r = self.ctl("--config", self.conf, "brands", "list")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"SLUG\s+NAME\s+EMARSYS\s+YOTPO")
        self.assertRegex(r.stdout, r"ctl-acme\s+Acme UK\s+configured\s+"
                                   r"configured")
        r = self.ctl("--config", self.conf, "--json", "brands", "list")
        self.assertIn("ctl-acme", [b["slug"] for b in
                                   json.loads(r.stdout)["brands"]])
        r = self.ctl("--config", self.conf, "brands", "delete", "ctl-acme")
        self.assertEqual(r.returncode, 0)
        self.assertIn("deleted brand ctl-acme", r.stdout)
        r = self.ctl("--config", self.conf, "brands", "get", "ctl-acme")
        self.assertEqual(r.returncode, 3)
        self.assertIn("not found: no brand ctl-acme", r.stderr)

    def test_environment_settings(self):
        r = self.ctl("brands", "list", env={
            "GCRELAY_URL": "http://127.0.0.1:%d" % self.s.port,
            "GCRELAY_KEY_ID": ADMIN_READ[0],
            "GCRELAY_KEY_SECRET": ADMIN_READ[1]})
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.ctl("brands", "delete", "x", env={
            "GCRELAY_URL": "http://127.0.0.1:%d" % self.s.port,
            "GCRELAY_KEY_ID": ADMIN_READ[0],
            "GCRELAY_KEY_SECRET": ADMIN_READ[1]})
        self.assertEqual(r.returncode, 4)
        self.assertIn("403 forbidden", r.stderr)
        self.assertIn('has role "read"', r.stderr)

    def test_send_event_and_inspect_it(self):
        self.s.put_brand("acme", {"name": "Acme"})
        path = os.path.join(ROOT, "tests", "data", "demo",
                            "consent_intent.json")
        r = self.ctl("--config", self.conf, "send-event", "--id", "ctl-1",
                     "--secret", self.s.webhook_secrets[0], path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("HTTP 200 (webhook-id ctl-1)", r.stdout)
        self.assertIn('"status":"delivered"', r.stdout)
        r = self.ctl("--config", self.conf, "send-event", "--id", "ctl-2",
                     "--secret", stack.new_whsec(), path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("HTTP 401", r.stdout)
        r = self.ctl("--config", self.conf, "events", "list", "--brand",
                     "acme")
        self.assertRegex(r.stdout, r"ctl-1\s+acme\s+consent_intent\s+"
                                   r"delivered")
        r = self.ctl("--config", self.conf, "events", "get", "ctl-1")
        self.assertIn("event ctl-1: delivered", r.stdout)
        self.assertIn("emarsys  skipped", r.stdout)
        r = self.ctl("--config", self.conf, "--json", "events", "redeliver",
                     "ctl-1")
        self.assertEqual(json.loads(r.stdout)["requeued"], 0)

    def test_clear_errors(self):
        r = self.ctl("brands", "list", env={
            "GCRELAY_URL": "http://127.0.0.1:%d" % self.s.port,
            "GCRELAY_KEY_ID": ADMIN_WRITE[0], "GCRELAY_KEY_SECRET": "wrong" * 8})
        self.assertEqual(r.returncode, 4)
        self.assertIn("401 unauthorized", r.stderr)
        self.assertIn(AUTH_DETAIL, r.stderr)
        r = self.ctl("--url", "http://127.0.0.1:%d" % stack.free_port(),
                     "--config", self.conf, "brands", "list")
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot reach", r.stderr)
        r = self.ctl("--config", self.conf, "brands", "put", "bad",
                     stdin='{"name": ""}')
        self.assertEqual(r.returncode, 1)
        self.assertIn("name: required", r.stderr)
        r = self.ctl("brands", "list")
        self.assertEqual(r.returncode, 64)
        self.assertIn("no key", r.stderr)


class DeployFiles(unittest.TestCase):

    def test_shipped_nginx_site_passes_nginx_t(self):
        d = tempfile.mkdtemp(prefix="gcrelay-nginx-")
        try:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                            "-nodes", "-subj", "/CN=gcrelay.example.com",
                            "-keyout", d + "/k.pem", "-out", d + "/c.pem",
                            "-days", "1"], capture_output=True, check=True)
            site = open(os.path.join(ROOT, "nginx", "gcrelay.conf")).read()
            site = site.replace("/etc/ssl/certs/gcrelay.example.com.pem",
                                d + "/c.pem")
            site = site.replace("/etc/ssl/private/gcrelay.example.com.key",
                                d + "/k.pem")
            site = site.replace("/etc/nginx/snippets/gcrelay-locations.conf",
                                os.path.join(ROOT, "nginx",
                                             "gcrelay-locations.conf"))
            site = site.replace("/var/log/nginx/", d + "/")
            with open(d + "/site.conf", "w") as f:
                f.write(site)
            shutil.copy("/etc/nginx/fastcgi_params", d)
            with open(d + "/nginx.conf", "w") as f:
                f.write("pid %s/nginx.pid; error_log %s/e.log;\n"
                        "events {}\nhttp { include %s/site.conf; }\n"
                        % (d, d, d))
            r = run(["nginx", "-t", "-p", d, "-c", d + "/nginx.conf"])
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_make_install(self):
        d = tempfile.mkdtemp(prefix="gcrelay-install-")
        try:
            # The build's own flags, so that install rebuilds nothing.
            san = ["SAN=1", "OPT=-O1"] if os.environ.get(
                "GCRELAY_SANITIZERS") else []
            r = run(["make", "-s", "-C", ROOT, "install", "DESTDIR=" + d,
                     "PREFIX=/usr/local", "BUILD=" + BUILD] + san)
            self.assertEqual(r.returncode, 0, r.stderr)
            for f in ["sbin/gcrelay", "bin/gcrelayctl",
                      "share/gcrelay/gcrelay.conf.example",
                      "share/gcrelay/gcrelay.conf",
                      "share/gcrelay/gcrelay-locations.conf",
                      "share/gcrelay/openapi.yaml",
                      "share/gcrelay/gcrelay-rules.yml",
                      "share/gcrelay/gcrelay-dashboard.json",
                      "lib/systemd/system/gcrelay.service",
                      "lib/systemd/system/gcrelay.socket",
                      "share/doc/gcrelay/README.md"]:
                self.assertTrue(os.path.exists(os.path.join(d, "usr/local",
                                                            f)), f)
            # The unit runs the programs from this PREFIX.
            svc = open(os.path.join(
                d, "usr/local/lib/systemd/system/gcrelay.service")).read()
            self.assertIn("\nExecStart=/usr/local/sbin/gcrelay -c ", svc)
            self.assertNotRegex(svc, r"(?m)@[A-Z]+@|^#@")
            r = run([os.path.join(d, "usr/local/sbin/gcrelay"), "-V"])
            self.assertRegex(r.stdout, r"^gcrelay \d+\.\d+")
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_systemd_units_harden_and_run_unprivileged(self):
        svc = open(os.path.join(ROOT, "deploy",
                                "gcrelay.service.in")).read()
        for k in ["User=gcrelay", "NoNewPrivileges=yes",
                  "ProtectSystem=strict", "StateDirectory=gcrelay",
                  "StandardOutput=journal",
                  "ExecReload=/bin/kill -HUP $MAINPID"]:
            self.assertIn(k, svc)
        # Two sockets: LISTEN_FDS, not StandardInput=socket (one only).
        self.assertNotRegex(svc, r"(?m)^StandardInput=socket")
        sock = open(os.path.join(ROOT, "deploy", "gcrelay.socket")).read()
        streams = re.findall(r"^ListenStream=(.*)$", sock, re.M)
        self.assertEqual(streams, ["/run/gcrelay/gcrelay.sock",
                                   "/run/gcrelay/gcrelay-control.sock"])
        site = open(os.path.join(ROOT, "nginx", "gcrelay.conf")).read()
        for path in streams:
            self.assertIn("server unix:%s;" % path, site)
        self.assertIsNotNone(shutil.which("systemd-analyze"),
                             "systemd-analyze (package systemd) is missing")
        d = tempfile.mkdtemp(prefix="gcrelay-unit-")
        try:
            unit = os.path.join(d, "gcrelay.service")
            with open(unit, "w") as f:
                f.write(svc.replace("@SBINDIR@", "/usr/sbin")
                        .replace("@DOCDIR@", "/usr/share/doc/gcrelay"))
            r = run(["systemd-analyze", "verify", unit])
        finally:
            shutil.rmtree(d, ignore_errors=True)
        self.assertNotIn("Unknown key", r.stderr)


if __name__ == "__main__":
    unittest.main()


class EventsApi(unittest.TestCase):
    """Listing, paging and filtering events; retention of bodies."""

    def test_list_filter_and_page(self):
        with Stack(sims=False) as s:
            s.put_brand("acme", {"name": "Acme"})
            s.put_brand("other", {"name": "Other"})
            for i in range(5):
                r = s.post_event(sample_event("consent_intent"),
                                 webhook_id="a%d" % i)
                self.assertEqual(r.status, 200, r)
            r = s.post_event(sample_event("consent_intent",
                                          brand_slug="other"),
                             webhook_id="b0")
            r = s.admin("GET", "/admin/v1/events?brand=acme&limit=2",
                        key=ADMIN_READ)
            self.assertEqual(r.status, 200, r)
            self.assertEqual([e["id"] for e in r.json["events"]],
                             ["a4", "a3"])
            cur = r.json["next_cursor"]
            ids = []
            while cur:
                r = s.admin("GET", "/admin/v1/events?brand=acme&limit=2"
                            "&cursor=" + cur)
                ids += [e["id"] for e in r.json["events"]]
                cur = r.json["next_cursor"]
            self.assertEqual(ids, ["a2", "a1", "a0"])
            r = s.admin("GET", "/admin/v1/events?status=delivered&limit=50")
            self.assertEqual(len(r.json["events"]), 6)
            e = r.json["events"][0]
            self.assertEqual(e["deliveries"], [
                {"destination": "emarsys", "status": "skipped",
                 "reason": "emarsys is not configured for this brand"},
                {"destination": "yotpo", "status": "skipped",
                 "reason": "yotpo is not configured for this brand"}])
            for q in ["status=bogus", "limit=0", "since=yesterday",
                      "cursor=abc"]:
                r = s.admin("GET", "/admin/v1/events?" + q)
                self.assertEqual(r.status, 400, q)
            r = s.admin("GET", "/admin/v1/events/nope")
            self.assertEqual(r.status, 404)

    def test_undecodable_filters_are_400(self):
        """Issue 9: a filter that does not decode is answered 400 naming
        it, not dropped (which listed every brand)."""
        with Stack(sims=False) as s:
            s.put_brand("acme", {"name": "Acme"})
            s.put_brand("other", {"name": "Other"})
            self.assertEqual(s.post_event(sample_event()).status, 200)
            self.assertEqual(s.post_event(sample_event(
                brand_slug="other")).status, 200)
            for q, field in [("brand=%ZZ", "brand"), ("brand=ac%6", "brand"),
                             ("brand=%00", "brand"), ("brand=" + "a" * 100,
                                                      "brand"),
                             ("status=%ZZ", "status"), ("since=%G1", "since"),
                             ("limit=%", "limit"),
                             ("brand=acme&cursor=%zz", "cursor"),
                             ("status=bogus", "status"), ("limit=0", "limit")]:
                with self.subTest(q=q):
                    r = s.admin("GET", "/admin/v1/events?" + q)
                    self.assertEqual(r.status, 400, r)
                    self.assertTrue(r.headers["Content-Type"].startswith(
                        "application/problem+json"), r.headers)
                    self.assertEqual(r.json.get("field"), field, r)
                    self.assertIn(field, r.json["detail"])
                    self.assertNotIn("events", r.json)
            r = s.admin("GET", "/admin/v1/events?brand=%61cme")
            self.assertEqual(r.status, 200, r)
            self.assertEqual({e["brand"] for e in r.json["events"]}, {"acme"})

    def test_old_bodies_are_purged(self):
        with Stack(sims=False) as s:
            s.put_brand("acme", {"name": "Acme"})
            self.assertEqual(s.post_event(sample_event("consent_intent"),
                                          webhook_id="old").status, 200)
            self.assertEqual(s.post_event(sample_event("consent_intent"),
                                          webhook_id="new").status, 200)
            with s.db() as c:
                c.execute("UPDATE events SET received_at = received_at - "
                          "? WHERE id = 'old'", (31 * 86400 * 1000,))
                c.execute("INSERT INTO attempts(event_id, destination, at, "
                          "step, outcome, excerpt) VALUES ('old', 'yotpo', "
                          "0, 'award', 'response', 'jane@example.com')")
            # The retrier purges when it starts: reload to restart it.
            os.kill(s.gcrelay.pid, signal.SIGHUP)
            s.wait(lambda: s.query("SELECT purged FROM events WHERE "
                                   "id='old'") == [(1,)], what="purge")
            self.assertEqual(s.query("SELECT body FROM events WHERE "
                                     "id='old'"), [(None,)])
            self.assertEqual(s.query("SELECT excerpt FROM attempts WHERE "
                                     "event_id='old'"), [(None,)])
            self.assertIsNotNone(s.query("SELECT body FROM events WHERE "
                                         "id='new'")[0][0])
            r = s.admin("GET", "/admin/v1/events/old")
            self.assertEqual(r.json["status"], "delivered")
            self.assertIsNone(r.json["event"])

    def test_purge_leaves_no_email_in_the_files(self):
        # Issue 9: after the retention no table, and no byte of the
        # database or its WAL, may still hold a shopper's address: not
        # the body, nor an upstream error quoting it (deliveries.reason,
        # attempts.excerpt), nor the Yotpo ledger.  Outcomes stay.
        old = "canary-%s@example.com" % secrets.token_hex(8)
        new = "canary-%s@example.com" % secrets.token_hex(8)
        with Stack() as s:
            s.demo_brand()
            for addr in (old, new):
                s.emarsys.fault("contact_error", code=2010,
                                text="Invalid contact %s" % addr,
                                key_values=[addr])
                # Long URLs push the body onto overflow pages, which a
                # purge frees whole (the shopper's page quotes the address).
                url = "https://shop.example/%s?who=%s" % ("p" * 1900, addr)
                r = s.post_event(sample_event("offer_claimed", email=addr,
                                              campaign_url=url,
                                              iframe_parent_url=url),
                                 webhook_id="w-" + addr[7:15])
                self.assertEqual(r.status, 202, r)
            wid = "w-" + old[7:15]
            self.assertIn(old, s.query("SELECT reason FROM deliveries WHERE "
                                       "event_id = ? AND destination = "
                                       "'emarsys'", wid)[0][0])
            self.assertEqual(s.query("SELECT state, email FROM yotpo_ledger "
                                     "WHERE event_id = ?", wid),
                             [("done", old)])
            with s.db() as c:
                # This connection rewrites the row too: zero what it frees.
                c.execute("PRAGMA secure_delete = ON")
                c.execute("UPDATE events SET received_at = received_at - "
                          "? WHERE id = ?", (31 * 86400 * 1000, wid))
            # The dispatcher purges when it starts: reload to restart it.
            os.kill(s.gcrelay.pid, signal.SIGHUP)
            s.wait(lambda: s.query("SELECT purged FROM events WHERE id = ?",
                                   wid) == [(1,)], what="purge")
            # Outcomes stay.
            self.assertEqual(s.query("SELECT destination, status FROM "
                                     "deliveries WHERE event_id = ? ORDER "
                                     "BY destination", wid),
                             [("emarsys", "failed"), ("yotpo", "delivered")])
            self.assertIn(("2010",), s.query("SELECT reply_code FROM "
                                             "attempts WHERE event_id = ?",
                                             wid))
            self.assertEqual(s.query("SELECT state FROM yotpo_ledger WHERE "
                                     "event_id = ?", wid), [("done",)])
            # A gcrelay reader may hold a snapshot for a moment: retry
            # until the whole WAL is in the file and the WAL is empty.
            def checkpointed():
                with s.db() as c:
                    return c.execute("PRAGMA wal_checkpoint(TRUNCATE)"
                                     ).fetchone()[0] == 0
            s.wait(checkpointed, what="a complete checkpoint")
            raw = b""
            for path in (s.db_path, s.db_path + "-wal"):
                if os.path.exists(path):
                    with open(path, "rb") as f:
                        raw += f.read()
            # The search works: the event still within retention is there.
            self.assertTrue(new.encode() in raw, "the search finds nothing")
            self.assertFalse(old.encode() in raw,
                             "%s is still in the files" % old)


class Preflight(unittest.TestCase):
    """POST /admin/v1/brands/{slug}/check against the simulators."""

    def test_check_reports_each_item(self):
        with Stack() as s:
            s.demo_brand()
            r = s.admin("POST", "/admin/v1/brands/acme/check", {})
            self.assertEqual(r.status, 200, r)
            checks = {c["check"]: c for c in r.json["checks"]}
            self.assertTrue(r.json["ok"], r.json)
            for name in ["emarsys.token", "emarsys.field_list",
                         "emarsys.sms_opt_in_field",
                         "emarsys.event.gocertify_consent_intent",
                         "emarsys.event.gocertify_offer_claimed",
                         "yotpo.credentials", "yotpo.custom_actions"]:
                self.assertIn(name, checks)
            self.assertIn("12817", checks["emarsys.sms_opt_in_field"]["detail"])
            self.assertIn("not created yet", checks[
                "emarsys.event.gocertify_offer_claimed"]["detail"])
            # Read-only: nothing was created in the account.
            self.assertEqual(s.emarsys.requests(method="POST",
                                                path_prefix="/api/"), [])
            # Bad credentials and a missing permission are named.
            s.put_brand("acme", {"name": "Acme", "emarsys": {
                "client_id": "demo_client", "client_secret": "wrong-secret"},
                "yotpo": {"guid": "demo_guid", "api_key": "wrong-key"}})
            r = s.admin("POST", "/admin/v1/brands/acme/check", {})
            checks = {c["check"]: c for c in r.json["checks"]}
            self.assertFalse(r.json["ok"])
            self.assertFalse(checks["emarsys.token"]["ok"])
            self.assertIn("refused the client id or secret",
                          checks["emarsys.token"]["detail"])
            self.assertFalse(checks["yotpo.credentials"]["ok"])
            self.assertIn("401", checks["yotpo.credentials"]["detail"])
            s.demo_brand()
            s.emarsys.config({"accounts": {"demo_client": {
                "denied_permissions": ["field.list"]}}})
            r = s.admin("POST", "/admin/v1/brands/acme/check", {})
            checks = {c["check"]: c for c in r.json["checks"]}
            self.assertIn("field.list", checks["emarsys.field_list"]["detail"])
            r = s.admin("POST", "/admin/v1/brands/nope/check", {})
            self.assertEqual(r.status, 404)


class BrandRedelivery(unittest.TestCase):

    def test_failed_deliveries_in_a_window_are_redelivered(self):
        with Stack() as s:
            s.put_brand("acme", {"name": "Acme", "emarsys": {
                "client_id": "demo_client", "client_secret": "wrong"}})
            for i in range(3):
                r = s.post_event(sample_event("consent_intent"),
                                 webhook_id="f%d" % i)
                self.assertEqual(r.status, 202, r)
                self.assertEqual(r.json["deliveries"][0]["status"], "failed")
            s.demo_brand(yotpo=False)  # the operator fixes the secret
            # A window that ends before they arrived (unix seconds as a
            # JSON number, not only as a string) requeues none of them.
            r = s.admin("POST", "/admin/v1/brands/acme/redeliver",
                        {"until": int(time.time()) - 600})
            self.assertEqual((r.status, r.json["requeued"]), (202, 0), r)
            r = s.admin("POST", "/admin/v1/brands/acme/redeliver",
                        {"since": "%d" % (time.time() + 600)})
            self.assertEqual((r.status, r.json["requeued"]), (202, 0), r)
            r = s.admin("POST", "/admin/v1/brands/acme/redeliver",
                        {"since": int(time.time()) - 600})
            self.assertEqual(r.status, 202, r)
            self.assertEqual(r.json["requeued"], 3)
            s.wait(lambda: s.query("SELECT count(*) FROM events WHERE "
                                   "status = 'delivered'") == [(3,)],
                   what="redelivered by the retrier")
            acct = s.emarsys.state()["accounts"]["demo_client"]
            self.assertEqual(len(acct["triggers"]), 3)
            for bad in ("yesterday", True, -5, 1.5, {"t": 1}):
                r = s.admin("POST", "/admin/v1/brands/acme/redeliver",
                            {"since": bad})
                self.assertEqual(r.status, 400, bad)
                self.assertEqual(r.json["code"], "invalid_window")
            r = s.admin("POST", "/admin/v1/brands/acme/redeliver", {})
            self.assertEqual(r.json["requeued"], 0)


class EscapedIds(unittest.TestCase):

    def test_event_ids_with_reserved_characters(self):
        """Any printable webhook-id can be looked up and redelivered when
        the client percent-encodes it (gcrelayctl does)."""
        with Stack(sims=False) as s:
            s.put_brand("acme", {"name": "Acme"})
            for wid in ["msg/1", "a?b#c", "100%", "x+y"]:
                r = s.post_event(sample_event("consent_intent"),
                                 webhook_id=wid)
                self.assertEqual(r.status, 200, r)
                enc = "".join(c if c.isalnum() else "%%%02X" % ord(c)
                              for c in wid)
                r = s.admin("GET", "/admin/v1/events/" + enc)
                self.assertEqual(r.status, 200, (wid, r))
                self.assertEqual(r.json["id"], wid)
                r = s.admin("POST", "/admin/v1/events/%s/redeliver" % enc,
                            {})
                self.assertEqual(r.status, 200, (wid, r))
            # nginx itself refuses malformed percent-encoding.
            r = s.admin("GET", "/admin/v1/events/bad%zz")
            self.assertEqual(r.status, 400)


class ResponseCap(unittest.TestCase):

    def test_oversized_reply_is_cut_off_and_retried(self):
        with Stack(start=False) as s:
            text = open(s.config_path).read().replace(
                "http = { connect_timeout_ms = 2000;",
                "http = { max_response_bytes = 2048; connect_timeout_ms = 2000;")
            with open(s.config_path, "w") as f:
                f.write(text)
            s.start()
            s.demo_brand(yotpo=False)
            s.emarsys.fault("status", status=200, path_prefix="/api/v3/contact",
                            body={"replyCode": 0, "replyText": "OK",
                                  "data": {"ids": [1], "pad": "x" * 10000}})
            r = s.post_event(sample_event("consent_intent"), webhook_id="big")
            self.assertEqual(r.status, 202, r)
            d = r.json["deliveries"][0]
            self.assertEqual(d["status"], "retrying")
            self.assertIn("response body over 2048 bytes", d["reason"])
            att = s.admin("GET", "/admin/v1/events/big").json["attempts"]
            self.assertEqual(att[-1]["outcome"], "too_large")


class PausedDestination(unittest.TestCase):

    def test_pausing_keeps_waiting_retries(self):
        """A delivery waiting for a retry is not dropped when the operator
        pauses its destination: it waits, and runs once resumed."""
        with Stack(retry_schedule="[1, 1, 1]") as s:
            s.demo_brand(yotpo=False)
            s.emarsys.fault("status", status=503, count=1,
                            path_prefix="/api/v3/contact")
            r = s.post_event(sample_event("consent_intent"), webhook_id="p1")
            self.assertEqual(r.status, 202, r)
            paused = {"name": "Acme", "emarsys": {
                "enabled": False, "client_id": "demo_client",
                "client_secret": "demo_secret"}}
            s.put_brand("acme", paused)
            # The retrier looks at it (after 1 s) and postpones it.
            s.wait(lambda: s.query(
                "SELECT reason FROM deliveries WHERE event_id='p1' AND "
                "destination='emarsys'") == [
                ("emarsys is paused for this brand (enabled: false)",)],
                what="postponed while paused")
            self.assertEqual(s.query("SELECT status, attempts FROM "
                                     "deliveries WHERE event_id='p1' AND "
                                     "destination='emarsys'"),
                             [("retrying", 1)])
            self.assertEqual(s.query("SELECT status FROM events WHERE "
                                     "id='p1'"), [("pending",)])
            # Paused for longer than the whole schedule (3 s here): dead,
            # for an operator, rather than waiting forever.
            time.sleep(3.2)
            with s.db() as c:
                c.execute("UPDATE deliveries SET next_at = 0 WHERE "
                          "event_id = 'p1' AND destination = 'emarsys'")
            s.wait(lambda: s.query(
                "SELECT status, reason FROM deliveries WHERE event_id='p1' "
                "AND destination='emarsys'") == [
                ("dead", "destination paused for longer than the retry "
                         "schedule")], what="dead after the schedule")
            s.demo_brand(yotpo=False)
            r = s.admin("POST", "/admin/v1/events/p1/redeliver", {})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json["requeued"], 1, r)
            # The dispatcher delivers it within moments.
            s.wait(lambda: s.query("SELECT status FROM events WHERE "
                                   "id='p1'") == [("delivered",)],
                   what="redelivered by the dispatcher")
