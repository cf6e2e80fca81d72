"""The man pages: lint-clean, and true to the code they describe.

- `mandoc -Tlint` reports nothing on deploy/man/*.[0-9].
- gcrelay.conf(5) and deploy/gcrelay.conf.example document every key the
  parser (app/app_config.c) knows and nothing else; the table the page's key
  list is generated from (deploy/config-keys.txt) is the same set, and the
  page is what the generator makes of it.  The keys the parser knows are
  read from its source: its known[] table, the members it looks up in an
  admin.keys entry, and every cfg_int/cfg_str/cfg_enum/cfg_url/config_lookup
  call.  The defaults and ranges of those calls are compared with the ones
  the page, the table and the example state.
- gcrelay(8) documents exactly the options of app/main.c and the exit
  codes the binary really returns; gcrelayctl(1) every command and option
  the built gcrelayctl's usage lists, and its environment.
"""

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("GCRELAY_BUILD", os.path.join(ROOT, "build", "dev"))
MAN = os.path.join(ROOT, "deploy", "man")
PAGES = ["gcrelay.8", "gcrelay.conf.5", "gcrelayctl.1"]
CONF_C = os.path.join(ROOT, "app", "app_config.c")
MAIN_C = os.path.join(ROOT, "app", "main.c")
EXAMPLE = os.path.join(ROOT, "deploy", "gcrelay.conf.example")
FIX = ("describe each in deploy/config-keys.txt, run python3 "
       "deploy/man/gen-conf.py, and show it in deploy/gcrelay.conf.example")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def gen_module():
    path = os.path.join(MAN, "gen-conf.py")
    spec = importlib.util.spec_from_file_location("gen_conf", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def c_int(expr):
    """A constant integer C expression (digits, * << + -), else None."""
    expr = expr.strip()
    if not re.fullmatch(r"[0-9 ()*<+-]+", expr):
        return None
    return int(eval(expr, {"__builtins__": {}}))  # digits and operators only


def c_function(src, name):
    m = re.search(r"\n%s\([^)]*\)\n\{\n(.*?)\n\}\n" % re.escape(name), src,
                  re.S)
    if not m:
        raise AssertionError("app/app_config.c: no function %s()" % name)
    return m.group(1)


class Parser:
    """What app/app_config.c knows, read from its source."""

    def __init__(self):
        src = read(CONF_C)
        m = re.search(r"static const char \*const known\[\] = \{(.*?)\};",
                      src, re.S)
        assert m, "app/app_config.c: no known[] table"
        self.known = re.findall(r'"([^"]+)"', m.group(1))
        member = c_function(src, "cfg_admin_key_one")
        self.members = ["admin.keys[].%s" % n for n in re.findall(
            r'config_setting_lookup_\w+\(k, "(\w+)"', member)]
        self.keys = set(self.known) | set(self.members)
        self.groups = {k for k in self.known
                       if any(o.startswith(k + ".") for o in self.known)}
        # path -> (kind, min, max, default); default None when not a literal
        self.reads = {}
        for m in re.finditer(r'cfg_int\(\s*c,\s*"([^"]+)",\s*([^,]+),'
                             r'\s*([^,]+),\s*([^)]+)\)', src):
            self.reads[m.group(1)] = ("int", c_int(m.group(2)),
                                      c_int(m.group(3)), c_int(m.group(4)))
        for m in re.finditer(r'(?:cfg->(\w+) =\s*)?cfg_(str|url)\('
                             r'\s*c,\s*"([^"]+)",\s*("[^"]*"|NULL)\s*\)',
                             src):
            d = None if m.group(4) == "NULL" else m.group(4)[1:-1]
            if d is None and m.group(1):  # a default put in place later
                f = re.search(r'cfg->%s = strdup\("([^"]*)"\)'
                              % m.group(1), src)
                d = f.group(1) if f else None
            self.reads[m.group(3)] = (m.group(2), None, None, d)
        # log_level: a string that log.c's names[] must hold
        names = re.search(r"\bnames\[\] = \{(.*?)\};",
                          read(os.path.join(ROOT, "app", "log.c")), re.S)
        self.reads["log_level"] = ("enum", re.findall(
            r'"(\w+)"', names.group(1)), None, self.reads["log_level"][3])
        # listen.mode: an octal string, its default set as a number
        m = re.search(r"cfg->listen_mode = (0[0-7]+);", src)
        self.reads["listen.mode"] = ("octal", None, None, m.group(1))
        for m in re.finditer(r'cfg_enum\(\s*c,\s*"([^"]+)",\s*(\w+),\s*\w+,'
                             r'\s*(\w+)\)', src):
            t = re.search(r"const char \*const %s\[\] = \{(.*?)\};"
                          % m.group(2), src, re.S)
            names = dict(re.findall(r'\[(\w+)\] = "(\w+)"', t.group(1)))
            self.reads[m.group(1)] = ("enum", list(names.values()), None,
                                      names[m.group(3)])
        self.lookups = set(re.findall(
            r'config_lookup\(&c->lc,\s*"([^"]+)"\)', src))
        m = re.search(r"default_schedule\[\] = \{([^}]*)\}", src)
        self.schedule = [int(v) for v in re.findall(r"\d+", m.group(1))]


def literal(value):
    """Whether a stated default is a libconfig literal, not words."""
    return bool(re.fullmatch(r'-?\d+|"[^"]*"|\[[\d, ]+\]', value))


def check_against_code(p, where, entries):
    """Problems of entries {key: (type, default, values)} against p.  The
    number of comparisons made is returned too, so that a test can tell
    that they were made."""
    problems, n = [], 0
    for key, (kind, lo, hi, d) in sorted(p.reads.items()):
        if key not in entries:
            continue  # reported as undocumented elsewhere
        typ, default, values = entries[key]
        n += 1
        if kind == "int":
            if d is not None and not lo <= d <= hi:
                d = None  # out of range: the code's mark for "not set"
            want = (typ == "integer", values == "%d..%d" % (lo, hi),
                    default == str(d) if d is not None
                    else not literal(default))
            said = "integer, %d..%d, default %s" % (
                lo, hi, d if d is not None else "(derived, not a literal)")
        elif kind == "enum":
            want = (typ == "enum", values == ", ".join(lo),
                    default == '"%s"' % d)
            said = 'enum, %s, default "%s"' % (", ".join(lo), d)
        elif kind == "octal":
            want = (typ == "octal string", True, default == '"%s"' % d)
            said = 'octal string, default "%s"' % d
        else:
            kinds = ("https URL",) if kind == "url" else (
                "string", "path", "enum")
            want = (typ in kinds, True,
                    default == '"%s"' % d if d is not None
                    else not literal(default))
            said = "%s, default %s" % (
                "/".join(kinds), '"%s"' % d if d is not None else
                "(none or derived, not a literal)")
        if not all(want):
            problems.append("%s: %s says %s, default %s, values %s; the "
                            "code: %s" % (key, where, typ, default, values,
                                          said))
    sched = entries.get("delivery.retry_schedule")
    if sched is not None:
        n += 1
        want = "[%s]" % ", ".join(str(v) for v in p.schedule)
        if sched[1] != want:
            problems.append("delivery.retry_schedule: %s says default %s; "
                            "the code: %s" % (where, sched[1], want))
    return problems, n


def page_settings(text):
    """{key: (type, default, values)} and the groups of gcrelay.conf.5."""
    entries, groups = {}, set()
    lines = text.split("\n")
    for i, line in enumerate(lines):
        m = re.fullmatch(r"\.Ss ([a-z_]+)", line)
        if m:
            groups.add(m.group(1))
        m = re.fullmatch(r"\.It Cm (\S+) Pq (.+)", line)
        if not m:
            continue
        default = values = "-"
        for follow in lines[i + 1:i + 3]:
            if follow == "Required.":
                default = "required"
            elif follow.startswith("Default: "):
                default = follow[len("Default: "):-1]
            elif follow.startswith("Values: "):
                values = follow[len("Values: "):-1]
        entries[m.group(1)] = (m.group(2), default, values)
    return entries, groups


def split_comment(line):
    """(code, comment) of a libconfig line; a # inside quotes is code."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i], line[i + 1:]
    return line, ""


def example_settings(text):
    """{key: (value or None when commented out, same-line comment)} of the
    example, commented-out settings included."""
    found, path, pending = {}, [], None
    for raw in text.split("\n"):
        code, comment = split_comment(raw)
        active = True
        if not code.strip() and re.match(r"\s*(\{|[a-z_]+\s*=)", comment):
            code, comment = split_comment(comment)  # a commented setting
            active = False
        code = code.strip()
        if pending is not None:  # an array spanning lines
            pending[1].append(code)
            if "]" in code:
                key, parts, act, com = pending
                found[key] = (" ".join(parts).rstrip(";") if act else None,
                              com)
                pending = None
            continue
        if not code:
            continue
        m = re.fullmatch(r"([a-z_]+)\s*=\s*([{(])", code)
        if m:
            path.append(m.group(1))
            found[".".join(path)] = (None, comment)
            continue
        if re.fullmatch(r"[})];?", code):
            path.pop()
            continue
        if code.startswith("{"):  # a group in a list: its members
            for name in re.findall(r"([a-z_]+)\s*=", code):
                found["%s[].%s" % (".".join(path), name)] = (None, comment)
            continue
        m = re.fullmatch(r"([a-z_]+)\s*=\s*(.*?);?", code)
        if not m:
            raise AssertionError("deploy/gcrelay.conf.example: cannot read "
                                 "%r" % raw)
        key = ".".join(path + [m.group(1)])
        if m.group(2).startswith("[") and "]" not in m.group(2):
            pending = (key, [m.group(2)], active, comment)
            continue
        found[key] = (m.group(2) if active else None, comment)
    return found


def difference(where, documented, known):
    out = []
    missing = sorted(known - documented)
    extra = sorted(documented - known)
    if missing:
        out.append("keys the parser knows but %s does not document: %s "
                   "(%s)" % (where, ", ".join(missing), FIX))
    if extra:
        out.append("keys %s documents but the parser does not know: %s"
                   % (where, ", ".join(extra)))
    return out


class ManTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.p = Parser()
        cls.gen = gen_module()
        cls.table = cls.gen.read_keys()

    def test_lint(self):
        """mandoc -Tlint says nothing about any page.  The pages are linted
        together from their directory, where mandoc finds the ones they
        cross-reference."""
        self.assertIsNotNone(shutil.which("mandoc"),
                             "mandoc missing: run deploy/deps.sh")
        self.assertEqual(sorted(os.path.basename(f) for f in
                                glob.glob(os.path.join(MAN, "*.[0-9]"))),
                         sorted(PAGES))
        r = subprocess.run(["mandoc", "-Tlint"] + PAGES, cwd=MAN,
                           capture_output=True, text=True)
        self.assertEqual(r.stdout + r.stderr, "")
        self.assertEqual(r.returncode, 0)
        # and the lint can fail: a page with a fault does not pass
        with tempfile.TemporaryDirectory() as d:
            bad = os.path.join(d, "bad.1")
            with open(bad, "w") as f:
                f.write(read(os.path.join(MAN, "gcrelayctl.1"))
                        .replace(".Sh NAME", ".Sh NAME\n.Bl -tag"))
            r = subprocess.run(["mandoc", "-Tlint", bad],
                               capture_output=True, text=True)
            self.assertIn("bad.1", r.stdout + r.stderr)

    def test_parser_extraction_is_plausible(self):
        """The regexes find the parser's keys, so nothing below passes for
        want of keys to check."""
        p = self.p
        self.assertGreaterEqual(len(p.known), 45, p.known)
        self.assertGreaterEqual(len(p.groups), 10, p.groups)
        self.assertEqual(len(p.members), 3, p.members)
        ints = [k for k, v in p.reads.items() if v[0] == "int"]
        self.assertGreaterEqual(len(ints), 25, ints)
        self.assertTrue(all(v[1] is not None and v[2] is not None
                            for k, v in p.reads.items() if v[0] == "int"),
                        "a range of cfg_int() that is not a constant")
        self.assertGreaterEqual(len(p.schedule), 5)
        # every setting the parser reads is one it accepts, and the other
        # way round (groups and admin.keys members read otherwise)
        read_ = set(p.reads) | p.lookups
        self.assertEqual(sorted(read_ - set(p.known)), [],
                         "app/app_config.c reads keys its known[] lacks")
        self.assertEqual(sorted(set(p.known) - read_ - p.groups), [],
                         "keys in known[] that no cfg_int/cfg_str/cfg_url/"
                         "cfg_enum/config_lookup call of app/app_config.c "
                         "reads (or that this test cannot see it read)")

    def test_table_matches_parser(self):
        table = {e.name: (e.type, e.default, e.range)
                 for e in self.table if e.kind == "key"}
        sections = {e.name for e in self.table
                    if e.kind == "section" and e.name != "-"}
        problems = difference("deploy/config-keys.txt",
                              set(table) | sections, self.p.keys)
        bad, n = check_against_code(self.p, "deploy/config-keys.txt", table)
        self.assertEqual(problems + bad, [])
        self.assertGreaterEqual(n, 35)
        # the lists' lengths: CFG_MAX_KEYS and CFG_MAX_SCHEDULE
        h = read(os.path.join(ROOT, "include", "app_config.h"))
        keys = re.search(r"#define CFG_MAX_KEYS\s+(\d+)", h).group(1)
        sched = re.search(r"#define CFG_MAX_SCHEDULE\s+(\d+)", h).group(1)
        self.assertEqual(table["webhook.secrets"][2], "1..%s entries" % keys)
        self.assertEqual(table["admin.keys"][2], "0..%s entries" % keys)
        self.assertEqual(table["delivery.retry_schedule"][2],
                         "1..%s entries, each 1..604800" % sched)

    def test_conf_page_is_generated_from_table(self):
        page = read(os.path.join(MAN, "gcrelay.conf.5"))
        self.assertEqual(self.gen.render(page, self.table), page,
                         "deploy/man/gcrelay.conf.5 is out of date: run "
                         "python3 deploy/man/gen-conf.py")

    def test_conf_page_documents_every_key(self):
        entries, groups = page_settings(
            read(os.path.join(MAN, "gcrelay.conf.5")))
        problems = difference("deploy/man/gcrelay.conf.5",
                              set(entries) | groups, self.p.keys)
        bad, n = check_against_code(self.p, "deploy/man/gcrelay.conf.5",
                                    entries)
        self.assertEqual(problems + bad, [])
        self.assertGreaterEqual(n, 35)

    def test_example_shows_every_key(self):
        found = example_settings(read(EXAMPLE))
        problems = difference("deploy/gcrelay.conf.example", set(found),
                              self.p.keys)
        table = {e.name: e for e in self.table if e.kind == "key"}
        compared = 0
        for key, (value, comment) in sorted(found.items()):
            e = table.get(key)
            if e is None:
                continue
            if value is not None and literal(e.default):
                compared += 1
                norm = re.sub(r"\s+", " ", value).replace("[ ", "[") \
                    .replace(" ]", "]")
                if norm != e.default:
                    problems.append("%s: deploy/gcrelay.conf.example sets "
                                    "%s, the default is %s"
                                    % (key, norm, e.default))
            stated = re.search(r"\b(\d+)\.\.(\d+)\b", comment)
            if stated and e.type == "integer":
                compared += 1
                if stated.group(0) != e.range:
                    problems.append("%s: deploy/gcrelay.conf.example says "
                                    "%s, the range is %s"
                                    % (key, stated.group(0), e.range))
        self.assertEqual(problems, [])
        self.assertGreaterEqual(compared, 40)

    def test_conf_page_example_is_valid(self):
        """The smallest configuration of gcrelay.conf(5)'s EXAMPLES passes
        gcrelay -t (with its key file put in a temporary directory)."""
        page = read(os.path.join(MAN, "gcrelay.conf.5"))
        ex = page[page.index(".Sh EXAMPLES"):]
        ex = ex[ex.index(".Bd -literal"):]
        conf = ex[ex.index("\n") + 1:ex.index("\n.Ed")]
        self.assertIn("secrets_key_file", conf)
        with tempfile.TemporaryDirectory() as d:
            key = os.path.join(d, "secrets.key")
            with open(key, "w") as f:
                f.write("ab" * 32 + "\n")
            os.chmod(key, 0o400)
            path = os.path.join(d, "gcrelay.conf")
            with open(path, "w") as f:
                f.write(conf.replace('"/etc/gcrelay/secrets.key"',
                                     '"%s"' % key))
            os.chmod(path, 0o600)
            r = subprocess.run([os.path.join(BUILD, "gcrelay"), "-t", "-c",
                                path], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration ok", r.stdout)

    def test_gcrelay_page_options(self):
        """gcrelay.8 documents the options of main.c's getopt() and its
        usage, and the exit codes the binary returns."""
        page = read(os.path.join(MAN, "gcrelay.8"))
        optstring = re.search(r'getopt\(argc, argv, "([^"]+)"\)',
                              read(MAIN_C)).group(1)
        opts = set(optstring.replace(":", ""))
        binary = os.path.join(BUILD, "gcrelay")
        r = subprocess.run([binary, "-?"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2, r.stderr)
        usage = r.stderr[r.stderr.index("usage:"):]
        self.assertEqual(set(re.findall(r"-(\w)\b", usage)), opts, usage)
        self.assertEqual(set(re.findall(r"^\.It Fl (\w)", page, re.M)), opts)
        codes = {2}
        r = subprocess.run([binary, "-V"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        codes.add(r.returncode)
        with tempfile.TemporaryDirectory() as d:
            conf = os.path.join(d, "bad.conf")
            with open(conf, "w") as f:
                f.write("no_such_key = 1;\n")
            os.chmod(conf, 0o600)
            r = subprocess.run([binary, "-t", "-c", conf],
                               capture_output=True, text=True)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("unknown setting 'no_such_key'", r.stderr)
        codes.add(r.returncode)
        status = page[page.index(".Sh EXIT STATUS"):page.index(".Sh EXAMPLES")]
        self.assertEqual(set(int(c) for c in
                             re.findall(r"^\.It (\d+)$", status, re.M)),
                         codes)

    def test_gcrelayctl_page_commands(self):
        """gcrelayctl.1 covers every command, option and variable of the
        built gcrelayctl's usage, and documents no command it lacks."""
        page = read(os.path.join(MAN, "gcrelayctl.1"))
        page_one = page.replace("\\\n", "")  # join continued lines
        r = subprocess.run([os.path.join(BUILD, "gcrelayctl"), "--help"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 64)
        usage = r.stderr
        self.assertTrue(usage.startswith("usage: gcrelayctl"), usage)
        commands = {}
        for line in usage.split("\n"):
            m = re.match(r"  ([a-z][a-z-]*)((?: [a-z]+)?)(.*)", line)
            if m:
                commands[m.group(1) + m.group(2)] = re.findall(
                    r"--[a-z]+", m.group(3))
        self.assertGreaterEqual(len(commands), 10, usage)
        items = {}
        for m in re.finditer(r"^\.It Cm ([a-z][a-z-]*(?: [a-z]+)?)(.*)$",
                             page_one, re.M):
            items[m.group(1)] = m.group(2)
        cmd_section = page_one[page_one.index(".Sh COMMANDS"):
                               page_one.index(".Sh CONFIGURATION FILE")]
        documented = set(re.findall(r"^\.It Cm ([a-z][a-z-]*(?: [a-z]+)?)",
                                    cmd_section, re.M))
        self.assertEqual(sorted(set(commands) - documented), [],
                         "commands of the usage missing from gcrelayctl.1")
        self.assertEqual(sorted(documented - set(commands)), [],
                         "commands in gcrelayctl.1 that the usage lacks")
        for cmd, opts in commands.items():
            for o in opts:
                self.assertIn("Fl -%s " % o[2:], items[cmd] + " ",
                              "%s: %s not on its .It line" % (cmd, o))
        first = usage.split("\n")[0]
        for o in re.findall(r"--[a-z]+", first):
            self.assertRegex(page, r"\.It Fl \w Ar \w+ , Fl -%s|\.It Fl \w , "
                             r"Fl -%s" % (o[2:], o[2:]))
            self.assertIn("Op Fl -%s" % o[2:], page)  # in the synopsis
        envs = set(re.findall(r"\b(GCRELAY\w*)\b", usage))
        self.assertGreaterEqual(len(envs), 5, usage)
        for v in envs:
            self.assertRegex(page, r"\n\.It Ev %s\n" % v)
        # the exit codes of the page are the ones ctl's source returns
        status = page[page.index(".Sh EXIT STATUS"):page.index(".Sh EXAMPLES")]
        src = read(os.path.join(ROOT, "app", "gcrelayctl.c"))
        self.assertIn("#define EXIT_USAGE 64", src)
        self.assertEqual(set(re.findall(r"^\.It (\d+)$", status, re.M)),
                         {"0", "1", "2", "3", "4", "64"})


if __name__ == "__main__":
    unittest.main()
