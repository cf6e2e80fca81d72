"""deploy/openapi.yaml: linted with Redocly CLI's recommended ruleset, in
step with the router's table, and a contract the real responses keep.

The integration suite (tests/runner.py) records every response it gets
through nginx in BUILD/contract-responses.jsonl (tests/lib/stack.py,
GCRELAY_CONTRACT_LOG); tests/ship/openapi_contract.mjs validates each one
against the document (operation, status, media type, JSON Schema of the
body, with ajv) and reports which operations no test exercised.  The npm
packages come from deploy/deps.sh (tests/node_modules)."""

import json
import os
import re
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SPEC = os.path.join(ROOT, "deploy", "openapi.yaml")
LINT_CONFIG = os.path.join(ROOT, "deploy", "redocly.yaml")
VALIDATOR = os.path.join(HERE, "openapi_contract.mjs")
NODE_MODULES = os.path.join(ROOT, "tests", "node_modules")
BUILD = os.environ.get("GCRELAY_BUILD",
                       os.path.join(ROOT, "build", "release"))
LOG = os.path.join(BUILD, "contract-responses.jsonl")
MIN_RESPONSES = 200  # a full integration run records thousands


def validate(log_path):
    """The validator's report on the responses in log_path."""
    for mod in ("ajv", "ajv-formats", "yaml"):
        if not os.path.isdir(os.path.join(NODE_MODULES, mod)):
            raise AssertionError("npm package %s missing from tests/"
                                 "node_modules: run deploy/deps.sh" % mod)
    p = subprocess.run(["node", VALIDATOR, SPEC, log_path],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise AssertionError("validator failed (%d):\n%s" % (p.returncode,
                                                            p.stderr[-3000:]))
    return json.loads(p.stdout)


def describe(mismatches, n=20):
    out = []
    for m in mismatches[:n]:
        line = "line %d: %s -> %s: %s" % (m["line"], m["request"],
                                         m["status"], m["what"])
        for e in m.get("errors", []):
            line += "\n      " + e
        if "body" in m:
            line += "\n      body: " + m["body"][:200]
        out.append(line)
    more = len(mismatches) - n
    if more > 0:
        out.append("... and %d more" % more)
    return "\n".join(out)


class Lint(unittest.TestCase):
    def test_redocly_recommended_no_problems(self):
        cli = os.path.join(NODE_MODULES, ".bin", "redocly")
        self.assertTrue(os.path.exists(cli), "@redocly/cli missing from "
                        "tests/node_modules: run deploy/deps.sh")
        env = dict(os.environ, REDOCLY_TELEMETRY="off",
                   REDOCLY_SUPPRESS_UPDATE_NOTICE="true", NO_COLOR="1")
        p = subprocess.run([cli, "lint", "--config", LINT_CONFIG,
                            "--format", "stylish", SPEC],
                           capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=300)
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out)
        # Warnings count too: the document is kept at zero problems.
        self.assertNotRegex(out, r"(?m)^\s*\d+:\d+\s+(error|warning)\s",
                            out)
        self.assertNotIn("You have", out)
        self.assertIn("Your API description is valid", out)


class RouterTable(unittest.TestCase):
    """Every route of handlers/router.c is an operation, and no more."""

    def test_operations_are_the_routes(self):
        with open(os.path.join(ROOT, "handlers", "router.c")) as f:
            src = f.read()
        routes = set()
        for method, pattern in re.findall(
                r'\{\s*"([A-Z]+)",\s*"(/[^"]*)"', src):
            # "*" is one segment: the document names it.
            routes.add((method, re.sub(r"\*", "{}", pattern)))
        report = validate(os.devnull)
        ops = set()
        for key in report["operations"]:
            method, path = key.split(" ", 1)
            ops.add((method, re.sub(r"\{[^}]+\}", "{}", path)))
        self.assertGreaterEqual(len(routes), 10, "router table not parsed")
        self.assertEqual(sorted(routes - ops), [], "routes not documented")
        self.assertEqual(sorted(ops - routes), [], "operations not routed")


