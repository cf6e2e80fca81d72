"""A minimal FastCGI client (one request per connection), so tests can
talk to gcrelay's sockets without nginx in between.

    status, headers, body = fcgi.request(path_to_socket, "GET", "/healthz")
"""

import socket
import struct

VERSION = 1
BEGIN_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR = 1, 3, 4, 5, 6, 7
RESPONDER = 1


def _record(kind, content, req_id=1):
    return struct.pack("!BBHHBx", VERSION, kind, req_id, len(content),
                       0) + content


def _length(n):
    return bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)


def _params(params):
    out = b""
    for k, v in params.items():
        k, v = k.encode(), v.encode()
        out += _length(len(k)) + _length(len(v)) + k + v
    return out


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("FastCGI peer closed the connection")
        buf += chunk
    return buf


def _connect(addr, timeout):
    if isinstance(addr, tuple):
        return socket.create_connection(addr, timeout)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(addr)
    except OSError:
        s.close()
        raise
    return s


def request(addr, method, uri, body=b"", headers=None, timeout=10):
    """Send one request to addr (a unix socket path or a (host, port)
    tuple); returns (status, {header: value}, body bytes).  headers are
    HTTP request headers ("Content-Type", "webhook-id", ...)."""
    params = {"REQUEST_METHOD": method, "REQUEST_URI": uri,
              "SCRIPT_NAME": uri.split("?")[0],
              "QUERY_STRING": uri.partition("?")[2],
              "CONTENT_LENGTH": str(len(body)), "SERVER_PROTOCOL": "HTTP/1.1"}
    for k, v in (headers or {}).items():
        if k.lower() == "content-type":
            params["CONTENT_TYPE"] = v
        else:
            params["HTTP_" + k.upper().replace("-", "_")] = v
    msg = _record(BEGIN_REQUEST, struct.pack("!HB5x", RESPONDER, 0))
    p = _params(params)
    if p:
        msg += _record(PARAMS, p)
    msg += _record(PARAMS, b"")
    for i in range(0, len(body), 65535):
        msg += _record(STDIN, body[i:i + 65535])
    msg += _record(STDIN, b"")
    out = b""
    with _connect(addr, timeout) as s:
        s.settimeout(timeout)
        s.sendall(msg)
        while True:
            _, kind, _, clen, plen = struct.unpack("!BBHHBx",
                                                   _recv_exact(s, 8))
            content = _recv_exact(s, clen + plen)[:clen]
            if kind == STDOUT:
                out += content
            elif kind == END_REQUEST:
                break
    head, _, rest = out.partition(b"\r\n\r\n")
    hdrs = {}
    for line in head.decode().split("\r\n"):
        k, _, v = line.partition(":")
        hdrs[k.strip()] = v.strip()
    status = int(hdrs.get("Status", "200").split()[0])
    return status, hdrs, rest
