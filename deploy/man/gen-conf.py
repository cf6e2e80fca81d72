#!/usr/bin/env python3
"""Write the SETTINGS list of gcrelay.conf(5) from deploy/config-keys.txt.

    python3 deploy/man/gen-conf.py           rewrite deploy/man/gcrelay.conf.5
    python3 deploy/man/gen-conf.py --check   exit 1 when it is out of date

Only the lines between the BEGIN and END SETTINGS comments of the page are
generated; the rest of the page is written by hand.  tests/ship/test_man.py
imports read_keys() to check the table against the parser."""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = os.path.join(HERE, "..", "config-keys.txt")
PAGE = os.path.join(HERE, "gcrelay.conf.5")
BEGIN = ('.\\" BEGIN SETTINGS: generated from deploy/config-keys.txt by '
         'deploy/man/gen-conf.py; edit those')
END = '.\\" END SETTINGS'


class Entry:
    """A section (kind "section") or a key (kind "key") of the table."""

    def __init__(self, kind, name, line, type_=None, default=None,
                 range_=None):
        self.kind, self.name, self.line = kind, name, line
        self.type, self.default, self.range = type_, default, range_
        self.doc = []


def read_keys(path=TABLE):
    """The table's sections and keys, in order, as Entry objects."""
    entries = []
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t":
                if not entries:
                    raise ValueError("%s:%d: description before any key"
                                     % (path, n))
                entries[-1].doc.append(line.strip())
                continue
            m = re.fullmatch(r"section (\S+)", line)
            if m:
                entries.append(Entry("section", m.group(1), n))
                continue
            m = re.fullmatch(r"key (\S+) \| ([^|]+) \| ([^|]+) \| ([^|]+)",
                             line)
            if not m:
                raise ValueError("%s:%d: not 'section NAME' or 'key NAME | "
                                 "TYPE | DEFAULT | RANGE'" % (path, n))
            entries.append(Entry("key", m.group(1), n, m.group(2).strip(),
                                 m.group(3).strip(), m.group(4).strip()))
    for e in entries:
        if not e.doc:
            raise ValueError("%s:%d: %s has no description"
                             % (path, e.line, e.name))
    return entries


def text(s):
    """s as a line of roff text."""
    s = s.replace("\\", "\\e")
    return "\\&" + s if s[:1] in (".", "'") else s


def settings(entries):
    """The generated lines, BEGIN and END comments included."""
    out = [BEGIN]
    open_list = False
    for e in entries:
        if e.kind == "section":
            if open_list:
                out.append(".El")
            out.append(".Ss " + ("Top level" if e.name == "-" else e.name))
            out.extend(e.doc)
            out.append(".Bl -tag -width Ds")
            open_list = True
            continue
        out.append(".It Cm %s Pq %s" % (e.name, e.type))
        if e.default == "required":
            out.append("Required.")
        else:
            out.append(text("Default: %s." % e.default))
        if e.range != "-":
            out.append(text("Values: %s." % e.range))
        out.extend(e.doc)
    if open_list:
        out.append(".El")
    out.append(END)
    return out


def render(page_text, entries):
    """page_text with its generated region replaced."""
    lines = page_text.split("\n")
    try:
        b = lines.index(BEGIN)
        e = lines.index(END, b)
    except ValueError:
        raise ValueError("%s: no BEGIN/END SETTINGS comments" % PAGE)
    return "\n".join(lines[:b] + settings(entries) + lines[e + 1:])


def main(argv):
    with open(PAGE, encoding="utf-8") as f:
        old = f.read()
    new = render(old, read_keys())
    if "--check" in argv:
        if new != old:
            print("%s is out of date: run python3 deploy/man/gen-conf.py"
                  % PAGE, file=sys.stderr)
            return 1
        return 0
    if new != old:
        with open(PAGE, "w", encoding="utf-8") as f:
            f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
