#!/usr/bin/env python3
"""A Bookinfo-like sample app for the compose stack: one program, four roles.

productpage calls details and reviews; reviews v2 and v3 call ratings; every
answer is JSON naming the service and version that produced it, so a test can
tell which reviews version served a request. Trace headers (B3, W3C, Envoy's
x-request-id) and `end-user` are copied from each request onto the calls it
makes, which is what lets Envoy's spans join into one trace and header-based
routing rules see the user. A failed downstream call fails the request (502):
the stack's tests count failures end to end.

Consul registration is the app's own job, as it was with Istio 1.1 on Consul,
but only once the Envoy sidecar in its network namespace reports ready: until
then no other proxy learns this instance, so no request can reach it early.
The registration is checked every few seconds and made again if Consul lost
it; the instance deregisters on SIGTERM.
"""

import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVICE = os.environ.get("SERVICE", "productpage")
VERSION = os.environ.get("VERSION", "v1")
PORT = int(os.environ.get("PORT", "9080"))
CONSUL = os.environ.get("CONSUL_HTTP_ADDR", "http://consul:8500").rstrip("/")
SIDECAR_READY = os.environ.get("SIDECAR_READY_URL", "http://127.0.0.1:15021/healthz/ready")
CALL_TIMEOUT = float(os.environ.get("CALL_TIMEOUT_SECONDS", "5"))
REGISTER = os.environ.get("REGISTER", "1") == "1"

# Set once Consul holds this instance: /health answers 503 until then, so a
# healthy app is one the mesh can route to.
REGISTERED = threading.Event()

PROPAGATED = (
    "x-request-id", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
    "x-b3-sampled", "x-b3-flags", "b3", "x-ot-span-context",
    "traceparent", "tracestate", "end-user",
)
# Stars each reviews version asks ratings for (v1 shows none).
CALLS_RATINGS = {"v2": "black", "v3": "red"}

# Plain HTTP/1.1 straight to the named service: the sidecar intercepts the
# connection and routes it; a proxy from the environment must not.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(message):
    print(f"{SERVICE}-{VERSION}: {message}", file=sys.stderr, flush=True)


class DownstreamError(Exception):
    pass


def call(host, path, incoming):
    headers = {name: incoming[name] for name in PROPAGATED if incoming.get(name)}
    request = urllib.request.Request(f"http://{host}:{PORT}{path}", headers=headers)
    try:
        with OPENER.open(request, timeout=CALL_TIMEOUT) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise DownstreamError(f"{host}{path}: {error}") from error


def answer(path, headers):
    """(status, body) for a request; raises DownstreamError."""
    me = {"service": SERVICE, "version": VERSION, "instance": socket.gethostname()}
    if path == "/health":
        if REGISTER and not REGISTERED.is_set():
            return 503, {"status": "waiting for the sidecar and the Consul registration"}
        return 200, {"status": "ok"}
    if SERVICE == "productpage":
        if path == "/productpage" or path.startswith("/api/v1/products"):
            me["details"] = call("details", "/details/0", headers)
            me["reviews"] = call("reviews", "/reviews/0", headers)
            me["user"] = headers.get("end-user") or None
            return 200, me
        if path.startswith("/static") or path in ("/login", "/logout"):
            return 200, me
    elif SERVICE == "details" and path.startswith("/details/"):
        me.update(author="William Shakespeare", year=1595, pages=200)
        return 200, me
    elif SERVICE == "reviews" and path.startswith("/reviews/"):
        color = CALLS_RATINGS.get(VERSION)
        if color:
            me["ratings"] = call("ratings", "/ratings/0", headers)
            me["color"] = color
        return 200, me
    elif SERVICE == "ratings" and path.startswith("/ratings/"):
        me["stars"] = {"Reviewer1": 5, "Reviewer2": 4}
        return 200, me
    return 404, {"error": f"{SERVICE} has no {path}"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        incoming = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, body = answer(self.path.split("?", 1)[0], incoming)
        except DownstreamError as error:
            log(f"downstream call failed: {error}")
            status, body = 502, {"service": SERVICE, "version": VERSION, "error": str(error)}
        data = json.dumps(body, indent=1).encode() + b"\n"
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass  # one line per request would drown the compose logs


# --- Consul registration -------------------------------------------------------

def own_ip():
    # The address other containers reach this one at: the source address of
    # a route to the Consul agent (no packet is sent for a UDP connect).
    host = CONSUL.split("://", 1)[-1].split(":", 1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 8500))
        return probe.getsockname()[0]


def consul(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{CONSUL}{path}", data=data, method=method)
    with OPENER.open(request, timeout=5) as response:
        return response.status


def sidecar_ready():
    try:
        with OPENER.open(SIDECAR_READY, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def registration(ip):
    return {
        "ID": f"{SERVICE}-{VERSION}-{socket.gethostname()}",
        "Name": SERVICE,
        "Address": ip,
        "Port": PORT,
        # Istio's Consul convention: `key|value` tags become labels.
        "Tags": [f"version|{VERSION}"],
        "Meta": {"protocol": "http", "version": VERSION},
    }


def keep_registered(stop):
    waited = time.monotonic()
    while not sidecar_ready():
        if stop.wait(0.5):
            return
    log(f"sidecar ready after {time.monotonic() - waited:.1f} s")
    service = None
    while not stop.is_set():
        try:
            if service is None:
                service = registration(own_ip())
            try:
                consul("GET", f"/v1/agent/service/{service['ID']}")
            except urllib.error.HTTPError as missing:
                if missing.code != 404:
                    raise
                consul("PUT", "/v1/agent/service/register", service)
                log(f"registered {service['ID']} at {service['Address']}:{PORT} in Consul")
            REGISTERED.set()
        except (urllib.error.URLError, OSError) as error:
            log(f"Consul unreachable ({error}); will retry")
        stop.wait(3)
    if service is not None:
        try:
            consul("PUT", f"/v1/agent/service/deregister/{service['ID']}")
            log(f"deregistered {service['ID']}")
        except (urllib.error.URLError, OSError) as error:
            log(f"could not deregister: {error}")


def main():
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    stop = threading.Event()
    registrar = threading.Thread(target=keep_registered, args=(stop,), daemon=True)

    def shut_down(signum, frame):
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    if REGISTER:
        registrar.start()
    log(f"serving on :{PORT}")
    server.serve_forever()
    if registrar.is_alive():
        registrar.join(timeout=5)


if __name__ == "__main__":
    main()
