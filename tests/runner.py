#!/usr/bin/env python3
"""Runs every test suite of gcrelay and prints "N passed, N failed, N
skipped" as its last line.  A skipped test (unittest skip or expected
failure, cmocka "# SKIP") fails the run like a failed one: the skips are
listed with their reasons, and the exit status is 1.

  unit         cmocka unit tests (tests/unit), TAP output
  sims         the simulators' own self-test (tests/sim)
  integration  nginx + gcrelay + simulators (tests/integration)
  ship         packaging, man pages, contracts, rules (tests/ship)
  lint         clang-format and banned calls (tests/lint.sh)

The integration suites run twice: on SQLite, then (labels "pg/...") on
PostgreSQL, a throwaway cluster started here (tests/lib/pgcluster.py),
followed by the PostgreSQL-only suites (tests/postgresql: two hosts,
database faults); --no-pg skips that pass.

--sanitizers: the build has ASan/UBSan; gcrelay's reports fail the test.
--valgrind: unit tests and integration tests run under valgrind.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
passed = failed = skipped = 0
failures = []
skips = []  # (name, reason)


prefix = ""
sqlite_only = []  # tests not collected on PostgreSQL, with why


def record(ok, name, detail=""):
    global passed, failed
    name = prefix + name
    if ok:
        passed += 1
    else:
        failed += 1
        failures.append(name)
        if detail:
            sys.stdout.write(detail if detail.endswith("\n") else
                             detail + "\n")
    print("%s %s" % ("ok  " if ok else "FAIL", name), flush=True)


def record_skip(name, reason):
    """A test that did not run: counted, listed, and fails the run."""
    global skipped
    name = prefix + name
    skipped += 1
    skips.append((name, reason))
    print("SKIP %s: %s" % (name, reason), flush=True)


# TAP: "ok 1 - name", "not ok 2 - name", and skips either as cmocka
# writes them ("not ok 3 # SKIP name") or as TAP says ("ok 3 - name # SKIP
# reason").
TAP_SKIP = re.compile(r"^(?:not )?ok \d+(?: - (.*?))?\s*# SKIP\b\s*(.*)$",
                      re.M | re.I)


def run_unit(build, valgrind):
    env = dict(os.environ, CMOCKA_MESSAGE_OUTPUT="TAP",
               GC_TEST_DATA=os.path.join(ROOT, "tests", "data"))
    binaries = sorted(glob.glob(os.path.join(build, "tests", "test_*")))
    if not binaries:
        record(False, "unit (no test binaries in %s/tests: `make all` builds "
               "only the programs; `make test-bins` builds the tests)" % build)
    for binary in binaries:
        name = os.path.basename(binary)
        cmd = [binary]
        if valgrind:
            cmd = ["valgrind", "--quiet", "--error-exitcode=99",
                   "--leak-check=full", "--errors-for-leak-kinds=all"] + cmd
        p = subprocess.run(cmd, capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=900)
        out = p.stdout + p.stderr
        tap_skips = TAP_SKIP.findall(out)
        out_run = TAP_SKIP.sub("", out)
        oks = re.findall(r"^ok \d+ - (.*)$", out_run, re.M)
        bad = re.findall(r"^not ok \d+ - (.*)$", out_run, re.M)
        for t, why in tap_skips:
            record_skip("unit/%s/%s" % (name, t or why),
                        why if t else "skipped")
        for t in oks:
            record(True, "unit/%s/%s" % (name, t))
        for t in bad:
            record(False, "unit/%s/%s" % (name, t), out[-4000:])
        if p.returncode != 0 and not bad:
            record(False, "unit/%s (exit %d)" % (name, p.returncode),
                   out[-4000:])


def run_module(path, env, timeout, label):
    t0 = time.monotonic()
    try:
        p = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "lib",
                                                         "itrun.py"), path],
                           capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=timeout)
        out, err, rc = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") \
            if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = "timed out after %ds" % timeout
        rc = -1
    m = re.search(r"^RESULT (.*)$", out, re.M)
    if m is None:
        record(False, "%s (crashed or timed out)" % label,
               (err or "")[-6000:])
        return
    res = json.loads(m.group(1))
    for name, why in re.findall(r"^SQLITE_ONLY (\S+): (.*)$", out, re.M):
        sqlite_only.append("%s/%s (%s)" % (label, name, why))
    for name in re.findall(r"^TEST ok (\S+)", out, re.M):
        record(True, "%s/%s" % (label, name.split(".")[-1]))
    if res["failures"]:
        sys.stdout.write(err[-12000:] + "\n")
    for name in res["failures"]:
        record(False, "%s/%s" % (label, name.split(".")[-1]))
    for name, reason in res.get("skipped", []):
        # "setUpClass (module.Class)" names a class, not a test.
        short = name if " (" in name else name.split(".")[-1]
        record_skip("%s/%s" % (label, short), reason)
    print("     %s: %.1fs" % (label, time.monotonic() - t0), flush=True)


def contract_log(build):
    return os.path.join(os.path.abspath(build), "contract-responses.jsonl")


def run_integration(build, sanitizers, valgrind, only):
    env = dict(os.environ, GCRELAY_BUILD=os.path.abspath(build))
    if sanitizers:
        env["GCRELAY_SANITIZERS"] = "1"
    if valgrind:
        env["GCRELAY_VALGRIND"] = "1"
    if not (sanitizers or valgrind):
        # Every response the suites receive through nginx, for the OpenAPI
        # contract test (tests/ship/test_openapi.py).  A full run starts
        # it afresh; --only adds to it.
        env["GCRELAY_CONTRACT_LOG"] = contract_log(build)
        if not only:
            open(env["GCRELAY_CONTRACT_LOG"], "w").close()
    pattern = os.path.join(ROOT, "tests", "integration", "test_*.py")
    for path in sorted(glob.glob(pattern)):
        label = "integration/" + os.path.basename(path)[5:-3]
        if only and not any(o in label for o in only):
            continue
        if valgrind and "smoke" not in label:
            continue
        run_module(path, env, 1500 if valgrind else 900, label)


def run_integration_pg(build, sanitizers, only):
    """The same integration suites with the PostgreSQL store."""
    global prefix
    sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
    import pgcluster
    try:
        cluster = pgcluster.Cluster()
    except Exception as e:  # a broken set-up fails, never skips
        record(False, "pg/cluster start", str(e))
        return
    os.environ["GCRELAY_PG_DIR"] = cluster.dir
    os.environ["GCRELAY_STORE"] = "postgresql"
    prefix = "pg/"
    try:
        run_integration(build, sanitizers, False, only)
        # PostgreSQL only (tests/postgresql): two hosts on one database,
        # the database stopped and restarted.
        env = dict(os.environ, GCRELAY_BUILD=os.path.abspath(build))
        if sanitizers:
            env["GCRELAY_SANITIZERS"] = "1"
        pattern = os.path.join(ROOT, "tests", "postgresql", "test_*.py")
        for path in sorted(glob.glob(pattern)):
            label = "postgresql/" + os.path.basename(path)[5:-3]
            if not only or any(o in label for o in only):
                run_module(path, env, 900, label)
    finally:
        prefix = ""
        del os.environ["GCRELAY_STORE"], os.environ["GCRELAY_PG_DIR"]
        cluster.remove()


def run_ship(build):
    env = dict(os.environ, GCRELAY_BUILD=os.path.abspath(build))
    pattern = os.path.join(ROOT, "tests", "ship", "test_*.py")
    for path in sorted(glob.glob(pattern)):
        label = "ship/" + os.path.basename(path)[5:-3]
        run_module(path, env, 900, label)


def run_sims():
    path = os.path.join(ROOT, "tests", "sim", "test_sims.py")
    run_module(path, dict(os.environ), 300, "sims")


def run_lint():
    p = subprocess.run(["sh", os.path.join(ROOT, "tests", "lint.sh")],
                       capture_output=True, text=True, cwd=ROOT)
    record(p.returncode == 0, "lint", p.stdout + p.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--sanitizers", action="store_true")
    ap.add_argument("--valgrind", action="store_true")
    ap.add_argument("--valgrind-pass", action="store_true",
                    help="after the suites, run unit and smoke tests again "
                    "under valgrind")
    ap.add_argument("--suites", default="unit,sims,integration,ship,lint")
    ap.add_argument("--no-pg", action="store_true",
                    help="run the integration suites on SQLite only")
    ap.add_argument("--only", default="",
                    help="comma-separated integration module names")
    a = ap.parse_args()
    suites = a.suites.split(",")
    only = [o for o in a.only.split(",") if o]
    t0 = time.monotonic()
    if "unit" in suites:
        run_unit(a.build, a.valgrind)
    if "sims" in suites and not a.valgrind:
        run_sims()
    if "integration" in suites:
        run_integration(a.build, a.sanitizers, a.valgrind, only)
        if not (a.no_pg or a.valgrind):
            run_integration_pg(a.build, a.sanitizers, only)
    if "ship" in suites and not (a.sanitizers or a.valgrind):
        run_ship(a.build)
    if "lint" in suites and not (a.sanitizers or a.valgrind):
        run_lint()
    if a.valgrind_pass:
        global prefix
        prefix = "valgrind/"
        run_unit(a.build, True)
        run_integration(a.build, False, True, only)
    print("\n%d passed, %d failed, %d skipped (%.0fs)" % (
        passed, failed, skipped, time.monotonic() - t0))
    if sqlite_only:
        print("SQLite-only, not run on PostgreSQL (%d): %s" %
              (len(sqlite_only), "; ".join(sqlite_only)))
    if failures:
        print("failed: " + ", ".join(failures[:30]))
    for name, reason in skips:
        print("skipped: %s: %s" % (name, reason))
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed or skipped else 0


if __name__ == "__main__":
    sys.exit(main())
