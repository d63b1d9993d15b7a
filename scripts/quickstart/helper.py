#!/usr/bin/env python3
"""Helpers for scripts/quickstart.sh (stdlib only, so nothing to install).

  helper.py serve REGISTRY          one tiny HTTP server per endpoint of the
                                    registry file, answering "<service> <version>"
  helper.py endpoints REGISTRY      "address port service version" per endpoint
  helper.py services REGISTRY       "vip port short-name hostname" per service
  helper.py free-ports N            N distinct free TCP ports on 127.0.0.1
  helper.py check-free ADDR:PORT... exits 1 naming the first address in use

The registry file is read line by line in the simple shape of
testdata/bookinfo/registry.yaml (so that PyYAML is not needed).
"""

import http.server
import re
import signal
import socket
import socketserver
import sys
import threading


def parse(path):
    """[{hostname, short, vips, ports, endpoints: [(address, version)]}]"""
    services = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.split("#", 1)[0].rstrip()
            m = re.match(r"^\s*-\s*hostname:\s*(\S+)", line)
            if m:
                host = m.group(1)
                services.append({"hostname": host, "short": host.split(".")[0],
                                 "vips": [], "ports": [], "endpoints": []})
                pending = None
                continue
            if not services:
                continue
            service = services[-1]
            m = re.match(r"^\s*addresses:\s*\[([^\]]*)\]", line)
            if m:
                service["vips"] = [a.strip() for a in m.group(1).split(",") if a.strip()]
                continue
            m = re.match(r"^\s*-\s*address:\s*([0-9.]+)", line)
            if m:
                pending = m.group(1)
            m = re.search(r"\bversion:\s*([\w.-]+)", line)
            if m and pending is not None:
                service["endpoints"].append((pending, m.group(1)))
                pending = None
                continue
            m = re.search(r"\bport:\s*(\d+)", line)
            if m and not service["endpoints"] and pending is None:
                service["ports"].append(int(m.group(1)))
    return services


def endpoints(path):
    return [(address, port, s["short"], version)
            for s in parse(path)
            for address, version in s["endpoints"]
            for port in s["ports"]]


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def handler_for(label):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: Envoy pools upstream connections

        def do_GET(self):
            body = (label + "\n").encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, fmt, *args):
            pass  # a line per request would drown the log

    return Handler


def serve(path):
    found = endpoints(path)
    if not found:
        sys.exit(f"backends: no endpoints with a version label in {path}")
    for address, port, service, version in found:
        server = Server((address, port), handler_for(f"{service} {version}"))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(f"backends: {service} {version} on {address}:{port}", flush=True)
    # The script waits for this line: every socket is bound by now.
    print("backends: ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        signal.pause()


def free_ports(n):
    # Held open together so the N ports differ; the kernel may hand one out
    # again later, but not while the caller starts its servers right away.
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))


def check_free(addresses):
    for item in addresses:
        host, port = item.rsplit(":", 1)
        s = socket.socket()
        try:
            s.bind((host, int(port)))
        except OSError as e:
            sys.exit(f"{item}: {e.strerror}")
        finally:
            s.close()


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "serve":
        serve(args[1])
    elif len(args) == 2 and args[0] == "endpoints":
        for e in endpoints(args[1]):
            print(*e)
    elif len(args) == 2 and args[0] == "services":
        for s in parse(args[1]):
            for vip in s["vips"]:
                for port in s["ports"]:
                    print(vip, port, s["short"], s["hostname"])
    elif len(args) == 2 and args[0] == "free-ports":
        free_ports(int(args[1]))
    elif len(args) >= 2 and args[0] == "check-free":
        check_free(args[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
