"""Shared machinery for gcrelay's upstream simulators (standard library only).

A simulator is a `Sim` subclass (the domain: state, endpoints, its own fault
kinds) served by `SimHTTPServer`, an HTTP/1.1 keep-alive server wrapped in TLS.
This module provides, for every simulator:

- the server: TLS, keep-alive, accepted-connection counting and numbering;
- recording: every non-control request, with the status the sim answered;
- the fault engine: a queue of faults matched by method and path prefix;
- the control API under /_sim/ (JSON in and out, no auth);
- lifetime: exit on stdin EOF (parent died) or after --max-seconds.

Threading: the server runs one thread per connection.  Everything mutable
(state, records, faults, counters, config) lives behind the sim's single
`lock`; sleeps (delay faults) always happen outside it.
"""

import argparse
import copy
import http.server
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
import urllib.parse

GENERIC_FAULT_KINDS = (
    "status",               # answer status/body/headers, request not applied
    "delay",                # sleep ms, then handle normally
    "drop",                 # close the connection, request not applied
    "drop_after_apply",     # apply, then close without replying
    "delay_after_apply",    # apply, sleep ms, then reply
    "status_after_apply",   # apply, then answer status/body/headers
)
STATUS_KINDS = ("status", "status_after_apply")
DELAY_KINDS = ("delay", "delay_after_apply")

# Hard cap on a request body the server will read at all.  Endpoint limits
# (1 MB trigger payload, 8 MB contact batch) are enforced by the sims below it.
MAX_BODY_BYTES = 16 * 1024 * 1024


def deep_merge(dst, src):
    """Merge dict `src` into dict `dst` in place and return `dst`.

    Dicts merge recursively; every other value (lists included) replaces.
    A None value is stored as None: sims read None as "absent" where that
    makes sense (e.g. an account set to null is removed).
    """
    for key, val in src.items():
        if isinstance(val, dict) and isinstance(dst.get(key), dict):
            deep_merge(dst[key], val)
        else:
            dst[key] = copy.deepcopy(val)
    return dst


def json_bytes(obj):
    """Compact JSON encoding used for every reply."""
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def iso_now(ts=None):
    """UTC ISO 8601 timestamp with milliseconds and a Z suffix."""
    if ts is None:
        ts = time.time()
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
            + ".%03dZ" % int((ts % 1) * 1000))


class Reply:
    """An HTTP reply: status, body (dict/list -> JSON, str/bytes -> raw)
    and a list of (name, value) headers whose case is sent as given."""

    def __init__(self, status, body=None, headers=None):
        self.status = int(status)
        self.body = body
        self.headers = list(headers or [])

    def header(self, name, value):
        self.headers.append((name, str(value)))
        return self

    def encode(self):
        """Return (body bytes, default content type)."""
        if self.body is None:
            return b"", None
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode("utf-8"), "text/plain; charset=utf-8"
        return json_bytes(self.body), "application/json"


