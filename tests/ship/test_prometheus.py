"""Issue 11 item 5: Prometheus.

A real stack (nginx + gcrelay + simulators) serves an event delivered to
both destinations, a signature failure, a 4xx and admin calls, so every
counter family and the latency histogram hold data; then:

- `promtool check metrics` on the live /metrics: no error, no lint problem;
- `promtool check rules` and `promtool test rules` on deploy/prometheus;
- every metric name the rules and the Grafana dashboard use is one the
  live /metrics exports (a renamed metric breaks this, not an alert in
  production);
- the dashboard is Grafana JSON whose queries parse as PromQL.

promtool comes from Debian's prometheus package (deploy/deps.sh); a
missing promtool fails these tests."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from stack import Stack, new_whsec, sample_event

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
RULES = os.path.join(ROOT, "deploy", "prometheus", "gcrelay-rules.yml")
RULE_TESTS = os.path.join(ROOT, "deploy", "prometheus",
                          "gcrelay-rules.test.yml")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "gcrelay-dashboard.json")

# A gcrelay metric name in PromQL or prose, not part of a recording rule's
# name (level:metric:operations).
NAME_RE = re.compile(r"(?<![\w:])gcrelay_[A-Za-z0-9_]+(?![\w:])")
RECORDED_RE = re.compile(r"(?<![\w:])[a-z_]+:[A-Za-z0-9_:]+")

metrics_text = ""
unhealthy_text = ""  # /metrics while the store is unreadable
exported = set()


def promtool(*args, stdin=None):
    path = shutil.which("promtool")
    if path is None:
        raise AssertionError("promtool is missing: install Debian's "
                             "prometheus package (sh deploy/deps.sh)")
    return subprocess.run([path] + list(args), input=stdin,
                          capture_output=True, text=True, timeout=120)


def sample_value(text, series):
    """The value of the sample line that starts with series."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no sample %s in /metrics" % series)


def setUpModule():
    global metrics_text, unhealthy_text, exported
    with Stack() as s:
        s.demo_brand()
        r = s.post_event(sample_event())
        assert r.status == 200, r
        r = s.post_event(sample_event(), secret=new_whsec())
        assert r.status == 401, r
        r = s.post_event(None, body=b"{not json")
        assert r.status == 400, r
        r = s.admin("GET", "/admin/v1/brands")
        assert r.status == 200, r
        # GET and PUT of a brand answer 200 under one route label.
        r = s.admin("GET", "/admin/v1/brands/acme")
        assert r.status == 200, r
        r = s.demo_brand()
        assert r.status == 200, r
        r = s.request("GET", "/admin/v1/brands")  # unsigned: refused
        assert r.status == 401, r
        r = s.request("GET", "/metrics")
        assert r.status == 200, r
        metrics_text = r.raw.decode()
        os.chmod(s.db_path, 0)
        try:
            r = s.request("GET", "/metrics")
        finally:
            os.chmod(s.db_path, 0o600)
        assert r.status == 200, r
        unhealthy_text = r.raw.decode()
    # Sample names, and the families declared by TYPE (gcrelay_circuit_open
    # has lines only while a circuit is not closed).
    for line in metrics_text.splitlines():
        m = re.match(r"(?:# TYPE )?([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", line)
        if m:
            exported.add(m.group(1))


class LiveMetrics(unittest.TestCase):
    def test_populated(self):
        """The scrape promtool checks holds real data, not just zeros."""
        t = metrics_text
        self.assertGreater(sample_value(
            t, 'gcrelay_deliveries_total{destination="emarsys",'
            'outcome="delivered"}'), 0)
        self.assertGreater(sample_value(
            t, 'gcrelay_upstream_latency_seconds_count'
            '{destination="emarsys"}'), 0)
        self.assertGreater(sample_value(
            t, 'gcrelay_signature_failures_total{reason="no_match"}'), 0)
        self.assertGreater(sample_value(
            t, 'gcrelay_http_requests_total{route="events",'
            'status="400"}'), 0)
        self.assertGreater(sample_value(
            t, 'gcrelay_admin_auth_failures_total'), 0)
        self.assertIn('route="admin_brands"', t)
        self.assertEqual(sample_value(t, "gcrelay_store_up"), 1)
        # Stack() runs 2 workers, 1 control worker, 1 dispatcher.
        for kind, n in (("worker", 2), ("control", 1), ("dispatcher", 1)):
            for name in ("gcrelay_children", "gcrelay_children_configured"):
                self.assertEqual(sample_value(
                    t, '%s{kind="%s"}' % (name, kind)), n, (name, kind))

    def test_store_up_follows_the_store(self):
        """gcrelay_store_up, which GcrelayStoreUnhealthy watches, drops
        to 0 while /healthz would answer 503 (and /metrics still
        answers)."""
        self.assertEqual(sample_value(unhealthy_text, "gcrelay_store_up"), 0)
        p = promtool("check", "metrics", stdin=unhealthy_text)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_no_duplicate_series(self):
        """Prometheus drops a scrape's duplicate samples (promtool does
        not notice them): one line per series."""
        seen = {}
        for line in metrics_text.splitlines():
            if line and not line.startswith("#"):
                series = line.rsplit(" ", 1)[0]
                self.assertNotIn(series, seen, "twice: " + series)
                seen[series] = line
        self.assertIn('gcrelay_http_requests_total{route="admin_brand",'
                      'status="200"}', seen)
        self.assertIn('gcrelay_http_requests_total{route="admin_brand",'
                      'status="201"}', seen)

    def test_promtool_check_metrics(self):
        p = promtool("check", "metrics", stdin=metrics_text)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual((p.stdout + p.stderr).strip(), "",
                         "promtool lint problems")

    def test_promtool_catches_problems(self):
        """The check above can fail: a counter without _total is linted."""
        bad = metrics_text.replace("gcrelay_child_restarts_total",
                                   "gcrelay_child_restarts")
        p = promtool("check", "metrics", stdin=bad)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("gcrelay_child_restarts", p.stdout + p.stderr)


