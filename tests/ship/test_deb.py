"""The Debian package and the hardened build.

Builds gcrelay_<version>_<arch>.deb with `make deb` into a temporary
directory, runs lintian on it, installs it into this machine with dpkg,
checks what it put where (owners, modes, units, snippets, man pages), runs
the installed `gcrelay -t` on the installed config once its placeholders
are filled in, then removes and purges it.  The package is purged and a
gcrelay user the test created is deleted whatever happens.

It does not touch a gcrelay someone installed here: if the package is
installed, or /etc/gcrelay or /var/lib/gcrelay exist, and not from an
earlier run of this test (/var/tmp/gcrelay-ship-deb.json), it fails and
says so.  `make run` and the integration tests live in run/ and temporary
directories and are not affected.
"""

import base64
import fcntl
import glob
import grp
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BUILD = os.environ.get("GCRELAY_BUILD", os.path.join(ROOT, "build",
                                                     "release"))
MARK = "/var/tmp/gcrelay-ship-deb.json"
LOCK = "/run/lock/gcrelay-ship-deb.lock"
CONF = "/etc/gcrelay/gcrelay.conf"
KEY = "/etc/gcrelay/secrets.key"
STATE = "/var/lib/gcrelay"
WANTS = ["/etc/systemd/system/sockets.target.wants/gcrelay.socket",
         "/etc/systemd/system/multi-user.target.wants/gcrelay.service"]
# The man pages the package must carry (written in deploy/man/).
MAN_PAGES = ["man8/gcrelay.8", "man5/gcrelay.conf.5", "man1/gcrelayctl.1"]


def run(cmd, timeout=600, **kw):
    return subprocess.run(cmd, capture_output=True, text=True,
                          timeout=timeout, **kw)


def dpkg(*args):
    """dpkg, waiting out another dpkg or apt holding the lock."""
    for _ in range(60):
        r = run(["dpkg", "--force-confdef", "--force-confold"] + list(args),
                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if r.returncode == 0 or "lock" not in r.stderr:
            return r
        time.sleep(5)
    return r


def clean_env():
    """The environment without an outer make's (make check's) job server
    and flags."""
    return {k: v for k, v in os.environ.items()
            if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CFLAGS",
                         "CPPFLAGS", "LDFLAGS", "WERROR")}


def status():
    """The package's dpkg status ("" when dpkg has never heard of it)."""
    r = run(["dpkg-query", "-W", "-f=${Status}", "gcrelay"])
    return r.stdout.strip() if r.returncode == 0 else ""


def owner_mode(path):
    st = os.lstat(path)
    return (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name,
            "%04o" % stat.S_IMODE(st.st_mode))


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def hardening(paths):
    """hardening-check's verdict: PIE, stack protector, fortify, RELRO,
    BIND_NOW.  Control-flow protection is not asked for: Debian 12's own
    crt files lack the IBT/SHSTK notes, so no program linked here has it."""
    return run(["hardening-check", "--nocfprotection"] + paths)