class Contract(unittest.TestCase):
    """The responses the integration suites received match the document."""

    @classmethod
    def setUpClass(cls):
        cls.report = None
        if os.path.exists(LOG):
            with open(LOG) as f:
                cls.count = sum(1 for l in f if l.strip())
            cls.report = validate(LOG)

    def require_log(self):
        self.assertTrue(os.path.exists(LOG), "%s is missing: run the "
                        "integration suite first (python3 tests/runner.py "
                        "--build %s --suites integration)" % (LOG, BUILD))
        self.assertGreaterEqual(
            self.count, MIN_RESPONSES, "%s has only %d responses: run the "
            "integration suite first" % (LOG, self.count))

    def test_every_recorded_response_matches(self):
        self.require_log()
        mm = self.report["mismatches"]
        if mm:
            self.fail("%d of %d responses do not match deploy/openapi.yaml"
                      ":\n%s" % (len(mm), self.report["responses"],
                                  describe(mm)))

    def test_every_operation_exercised(self):
        self.require_log()
        missing = [u["op"] for u in self.report["unexercised"]
                   if not u["reason"]]
        self.assertEqual(missing, [], "operations no integration test "
                         "exercised (test them, or justify with "
                         "x-contract-not-exercised): %s" % missing)


class ValidatorSelfCheck(unittest.TestCase):
    """The validator rejects what is wrong, so a pass means something."""

    GOOD = [
        {"method": "GET", "path": "/admin/v1/brands/acme", "query": "",
         "status": 404, "content_type": "application/problem+json",
         "body": json.dumps({"type": "about:blank", "title": "Not Found",
                             "status": 404, "detail": "no brand acme",
                             "code": "not_found", "request_id": "ab" * 8})},
        {"method": "DELETE", "path": "/admin/v1/brands/acme", "query": "",
         "status": 204, "content_type": "application/json", "body": ""},
        {"method": "PATCH", "path": "/v1/events", "query": "",
         "status": 405, "content_type": "application/problem+json",
         "body": json.dumps({"type": "about:blank",
                             "title": "Method Not Allowed", "status": 405,
                             "code": "method_not_allowed"})},
    ]
    BAD = [
        # problem+json without "status"
        {"method": "POST", "path": "/v1/events", "query": "", "status": 401,
         "content_type": "application/problem+json",
         "body": json.dumps({"type": "about:blank", "title": "Unauthorized",
                             "code": "invalid_signature"})},
        # an undocumented status
        {"method": "GET", "path": "/admin/v1/events", "query": "limit=1",
         "status": 409, "content_type": "application/problem+json",
         "body": json.dumps({"type": "about:blank", "title": "Conflict",
                             "status": 409, "code": "conflict"})},
        # an error that is not problem+json
        {"method": "GET", "path": "/admin/v1/brands/acme", "query": "",
         "status": 404, "content_type": "text/html", "body": "<h1>404</h1>"},
        # a secret returned in clear
        {"method": "GET", "path": "/admin/v1/brands/acme", "query": "",
         "status": 200, "content_type": "application/json",
         "body": json.dumps({"slug": "acme", "name": "Acme", "yotpo": {
             "enabled": True, "guid": "the-clear-guid",
             "api_key": "****-key"}})},
        # an undocumented member in an event view
        {"method": "GET", "path": "/admin/v1/events", "query": "",
         "status": 200, "content_type": "application/json",
         "body": json.dumps({"events": [], "next_cursor": None,
                             "total": 0})},
        # a 401 outside /admin/ for a path no route has
        {"method": "GET", "path": "/nope", "query": "", "status": 401,
         "content_type": "application/problem+json",
         "body": json.dumps({"type": "about:blank", "title": "Unauthorized",
                             "status": 401, "code": "unauthorized"})},
        # a body on a response without content
        {"method": "DELETE", "path": "/admin/v1/brands/acme", "query": "",
         "status": 204, "content_type": "application/json", "body": "{}"},
    ]

    def test_wrong_responses_rejected(self):
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as f:
            for r in self.GOOD + self.BAD:
                f.write(json.dumps(r) + "\n")
            f.flush()
            report = validate(f.name)
        flagged = sorted({m["line"] for m in report["mismatches"]})
        want = list(range(len(self.GOOD) + 1,
                          len(self.GOOD) + len(self.BAD) + 1))
        self.assertEqual(flagged, want, describe(report["mismatches"]))
        # Three operations were exercised here; the rest are reported.
        self.assertIn("GET /admin/v1/brands/{slug}", report["covered"])
        self.assertIn("GET /metrics",
                      [u["op"] for u in report["unexercised"]])


if __name__ == "__main__":
    unittest.main()
