"""Issue 11 item 6: a test cannot silently skip.

The runner (tests/runner.py) counts every skip, unittest's and cmocka's,
lists it with its reason, prints "N passed, N failed, N skipped" last and
exits 1 when anything was skipped.  These tests run the runner and its
module harness (tests/lib/itrun.py) on made-up suites that skip."""

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
RUNNER = os.path.join(ROOT, "tests", "runner.py")
ITRUN = os.path.join(ROOT, "tests", "lib", "itrun.py")

MODULE = textwrap.dedent('''
    import unittest

    class A(unittest.TestCase):
        def test_runs(self):
            pass

        def test_skips_itself(self):
            self.skipTest("npm is missing")

        @unittest.skipUnless(False, "needs root")
        def test_skip_unless(self):
            pass

        @unittest.expectedFailure
        def test_expected_failure(self):
            self.fail("known bug")

    @unittest.skip("whole class")
    class B(unittest.TestCase):
        def test_b(self):
            pass
''')

# What a cmocka binary prints with CMOCKA_MESSAGE_OUTPUT=TAP (cmocka 1.1
# writes a skip as "not ok N # SKIP name"), and a TAP-style skip.
TAP = textwrap.dedent('''\
    #!/bin/sh
    echo "1..4"
    echo "ok 1 - t_runs"
    echo "not ok 2 # SKIP t_cmocka_skip"
    echo "ok 3 - t_tap_skip # SKIP no database"
    echo "ok 4 - t_runs_too"
''')


class NoSilentSkips(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def test_itrun_reports_skips(self):
        path = os.path.join(self.tmp.name, "test_fake.py")
        with open(path, "w") as f:
            f.write(MODULE)
        p = subprocess.run([sys.executable, ITRUN, path],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        m = re.search(r"^RESULT (.*)$", p.stdout, re.M)
        self.assertIsNotNone(m, p.stdout)
        res = json.loads(m.group(1))
        self.assertEqual(res["passed"], 1)
        self.assertEqual(res["failed"], 0)
        got = {name.split(".")[-1]: why for name, why in res["skipped"]}
        self.assertEqual(got, {"test_skips_itself": "npm is missing",
                               "test_skip_unless": "needs root",
                               "test_expected_failure": "expected failure",
                               "test_b": "whole class"})

    def test_runner_fails_on_unit_skips(self):
        tests = os.path.join(self.tmp.name, "tests")
        os.mkdir(tests)
        binary = os.path.join(tests, "test_fake")
        with open(binary, "w") as f:
            f.write(TAP)
        os.chmod(binary, 0o755)
        p = subprocess.run([sys.executable, RUNNER, "--build", self.tmp.name,
                            "--suites", "unit"], capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
        out = p.stdout
        self.assertEqual(p.returncode, 1, out + p.stderr)
        self.assertEqual(out.rstrip().splitlines()[-1],
                         "2 passed, 0 failed, 2 skipped")
        self.assertIn("skipped: unit/test_fake/t_cmocka_skip", out)
        self.assertIn("skipped: unit/test_fake/t_tap_skip: no database", out)
        self.assertNotIn("FAIL", out)

    def test_runner_passes_without_skips(self):
        tests = os.path.join(self.tmp.name, "tests")
        os.mkdir(tests)
        binary = os.path.join(tests, "test_fake")
        with open(binary, "w") as f:
            f.write("#!/bin/sh\necho 1..1\necho 'ok 1 - t_runs'\n")
        os.chmod(binary, 0o755)
        p = subprocess.run([sys.executable, RUNNER, "--build", self.tmp.name,
                            "--suites", "unit"], capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(p.stdout.rstrip().splitlines()[-1],
                         "1 passed, 0 failed, 0 skipped")


if __name__ == "__main__":
    unittest.main()