class Request:
    """One parsed API request, as handed to `Sim.handle`.

    `record` is the live dict in the request log: a sim may add keys to it
    (e.g. the account it authenticated) while holding the lock.
    """

    def __init__(self, method, target, headers, raw, conn):
        split = urllib.parse.urlsplit(target)
        self.method = method
        self.target = target
        self.path = split.path
        self.query_string = split.query
        # Single-valued view of the query: the last value wins.
        self.query = dict(urllib.parse.parse_qsl(split.query,
                                                 keep_blank_values=True))
        self.headers = headers          # lower-cased names
        self.raw = raw
        self.text = raw.decode("utf-8", errors="replace")
        self.json = None
        self.json_ok = False
        if raw.strip():
            try:
                self.json = json.loads(self.text)
                self.json_ok = True
            except ValueError:
                pass
        self.conn = conn
        self.record = None

    def content_type(self):
        """The media type of the body, lower-cased, without parameters."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


class ControlError(Exception):
    """A bad control-API call: answered 400 with the message."""


class Sim:
    """Base class of a simulator.  Subclasses set `kind`, `FAULT_KINDS`
    and `DEFAULT_CONFIG`, and implement the hooks marked below.  Every hook
    is called with `self.lock` held."""

    kind = "base"
    FAULT_KINDS = ()            # sim-specific fault kinds
    DEFAULT_CONFIG = {}
    COUNTERS = ()               # sim-specific counters, zeroed on reset

    def __init__(self, overrides=None):
        self.lock = threading.RLock()
        self.startup_config = deep_merge(copy.deepcopy(self.DEFAULT_CONFIG),
                                         overrides or {})
        self.config = copy.deepcopy(self.startup_config)
        self.records = []
        self.faults = []
        self.fault_seq = 0
        self.req_seq = 0
        # Connection serials never restart (a connection opened before a
        # reset keeps its number); `counted_conns` holds the serials that
        # carried an API request since the last reset.
        self.conn_serial = 0
        self.counted_conns = set()
        self.counters = {}
        with self.lock:
            self._zero_counters()
            self.reset_state()

    # ---- hooks for subclasses -------------------------------------------

    def reset_state(self):
        """Rebuild the domain state from self.config."""
        raise NotImplementedError

    def config_changed(self):
        """Called after /_sim/config merged a patch into self.config."""

    def handle(self, req, fault):
        """Answer an API request; `fault` is a matched sim-specific fault
        or None.  Returns a Reply."""
        raise NotImplementedError

    def state(self):
        """The domain state for GET /_sim/state."""
        return {}

    def fault_applies(self, fault, req):
        """Whether a sim-specific fault may be consumed by this request."""
        return True

    def check_fault(self, fault):
        """Validate a sim-specific fault spec; raise ControlError."""

    def check_fault_filter(self, fault):
        """Validate the sim's own match parameters of any fault kind (e.g.
        Emarsys "min_batch", "key_values"); raise ControlError."""

    def fault_filter(self, fault, req):
        """Whether a fault of any kind matches this request beyond method
        and path (the sim's own match parameters)."""
        return True

    def default_fault_body(self, status):
        return {"error": "simulated fault", "status": status}

    def hold_key(self, req):
        """The rate-limited account a request belongs to (Emarsys: the
        client id of its bearer token; Yotpo: its GUID), or None.  Used to
        flag calls made before an announced 429 reset."""
        return None

    def hold_until(self, reply):
        """For a 429 reply: the unix time its headers say to wait until,
        or None."""
        return None

    # ---- records and counters --------------------------------------------

    def _zero_counters(self):
        self.counters = {"connections": 0, "connections_accepted": 0,
                         "requests": 0, "tls_errors": 0,
                         "internal_errors": 0, "faults_applied": 0,
                         "calls_before_reset": 0}
        # account -> unix time of the latest 429 reset announced to it.
        self.holds = {}
        for name in self.COUNTERS:
            self.counters[name] = 0
        self.counted_conns = set()

    def count(self, name, n=1):
        self.counters[name] = self.counters.get(name, 0) + n

    def stats(self):
        return dict(self.counters)

    def record_request(self, req):
        """Append `req` to the request log and count it (lock held)."""
        self.req_seq += 1
        self.count("requests")
        if req.conn not in self.counted_conns:
            self.counted_conns.add(req.conn)
            self.count("connections")
        req.record = {
            "seq": self.req_seq,
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "query_string": req.query_string,
            "headers": req.headers,
            "body": req.text,
            "json": req.json,
            "connection": req.conn,
            "mono": time.monotonic(),
            "time": time.time(),
            "status": None,             # set just before the reply is sent
            "outcome": "pending",       # pending | replied | dropped | error
            "fault": None,
            "applied": False,           # whether the sim's handler ran
            "done_mono": None,          # when the reply went (or the drop)
        }
        # A call to an account that was answered 429 with a reset still
        # in the future: the client did not wait for the reset.
        key = self.hold_key(req)
        req.record["hold_key"] = key
        until = self.holds.get(key) if key is not None else None
        now = req.record["time"]
        early = until is not None and now < until
        req.record["before_reset"] = early
        req.record["early_ms"] = round((until - now) * 1000) if early else 0
        if early:
            self.count("calls_before_reset")
        self.records.append(req.record)
        return req.record

    # ---- faults -----------------------------------------------------------

    def add_fault(self, spec):
        """Validate and queue a fault spec (lock held).  Returns it."""
        if not isinstance(spec, dict):
            raise ControlError("fault must be a JSON object")
        fault = copy.deepcopy(spec)
        kind = fault.get("kind")
        if kind not in GENERIC_FAULT_KINDS + tuple(self.FAULT_KINDS):
            raise ControlError("unknown fault kind %r; known: %s" % (
                kind, ", ".join(GENERIC_FAULT_KINDS + tuple(self.FAULT_KINDS))))
        count = fault.setdefault("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) \
                or (count < 1 and count != -1):
            raise ControlError("count must be a positive integer or -1")
        if fault.get("method") is not None:
            fault["method"] = str(fault["method"]).upper()
        if not isinstance(fault.get("path_prefix") or "", str):
            raise ControlError("path_prefix must be a string")
        if kind in STATUS_KINDS:
            status = fault.get("status")
            if not isinstance(status, int) or not 100 <= status <= 599:
                raise ControlError("%s needs an integer status" % kind)
            if not isinstance(fault.get("headers") or {}, dict):
                raise ControlError("headers must be an object")
        if kind in DELAY_KINDS:
            ms = fault.get("ms")
            if not isinstance(ms, (int, float)) or ms < 0:
                raise ControlError("%s needs ms >= 0" % kind)
        if kind in self.FAULT_KINDS:
            self.check_fault(fault)
        self.check_fault_filter(fault)
        self.fault_seq += 1
        fault["id"] = self.fault_seq
        fault["hits"] = 0
        self.faults.append(fault)
        return fault

    def match_fault(self, req):
        """Consume and return the first queued fault matching `req`, or None."""
        for fault in self.faults:
            if fault.get("method") and fault["method"] != req.method:
                continue
            if not req.path.startswith(fault.get("path_prefix") or ""):
                continue
            if fault["kind"] in self.FAULT_KINDS \
                    and not self.fault_applies(fault, req):
                continue
            if not self.fault_filter(fault, req):
                continue
            fault["hits"] += 1
            if fault["count"] > 0:
                fault["count"] -= 1
                if fault["count"] == 0:
                    self.faults.remove(fault)
            self.count("faults_applied")
            return copy.deepcopy(fault)
        return None

    def fault_reply(self, fault):
        """The reply of a status / status_after_apply fault: exactly the
        fault's status, body and headers (no automatic rate-limit headers)."""
        body = fault.get("body")
        if "body" not in fault:
            body = self.default_fault_body(fault["status"])
        return Reply(fault["status"], body,
                     list((fault.get("headers") or {}).items()))

    # ---- control operations (lock held) ---------------------------------

    def reset(self, keep_config=False):
        """Clear records, faults and counters; rebuild the state from the
        startup config (or from the current one with keep_config)."""
        if not keep_config:
            self.config = copy.deepcopy(self.startup_config)
        self.records = []
        self.faults = []
        self._zero_counters()
        self.reset_state()

    def merge_config(self, patch):
        if not isinstance(patch, dict):
            raise ControlError("config must be a JSON object")
        deep_merge(self.config, patch)
        self.config_changed()
        return self.config


class SimHTTPServer(http.server.ThreadingHTTPServer):
    """Threaded HTTP/1.1 server on 127.0.0.1 that numbers each accepted
    connection and wraps it in TLS (handshake done in the handler thread so
    a silent client cannot stall the accept loop)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, sim, port, ssl_ctx=None, verbose=False):
        self.sim = sim
        self.ssl_ctx = ssl_ctx
        self.verbose = verbose
        super().__init__(("127.0.0.1", port), SimHandler)

    def get_request(self):
        sock, addr = self.socket.accept()
        # Replies are single writes, but keep small writes from waiting on
        # the client's delayed ACK anyway.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.sim.lock:
            self.sim.conn_serial += 1
            serial = self.sim.conn_serial
            self.sim.count("connections_accepted")
        if self.ssl_ctx is not None:
            sock = self.ssl_ctx.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False)
        # The third element carries the connection number to the handler.
        return sock, (addr[0], addr[1], serial)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError,
                            socket.timeout)):
            return          # the client went away: not a sim bug
        with self.sim.lock:
            self.sim.count("internal_errors")
        sys.stderr.write("%s sim: error on connection %s\n%s" % (
            self.sim.kind, client_address, traceback.format_exc()))


class BodyError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class SimHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive unless the client says close
    server_version = "gcrelay-sim/1"
    sys_version = ""
    timeout = 120                   # idle keep-alive connections end here

    def version_string(self):
        return self.server_version

    # ---- connection level -------------------------------------------------

    def handle(self):
        if isinstance(self.request, ssl.SSLSocket):
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError):
                # Typically a client that rejected our certificate.
                with self.server.sim.lock:
                    self.server.sim.count("tls_errors")
                self.close_connection = True
                return
        super().handle()

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s sim: conn %s: %s\n" % (
                self.server.sim.kind, self.client_address[2], fmt % args))

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    # ---- request level ----------------------------------------------------

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise BodyError(400, "bad Content-Length")
        if n < 0:
            raise BodyError(400, "bad Content-Length")
        if n > MAX_BODY_BYTES:
            raise BodyError(413, "body too large for the simulator")
        data = self.rfile.read(n)
        if len(data) != n:
            raise ConnectionError("client closed mid-body")
        return data

    def _read_chunked(self):
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise ConnectionError("client closed mid-body")
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise BodyError(400, "bad chunk size")
            if size == 0:
                # Skip trailers up to the blank line.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                raise BodyError(413, "body too large for the simulator")
            parts.append(self.rfile.read(size))
            self.rfile.readline(16)         # the CRLF after the chunk

    def _lower_headers(self):
        out = {}
        for name, value in self.headers.items():
            name = name.lower()
            out[name] = value if name not in out else out[name] + ", " + value
        return out

    def _dispatch(self):
        try:
            raw = self._read_body()
        except BodyError as exc:
            # The unread body makes the connection unusable: close it.
            self.close_connection = True
            self._write(Reply(exc.status, {"error": str(exc)}))
            return
        path = urllib.parse.urlsplit(self.path).path
        if path == "/_sim" or path.startswith("/_sim/"):
            self._control(path, raw)
            return
        req = Request(self.command, self.path, self._lower_headers(), raw,
                      self.client_address[2])
        try:
            self._serve(req)
        except (ConnectionError, ssl.SSLError, TimeoutError, socket.timeout):
            self.close_connection = True
        except Exception:
            # A simulator bug: answer 500 (tests assert internal_errors == 0).
            sim = self.server.sim
            text = traceback.format_exc()
            sys.stderr.write("%s sim: internal error\n%s" % (sim.kind, text))
            with sim.lock:
                sim.count("internal_errors")
                if req.record is not None:
                    req.record.update(status=500, outcome="error")
            self.close_connection = True
            self._write(Reply(500, {"sim_internal_error": text}))

    def _serve(self, req):
        """Run one API request through the fault engine and the sim."""
        sim = self.server.sim
        with sim.lock:
            sim.record_request(req)
            fault = sim.match_fault(req)
            req.record["fault"] = fault["kind"] if fault else None
        kind = fault["kind"] if fault else None

        if kind == "status":
            self._send(req, sim.fault_reply(fault))
            return
        if kind == "drop":
            self._drop(req, fault)
            return
        if kind == "delay":
            time.sleep(fault["ms"] / 1000.0)

        with sim.lock:
            reply = sim.handle(req, fault if kind in sim.FAULT_KINDS else None)
            req.record["applied"] = True

        if kind == "drop_after_apply":
            self._drop(req, fault)
            return
        if kind == "delay_after_apply":
            time.sleep(fault["ms"] / 1000.0)
        elif kind == "status_after_apply":
            reply = sim.fault_reply(fault)
        self._send(req, reply)

    def _drop(self, req, fault):
        """Close the connection without a byte of reply.  With "rst": true
        the close is an RST (SO_LINGER 0) instead of a FIN."""
        with self.server.sim.lock:
            req.record["outcome"] = "dropped"
            req.record["done_mono"] = time.monotonic()
        self.close_connection = True
        sock = self.request
        try:
            if fault.get("rst"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                struct.pack("ii", 1, 0))
                # The fd really closes (RST) once the handler drops its
                # file objects; no TLS close_notify is sent.
                sock.close()
            else:
                # SSLSocket.shutdown drops the TLS layer without close_notify.
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, req, reply):
        sim = self.server.sim
        with sim.lock:
            if req.record is not None:
                req.record["status"] = reply.status
                req.record["outcome"] = "replied"
                req.record["done_mono"] = time.monotonic()
                key = req.record.get("hold_key")
                if reply.status == 429 and key is not None:
                    until = sim.hold_until(reply)
                    if until is not None:
                        req.record["reset_at"] = until
                        sim.holds[key] = max(sim.holds.get(key, 0), until)
        self._write(reply)

    def _write(self, reply):
        body, ctype = reply.encode()
        self.send_response(reply.status)
        names = set()
        for name, value in reply.headers:
            if name.lower() == "content-length":
                continue            # always computed below
            names.add(name.lower())
            self.send_header(name, value)   # "Connection: close" is honoured
        if ctype and "content-type" not in names:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection and "connection" not in names:
            self.send_header("Connection", "close")
        # Headers and body in one write (end_headers() would flush the
        # headers alone and leave the body to a second, Nagle-delayed write).
        self._headers_buffer.append(b"\r\n" + body)
        self.flush_headers()

    # ---- control API ------------------------------------------------------

    def _control(self, path, raw):
        sim = self.server.sim
        route = path[len("/_sim/"):].strip("/") if path != "/_sim" else ""
        query = dict(urllib.parse.parse_qsl(
            urllib.parse.urlsplit(self.path).query))
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            self._write(Reply(400, {"error": "control body is not JSON"}))
            return
        method = self.command
        try:
            with sim.lock:
                reply = self._control_locked(sim, method, route, query, body)
                # Encode under the lock: records may be mutated concurrently.
                reply = Reply(reply.status, json_bytes(reply.body),
                              [("Content-Type", "application/json")])
        except ControlError as exc:
            reply = Reply(400, {"error": str(exc)})
        except Exception:
            text = traceback.format_exc()
            sys.stderr.write("%s sim: control error\n%s" % (sim.kind, text))
            reply = Reply(500, {"sim_internal_error": text})
        self._write(reply)

    def _control_locked(self, sim, method, route, query, body):
        if route == "health" and method == "GET":
            return Reply(200, {"ok": True, "kind": sim.kind,
                               "pid": os.getpid()})
        if route == "requests" and method == "GET":
            prefix = query.get("path_prefix", "")
            want = query.get("method", "").upper()
            out = [r for r in sim.records if r["path"].startswith(prefix)
                   and (not want or r["method"] == want)]
            return Reply(200, out)
        if route == "requests" and method == "DELETE":
            sim.records = []
            return Reply(200, {"ok": True})
        if route == "reset" and method == "POST":
            sim.reset(keep_config=bool(body.get("keep_config")))
            return Reply(200, {"ok": True})
        if route == "config" and method == "GET":
            return Reply(200, sim.config)
        if route == "config" and method == "POST":
            return Reply(200, sim.merge_config(body))
        if route == "fault" and method == "POST":
            specs = body if isinstance(body, list) else [body]
            added = [sim.add_fault(s) for s in specs]
            return Reply(200, {"ok": True, "added": added,
                               "faults": sim.faults})
        if route == "fault" and method == "GET":
            return Reply(200, sim.faults)
        if route == "fault" and method == "DELETE":
            sim.faults = []
            return Reply(200, {"ok": True})
        if route == "state" and method == "GET":
            return Reply(200, sim.state())
        if route == "stats" and method == "GET":
            return Reply(200, sim.stats())
        return Reply(404, {"error": "unknown control route %s %s"
                           % (method, route)})


# ---- process entry point ---------------------------------------------------

def _watch_stdin():
    """Exit as soon as stdin reaches EOF: the parent test closed the pipe
    or died.  os._exit skips cleanup on purpose: nothing to flush."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    os._exit(0)


def _write_portfile(path, port):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)           # atomic: readers never see a partial file


def main(sim_class, argv=None):
    """Parse the common CLI, build `sim_class`, serve until stdin EOF or
    --max-seconds."""
    ap = argparse.ArgumentParser(
        description="%s simulator for gcrelay tests" % sim_class.kind)
    ap.add_argument("--port", type=int, default=0,
                    help="TCP port on 127.0.0.1 (0 = pick a free one)")
    ap.add_argument("--cert", help="server certificate (PEM)")
    ap.add_argument("--key", help="server private key (PEM)")
    ap.add_argument("--plain", action="store_true",
                    help="serve plain HTTP instead of HTTPS")
    ap.add_argument("--portfile",
                    help="write the bound port here (atomically) once listening")
    ap.add_argument("--max-seconds", type=float, default=1800,
                    help="exit after this many seconds (default 1800)")
    ap.add_argument("--config", help="JSON file merged into the default config")
    ap.add_argument("--config-json",
                    help="JSON object merged into the config (after --config)")
    ap.add_argument("--no-stdin-watch", action="store_true",
                    help="do not exit on stdin EOF (for manual runs)")
    ap.add_argument("--verbose", action="store_true",
                    help="log each request line to stderr")
    args = ap.parse_args(argv)

    overrides = {}
    try:
        if args.config:
            with open(args.config) as f:
                deep_merge(overrides, json.load(f))
        if args.config_json:
            deep_merge(overrides, json.loads(args.config_json))
    except (OSError, ValueError) as exc:
        ap.error("bad config: %s" % exc)

    ctx = None
    if not args.plain:
        if not (args.cert and args.key):
            ap.error("--cert and --key are required unless --plain")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2   # as the real APIs
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols(["http/1.1"])            # never h2

    server = SimHTTPServer(sim_class(overrides), args.port, ctx, args.verbose)
    port = server.server_address[1]

    if not args.no_stdin_watch:
        threading.Thread(target=_watch_stdin, daemon=True).start()
    timer = threading.Timer(args.max_seconds, os._exit, args=(0,))
    timer.daemon = True
    timer.start()

    if args.portfile:
        _write_portfile(args.portfile, port)
    sys.stdout.write("listening on 127.0.0.1:%d\n" % port)
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0
