"""Run one integration test module with unittest and print a summary line
the suite runner reads:
  RESULT {"passed": n, "failed": n, "failures": [...], "skipped": [...]}
where skipped lists [test id, reason] for every skip and expected failure:
the runner counts those against the run, so a test cannot vanish."""

import importlib.util
import json
import os
import sys
import time
import unittest


class Result(unittest.TextTestResult):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.passed = []
        self.t0 = {}

    def startTest(self, test):
        self.t0[test.id()] = time.monotonic()
        super().startTest(test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed.append(test.id())
        print("TEST ok %s %.1fs" % (test.id(), time.monotonic() -
                                     self.t0.get(test.id(), 0)), flush=True)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        print("TEST fail %s" % test.id(), flush=True)

    def addError(self, test, err):
        super().addError(test, err)
        print("TEST fail %s" % test.id(), flush=True)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        print("TEST skip %s: %s" % (test.id(), reason), flush=True)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        print("TEST skip %s: expected failure" % test.id(), flush=True)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            print("TEST fail %s" % subtest.id(), flush=True)


def without_sqlite_only(suite, mod):
    """On PostgreSQL, the tests the module lists in SQLITE_ONLY (test
    method name -> why it is about the SQLite file) are not collected."""
    only = getattr(mod, "SQLITE_ONLY", {})
    if os.environ.get("GCRELAY_STORE") != "postgresql" or not only:
        return suite
    kept = unittest.TestSuite()
    for t in _flatten(suite):
        name = t.id().split(".")[-1]
        if name in only:
            print("SQLITE_ONLY %s: %s" % (name, only[name]), flush=True)
        else:
            kept.addTest(t)
    return kept


def _flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def main(path):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    # unittest finds setUpModule/tearDownModule through sys.modules.
    sys.modules[name] = mod
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    spec.loader.exec_module(mod)
    suite = without_sqlite_only(
        unittest.defaultTestLoader.loadTestsFromModule(mod), mod)
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2,
                                     resultclass=Result)
    res = runner.run(suite)
    failed = [t.id() for t, _ in res.failures + res.errors +
              res.unexpectedSuccesses]
    skipped = [[t.id(), reason] for t, reason in res.skipped]
    skipped += [[t.id(), "expected failure"]
                for t, _ in res.expectedFailures]
    print("RESULT " + json.dumps({"passed": len(res.passed),
                                  "failed": len(failed),
                                  "failures": failed,
                                  "skipped": skipped}), flush=True)
    return 0 if not failed and not skipped else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