def rules_text():
    with open(RULES) as f:
        return f.read()


class Rules(unittest.TestCase):
    def test_check_rules(self):
        p = promtool("check", "rules", RULES)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("SUCCESS", p.stdout)

    def test_rule_unit_tests(self):
        p = promtool("test", "rules", RULE_TESTS)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("SUCCESS", p.stdout)

    def test_every_alert_tested_both_ways(self):
        """Each alert has a case where it fires and one where it does
        not."""
        alerts = re.findall(r"(?m)^\s*- alert: (\w+)", rules_text())
        self.assertGreaterEqual(len(alerts), 8)
        fires, quiet = set(), set()
        with open(RULE_TESTS) as f:
            lines = f.read().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"\s*alertname: (\w+)$", line)
            if not m:
                continue
            nxt = lines[i + 1].strip()
            (quiet if nxt == "exp_alerts: []" else fires).add(m.group(1))
        for a in alerts:
            self.assertIn(a, fires, "no test where %s fires" % a)
            self.assertIn(a, quiet, "no test where %s stays quiet" % a)
        # The operator's list from issue 11.
        for a in ("GcrelayDeliveriesDead", "GcrelayOldestDueDeliveryOld",
                  "GcrelayCircuitOpen", "GcrelaySignatureFailuresRising",
                  "GcrelayNoLiveChildren", "GcrelayStoreUnhealthy",
                  "GcrelayDispatcherHeartbeatStale"):
            self.assertIn(a, alerts)

    def test_rules_use_exported_metrics(self):
        names = set(NAME_RE.findall(rules_text()))
        self.assertGreaterEqual(len(names), 8)
        self.assertEqual(sorted(names - exported), [],
                         "metrics the rules use but /metrics lacks")


def dashboard_exprs(dash):
    """Every PromQL string of the dashboard: panel targets (rows too) and
    query variables."""
    out = []

    def panels(ps):
        for p in ps:
            for t in p.get("targets", []):
                out.append(t["expr"])
            panels(p.get("panels", []))
    panels(dash["panels"])
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            out.append(q["query"] if isinstance(q, dict) else q)
    return out


class Dashboard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(DASHBOARD) as f:
            cls.dash = json.load(f)

    def test_grafana_shape(self):
        d = self.dash
        self.assertGreaterEqual(d["schemaVersion"], 36)
        self.assertTrue(d["uid"] and d["title"])
        ids = [p["id"] for p in d["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids repeat")
        titles = " ".join(p["title"].lower() for p in d["panels"])
        for want in ("events", "deliveries", "latency", "oldest due",
                     "circuits", "processes", "store"):
            self.assertIn(want, titles)
        for p in d["panels"]:
            g = p["gridPos"]
            self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
            if p["type"] != "row":
                self.assertTrue(p["targets"], p["title"])
                self.assertEqual(p["datasource"]["type"], "prometheus")

    def test_exprs_use_exported_metrics(self):
        exprs = dashboard_exprs(self.dash)
        self.assertGreaterEqual(len(exprs), 15)
        names = set()
        recorded = set(re.findall(r"(?m)^\s*- record: (\S+)", rules_text()))
        for e in exprs:
            found = NAME_RE.findall(e)
            self.assertTrue(found or RECORDED_RE.search(e), e)
            names.update(found)
            for r in RECORDED_RE.findall(e):
                self.assertIn(r, recorded, e)
        self.assertEqual(sorted(names - exported), [],
                         "metrics the dashboard uses but /metrics lacks")

    def test_exprs_parse(self):
        """promtool parses each query, Grafana's variables filled in."""
        rules = ["groups:", "  - name: dashboard", "    rules:"]
        for i, e in enumerate(dashboard_exprs(self.dash)):
            if e.startswith("label_values("):
                e = re.match(r"label_values\((\w+),", e).group(1)
            e = e.replace("$__rate_interval", "5m")
            e = e.replace("$instance", ".*")
            self.assertNotIn("$", e)
            rules += ["      - record: dashboard:q%d" % i,
                      "        expr: %s" % json.dumps(e)]
        with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
            f.write("\n".join(rules) + "\n")
            f.flush()
            p = promtool("check", "rules", f.name)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


if __name__ == "__main__":
    unittest.main()