class DebPackage(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if os.getuid() != 0:
            raise AssertionError("the package test installs a .deb: run it "
                                 "as root (make check does)")
        for tool in ["dpkg-buildpackage", "dh", "lintian", "hardening-check"]:
            if shutil.which(tool) is None:
                raise AssertionError("%s is missing: sh deploy/deps.sh "
                                     "installs it" % tool)
        # One package test at a time on this machine.
        os.makedirs(os.path.dirname(LOCK), exist_ok=True)
        cls.lock = open(LOCK, "w")
        fcntl.flock(cls.lock, fcntl.LOCK_EX)
        cls.addClassCleanup(cls.lock.close)
        cls.tmp = tempfile.mkdtemp(prefix="gcrelay-deb-test-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls._leftovers()
        created = not user_exists("gcrelay")
        with open(MARK, "w") as f:
            json.dump({"created_user": created}, f)
        cls.addClassCleanup(cls._cleanup)
        r = run(["make", "-s", "-C", ROOT, "deb", "DEB_OUT=" + cls.tmp],
                timeout=900, env=clean_env())
        if r.returncode != 0:
            raise AssertionError("make deb failed:\n" + r.stdout + r.stderr)
        debs = glob.glob(os.path.join(cls.tmp, "gcrelay_*.deb"))
        if len(debs) != 1:
            raise AssertionError("make deb made %r" % debs)
        cls.deb = debs[0]
        cls.contents = run(["dpkg-deb", "-c", cls.deb]).stdout

    @classmethod
    def _leftovers(cls):
        """Purge what an earlier, interrupted run of this test left; refuse
        to touch anything else."""
        ours = os.path.exists(MARK)
        st = status()
        if st and "not-installed" not in st:
            if not ours:
                raise AssertionError(
                    "a gcrelay package is installed here (%s) and not by "
                    "this test: purge it first (dpkg -P gcrelay)" % st)
            dpkg("--purge", "gcrelay")
        for d in ["/etc/gcrelay", STATE]:
            if os.path.exists(d):
                if not ours:
                    raise AssertionError(
                        "%s exists (a manual install?): the package test "
                        "would overwrite and purge it; move it away first"
                        % d)
                shutil.rmtree(d)
        if ours:
            cls._forget_user()

    @classmethod
    def _forget_user(cls):
        try:
            with open(MARK) as f:
                created = json.load(f).get("created_user")
        except (OSError, ValueError):
            created = False
        if created and user_exists("gcrelay"):
            run(["userdel", "gcrelay"])
            try:
                grp.getgrnam("gcrelay")
                run(["groupdel", "gcrelay"])
            except KeyError:
                pass

    @classmethod
    def _cleanup(cls):
        st = status()
        if st and "not-installed" not in st:
            dpkg("--purge", "gcrelay")
        cls._forget_user()
        os.unlink(MARK)

    # ---- the .deb itself ----------------------------------------------

    def test_lintian_reports_no_errors(self):
        r = run(["lintian", "--fail-on", "error", "--pedantic", "-I",
                 self.deb])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotRegex(r.stdout, r"(?m)^E: ", r.stdout)

    def test_package_binaries_are_hardened(self):
        d = os.path.join(self.tmp, "x")
        r = run(["dpkg-deb", "-x", self.deb, d])
        self.assertEqual(r.returncode, 0, r.stderr)
        r = hardening([d + "/usr/sbin/gcrelay", d + "/usr/bin/gcrelayctl"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for what in ["Position Independent Executable: yes",
                     "Stack protected: yes", "Fortify Source functions: yes",
                     "Read-only relocations: yes", "Immediate binding: yes"]:
            self.assertEqual(r.stdout.count(what), 2, r.stdout)

    def test_version_matches_the_program(self):
        d = os.path.join(self.tmp, "v")
        run(["dpkg-deb", "-x", self.deb, d])
        version = run(["dpkg-deb", "-f", self.deb, "Version"]).stdout.strip()
        r = run([d + "/usr/sbin/gcrelay", "-V"])
        self.assertEqual(r.stdout.strip(),
                         "gcrelay " + version.split("-")[0])

    def test_man_pages_gcrelay_8_conf_5_ctl_1_in_package(self):
        # Fails until deploy/man/{gcrelay.8,gcrelay.conf.5,gcrelayctl.1}
        # exist; the package installs whatever deploy/man/*.[0-9] holds.
        missing = [p for p in MAN_PAGES
                   if "./usr/share/man/%s.gz\n" % p not in self.contents]
        self.assertEqual(missing, [], "not in the package (deploy/man/ "
                         "holds %s)" % sorted(os.listdir(os.path.join(
                             ROOT, "deploy", "man")) if os.path.isdir(
                             os.path.join(ROOT, "deploy", "man")) else []))

    # ---- installed into this machine ------------------------------------

    def test_install_configure_remove_purge(self):
        r = dpkg("--install", self.deb)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("install ok installed", status())
        # The shipped config has placeholders: not enabled, and told why.
        self.assertIn("not enabled", r.stderr)
        for link in WANTS:
            self.assertFalse(os.path.lexists(link), link)

        # Programs, units, snippets, docs, man pages.
        self.assertEqual(owner_mode("/usr/sbin/gcrelay"),
                         ("root", "root", "0755"))
        self.assertEqual(owner_mode("/usr/bin/gcrelayctl"),
                         ("root", "root", "0755"))
        unit = open("/lib/systemd/system/gcrelay.service").read()
        self.assertIn("\nExecStartPre=/usr/sbin/gcrelay -t -c " + CONF,
                      unit)
        self.assertIn("\nExecStart=/usr/sbin/gcrelay -c " + CONF, unit)
        self.assertNotRegex(unit, r"@[A-Z]+@")
        self.assertTrue(os.path.isfile("/lib/systemd/system/gcrelay.socket"))
        for f in ["gcrelay.conf", "gcrelay-locations.conf"]:
            self.assertEqual(
                open("/etc/nginx/snippets/" + f).read(),
                open(os.path.join(ROOT, "nginx", f)).read())
        self.assertTrue(os.path.isfile("/usr/share/doc/gcrelay/README.md"))
        self.assertTrue(os.path.isfile("/usr/share/doc/gcrelay/copyright"))
        # The contract, the alert rules and the dashboard, as examples
        # (dh_compress may gzip the larger ones).
        for f in ["openapi.yaml", "gcrelay-rules.yml",
                  "gcrelay-dashboard.json", "gcrelay.conf.example"]:
            path = "/usr/share/doc/gcrelay/examples/" + f
            self.assertTrue(os.path.isfile(path) or
                            os.path.isfile(path + ".gz"), path)
        for src in glob.glob(os.path.join(ROOT, "deploy", "man", "*.[0-9]")):
            name = os.path.basename(src)
            page = "/usr/share/man/man%s/%s.gz" % (name[-1], name)
            self.assertTrue(os.path.isfile(page), page)

        # The user, the state directory, the config and the key.
        pw = pwd.getpwnam("gcrelay")
        self.assertEqual(pw.pw_dir, STATE)
        self.assertIn(pw.pw_shell, ["/usr/sbin/nologin", "/bin/false"])
        self.assertLess(pw.pw_uid, 1000)
        self.assertEqual(owner_mode(STATE), ("gcrelay", "gcrelay", "0750"))
        self.assertEqual(owner_mode("/etc/gcrelay"),
                         ("root", "gcrelay", "0750"))
        self.assertEqual(owner_mode(CONF), ("root", "gcrelay", "0640"))
        self.assertEqual(owner_mode(KEY), ("root", "gcrelay", "0440"))
        self.assertRegex(open(KEY).read(), r"^[0-9a-f]{64}\n$")
        conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}",
                         "gcrelay"]).stdout
        for f in [CONF, "/etc/nginx/snippets/gcrelay.conf",
                  "/etc/nginx/snippets/gcrelay-locations.conf"]:
            self.assertIn(" %s " % f, conffiles)

        # The first configuration: fill in the placeholders, in place.
        r = run(["/usr/sbin/gcrelay", "-t", "-c", CONF])
        self.assertNotEqual(r.returncode, 0, "placeholders passed -t")
        text = open(CONF).read()
        whsec = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        text, n = re.subn(r'"whsec_REPLACE_ME[^"]*"', '"%s"' % whsec, text)
        self.assertEqual(n, 1)
        with open(CONF, "w") as f:
            f.write(text)
        # As root, and as the daemon's own user (group read suffices).
        r = run(["/usr/sbin/gcrelay", "-t", "-c", CONF])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = run(["runuser", "-u", "gcrelay", "--", "/usr/sbin/gcrelay", "-t",
                 "-c", CONF])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

        # Configured again (dpkg-reconfigure, an upgrade): now enabled, and
        # the admin's config and key are kept.
        key = open(KEY).read()
        r = dpkg("--install", self.deb)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("not enabled", r.stderr)
        for link in WANTS:
            self.assertTrue(os.path.islink(link), link)
        self.assertEqual(open(CONF).read(), text)
        self.assertEqual(open(KEY).read(), key)
        self.assertEqual(owner_mode(CONF), ("root", "gcrelay", "0640"))

        # An admin who disables the units is not overruled by an upgrade.
        for link in WANTS:
            os.unlink(link)  # what `systemctl disable` does
        r = dpkg("--install", self.deb)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for link in WANTS:
            self.assertFalse(os.path.lexists(link), link)

        # remove: programs go; config, key and data stay.
        with open(os.path.join(STATE, "gcrelay.db"), "w") as f:
            f.write("data")
        r = dpkg("--remove", "gcrelay")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("config-files", status())
        for gone in ["/usr/sbin/gcrelay", "/usr/bin/gcrelayctl",
                     "/lib/systemd/system/gcrelay.service"]:
            self.assertFalse(os.path.exists(gone), gone)
        self.assertEqual(open(CONF).read(), text)
        self.assertEqual(open(KEY).read(), key)
        self.assertEqual(open(os.path.join(STATE, "gcrelay.db")).read(),
                         "data")

        # purge: config, key, data, enablement and overrides go.
        r = dpkg("--purge", "gcrelay")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("installed", status().replace("not-installed", ""))
        for gone in ["/etc/gcrelay", STATE,
                     "/etc/nginx/snippets/gcrelay.conf",
                     "/etc/nginx/snippets/gcrelay-locations.conf"] + WANTS:
            self.assertFalse(os.path.lexists(gone), gone)
        overrides = run(["dpkg-statoverride", "--list"]).stdout
        self.assertNotIn("/etc/gcrelay", overrides)


class PlainBuild(unittest.TestCase):
    """`make` alone: hardened, no test library, no -Werror."""

    def test_plain_make_binaries_are_hardened(self):
        build = BUILD
        flags = os.path.join(build, "flags")
        if not os.path.exists(flags) or "-fsanitize" in open(flags).read():
            # A sanitizer build (make asan) is not the plain one: build
            # the plain programs here.
            build = tempfile.mkdtemp(prefix="gcrelay-plain-")
            self.addCleanup(shutil.rmtree, build, ignore_errors=True)
            r = run(["make", "-s", "-C", ROOT, "-j2", "BUILD=" + build,
                     "all"], timeout=900, env=clean_env())
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = hardening([os.path.join(build, "gcrelay"),
                       os.path.join(build, "gcrelayctl")])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def _dry_run(self, *args):
        d = tempfile.mkdtemp(prefix="gcrelay-dry-")
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        env = clean_env()
        env.pop("CI", None)
        r = run(["make", "-n", "-C", ROOT, "BUILD=" + d] + list(args),
                env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_make_all_needs_no_cmocka_and_no_werror(self):
        out = self._dry_run("all")
        self.assertIn("-D_FORTIFY_SOURCE=2", out)
        self.assertIn("-fstack-protector-strong", out)
        self.assertIn("-z,now", out)
        self.assertNotIn("cmocka", out)
        self.assertNotIn("tests/unit", out)
        self.assertNotRegex(out, r"-Werror(\s|$)")
        # CI and make check keep warnings fatal, and build the tests.
        self.assertRegex(self._dry_run("CI=true", "all"), r"-Werror\s")
        out = self._dry_run("WERROR=1", "all", "test-bins")
        self.assertRegex(out, r"-Werror\s")
        self.assertIn("-lcmocka", out)


if __name__ == "__main__":
    unittest.main()
