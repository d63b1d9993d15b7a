#!/usr/bin/env python3
"""End-to-end test of the docker-compose stack, with real containers.

Builds the images, brings Bookinfo on Consul up with Pilotfish, and checks
through the ingress gateway which reviews version answered:

  1. without routing rules (every version serves), each app's DNS lookups
     answered by its sidecar (DNS proxying, on by default here),
  2. under Istio's virtual-service-all-v1, virtual-service-reviews-test-v2
     and virtual-service-reviews-50-v3, applied unchanged with kubectl to the
     stack's API server,
  3. the same again with Pilotfish reading the rules from a mounted
     directory instead of the API server,
  4. Pilotfish restarted under traffic: no request fails,
  5. Consul stopped for 30 s under traffic: no request fails, and an
     instance registered after it is back is routed to,
  6. one request's trace in Jaeger spans gateway, productpage, reviews and
     ratings, and the gateway's access log (on its container output) shows
     requests,
  7. `down` leaves no containers, networks or volumes, and the host's
     iptables rules are what they were.

Each phase prints its duration. Run as root (the private dockerd); skipped
with a printed reason only when this machine cannot run dockerd.

Environment: PILOTFISH_COMPOSE_KEEP=1 leaves the stack up on failure;
PILOTFISH_ISTIO_SAMPLES is the directory of Istio's Bookinfo networking
samples (default: ../shared/istio-samples/bookinfo-networking beside the
repository).
"""

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SAMPLES = os.environ.get(
    "PILOTFISH_ISTIO_SAMPLES",
    os.path.join(os.path.dirname(REPO), "shared", "istio-samples", "bookinfo-networking"),
)
CACHE = os.environ.get("PILOTFISH_COMPOSE_CACHE", "/var/cache/pilotfish-compose")
PROJECT = "pilotfish-compose-test"


_TAKEN_PORTS = set()


def free_port():
    """A free loopback port below the ephemeral range (32768 and up), so
    that no outgoing connection of a concurrent test can be holding it when
    Docker publishes on it; never one this run already took."""
    import random
    import socket
    for _ in range(200):
        port = random.randrange(20000, 32000)
        if port in _TAKEN_PORTS:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            _TAKEN_PORTS.add(port)
            return port
    raise RuntimeError("no free port in 20000-32000")


GATEWAY_PORT = free_port()
JAEGER_PORT = free_port()
CONSUL_PORT = free_port()
GATEWAY = f"http://127.0.0.1:{GATEWAY_PORT}"
# How long a routing change may take to show at the gateway (it is
# milliseconds in practice; the bound only ends a broken run).
PROPAGATION_TIMEOUT = 60
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(message):
    print(f"compose-test: {message}", flush=True)


class Failure(Exception):
    pass


class Fatal(Failure):
    """A failure no amount of waiting mends (a container exited)."""


def check(condition, message):
    if not condition:
        raise Failure(message)


# --- processes ---------------------------------------------------------------

def docker_env(extra=None):
    env = dict(os.environ)
    env.update(
        DOCKER_HOST=f"unix://{CACHE}/dockerd/docker.sock",
        DOCKER_BUILDKIT="0",
        COMPOSE_PROJECT_NAME=PROJECT,
        PILOTFISH_GATEWAY_PORT=str(GATEWAY_PORT),
        PILOTFISH_JAEGER_PORT=str(JAEGER_PORT),
        PILOTFISH_CONSUL_PORT=str(CONSUL_PORT),
    )
    env.update(extra or {})
    return env


def run(args, env=None, input=None, check_status=True):
    result = subprocess.run(args, env=env or docker_env(), input=input, text=True,
                            capture_output=True)
    if check_status and result.returncode != 0:
        raise Failure(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def docker_binary():
    # The client packaged with the daemon (docker.io) speaks its API.
    return "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"


def compose_command():
    """compose v2 (`docker compose`) where present, else docker-compose 1.29."""
    if run([docker_binary(), "compose", "version"], check_status=False).returncode == 0:
        return [docker_binary(), "compose"]
    return ["docker-compose"]


COMPOSE_FILE = os.path.join(HERE, "docker-compose.yml")


def compose(*args, env=None, input=None):
    return run(compose_command() + ["-f", COMPOSE_FILE] + list(args), env=env, input=input)


def kubectl(*args, input=None):
    """kubectl in the API server's container (its KUBECONFIG is the admin's)."""
    return compose("exec", "-T", "kube-apiserver", "kubectl", *args, input=input)


def kubectl_apply(path):
    with open(path) as f:
        kubectl("apply", "-f", "-", input=f.read())


def wait_until(what, timeout, probe, interval=0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except Fatal:
            raise
        except (Failure, OSError, ValueError, urllib.error.URLError) as error:
            last = error
        time.sleep(interval)
    raise Failure(f"timed out after {timeout} s waiting for {what}" + (f" (last: {last})" if last else ""))


def container_states():
    """{compose service: `docker ps` status} of this project's containers."""
    out = run([docker_binary(), "ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}",
               "--format", '{{.Label "com.docker.compose.service"}}\t{{.Status}}']).stdout
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def wait_healthy(services, timeout=180):
    pending = list(services)

    def probe():
        states = container_states()
        pending[:] = [s for s in pending if "(healthy)" not in states.get(s, "")]
        exited = [s for s in pending if states.get(s, "").startswith("Exited")]
        if exited:
            logs = compose("logs", "--no-color", "--tail", "20", *exited).stdout
            raise Fatal(f"exited instead of becoming healthy: {', '.join(exited)}\n{logs}")
        return not pending

    try:
        wait_until(f"healthy: {', '.join(services)}", timeout, probe, interval=1)
    except Fatal:
        raise
    except Failure as error:
        raise Failure(f"{error}; still not healthy: {', '.join(pending)}") from error


# --- traffic -----------------------------------------------------------------

def product_page(headers=None, timeout=10):
    """(status, JSON body or None) of GET /productpage through the gateway."""
    request = urllib.request.Request(f"{GATEWAY}/productpage", headers=headers or {})
    try:
        with OPENER.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def reviews_versions(count, headers=None):
    """Counter of reviews versions over `count` requests; any failure fails."""
    seen = collections.Counter()
    for _ in range(count):
        status, body = product_page(headers)
        check(status == 200, f"GET /productpage answered {status}")
        seen[body["reviews"]["version"]] += 1
    return seen


def wait_for_routing(what, accept, headers=None, streak=20):
    """Until `streak` consecutive answers' reviews versions satisfy `accept`."""
    run_of = [0]

    def probe():
        status, body = product_page(headers)
        ok = status == 200 and accept(body["reviews"]["version"])
        run_of[0] = run_of[0] + 1 if ok else 0
        return run_of[0] >= streak

    wait_until(what, PROPAGATION_TIMEOUT, probe, interval=0.05)


class Load:
    """Requests back to back through the gateway in a thread; counts failures."""

    def __init__(self):
        self.stop = threading.Event()
        self.ok = 0
        self.failed = []
        self.details = collections.Counter()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop.is_set():
            status, body = product_page(timeout=10)
            if status == 200:
                self.ok += 1
                self.details[body["details"]["version"]] += 1
            else:
                self.failed.append((time.strftime("%H:%M:%S"), status))
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# --- the routing checks, one set for each config source ---------------------------

def sample(name):
    path = os.path.join(SAMPLES, name)
    check(os.path.isfile(path), f"no Istio sample at {path} (set PILOTFISH_ISTIO_SAMPLES)")
    return path


def every_version_serves_without_rules():
    # 3 instances, 150 requests: each gets 1/3 in expectation; fewer than 20
    # for one of them is below 1 in 10^5 for a fair balancer.
    seen = reviews_versions(150)
    log(f"  no rules: {dict(seen)}")
    check(set(seen) == {"v1", "v2", "v3"} and min(seen.values()) >= 20,
          f"without rules every reviews version should serve: {dict(seen)}")


def all_v1(apply):
    apply("virtual-service-all-v1.yaml")
    wait_for_routing("virtual-service-all-v1", lambda v: v == "v1")
    seen = reviews_versions(60)
    log(f"  virtual-service-all-v1: {dict(seen)}")
    check(seen == {"v1": 60}, f"all-v1 should send every request to v1: {dict(seen)}")


def jason_gets_v2(apply):
    jason = {"end-user": "jason"}
    apply("virtual-service-reviews-test-v2.yaml")
    wait_for_routing("virtual-service-reviews-test-v2", lambda v: v == "v2", headers=jason)
    as_jason, anonymous = reviews_versions(40, jason), reviews_versions(40)
    log(f"  reviews-test-v2: jason {dict(as_jason)}, others {dict(anonymous)}")
    check(as_jason == {"v2": 40}, f"end-user jason should get v2: {dict(as_jason)}")
    check(anonymous == {"v1": 40}, f"everyone else should get v1: {dict(anonymous)}")


def fifty_fifty_v1_v3(apply):
    apply("virtual-service-reviews-50-v3.yaml")
    wait_for_routing("virtual-service-reviews-50-v3", lambda v: v in ("v1", "v3"), streak=40)
    # 400 requests at 50 %: the v3 share lies in [0.40, 0.60] unless off by
    # 4 standard deviations (p < 10^-4).
    seen = reviews_versions(400)
    share = seen["v3"] / 400
    log(f"  reviews-50-v3: {dict(seen)} (v3 share {share:.2f})")
    check(set(seen) <= {"v1", "v3"}, f"50-v3 should route to v1 and v3 only: {dict(seen)}")
    check(0.40 <= share <= 0.60, f"v3 share {share:.2f} outside [0.40, 0.60]")


def routing_rules(apply):
    all_v1(apply)
    jason_gets_v2(apply)
    fifty_fifty_v1_v3(apply)


# --- the phases --------------------------------------------------------------

def host_firewall():
    """The host's iptables rules (legacy and nft, v4 and v6), without counters."""
    out = []
    for tool in ("iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save"):
        if shutil.which(tool):
            text = run([tool], env=dict(os.environ), check_status=False).stdout
            out.append("\n".join(l for l in text.splitlines() if not l.startswith("#")))
    return "\n".join(out)


def build_images():
    result = subprocess.run([os.path.join(HERE, "build-images.sh")], text=True)
    check(result.returncode == 0, "build-images.sh failed")


STACK = ["consul", "kube-apiserver", "jaeger", "pilotfish", "istio-ingressgateway",
         "productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "reviews-v3", "ratings-v1",
         "productpage-v1-sidecar", "details-v1-sidecar", "reviews-v1-sidecar",
         "reviews-v2-sidecar", "reviews-v3-sidecar", "ratings-v1-sidecar"]


def up():
    compose("up", "-d")
    wait_healthy(STACK)
    # Healthy apps are registered; the gateway routes once it has their endpoints.
    wait_until("the gateway to serve /productpage", PROPAGATION_TIMEOUT,
               lambda: product_page()[0] == 200)
    sidecar_answers_dns("productpage-v1-sidecar")


def sidecar_answers_dns(sidecar):
    """DNS proxying is on: the app's lookups (details, reviews, consul)
    were captured to its sidecar's DNS listener and answered there."""
    stats = compose("exec", "-T", sidecar, "curl", "-fsS",
                    "http://127.0.0.1:15000/stats?filter=^dns_filter").stdout
    counters = dict(line.split(": ", 1) for line in stats.splitlines() if ": " in line)
    queries = int(counters.get("dns_filter.dns.downstream_rx_queries", "0"))
    answers = int(counters.get("dns_filter.dns.downstream_tx_responses", "0"))
    check(queries > 0 and answers == queries,
          f"{sidecar}: the app's DNS did not go through the sidecar: {stats!r}")
    log(f"  {sidecar} answered {answers} DNS queries of its app")


def rules_from_the_api_server():
    for name in ("bookinfo-gateway.yaml", "destination-rule-all.yaml"):
        kubectl_apply(sample(name))  # Istio's own files over ours: unchanged
    every_version_serves_without_rules()
    routing_rules(lambda name: kubectl_apply(sample(name)))
    kubectl("delete", "virtualservice", "reviews", "productpage", "ratings", "details",
            "--ignore-not-found")


def rules_from_a_directory():
    rules = tempfile.mkdtemp(prefix="pilotfish-compose-rules-")
    os.chmod(rules, 0o755)
    try:
        for name in ("bookinfo-gateway.yaml", "destination-rule-all.yaml"):
            shutil.copy(sample(name), rules)
        for entry in os.listdir(rules):
            os.chmod(os.path.join(rules, entry), 0o644)
        env = docker_env({"PILOTFISH_CONFIG_FLAG": "--config-dir=/etc/pilotfish/config-dir",
                          "PILOTFISH_CONFIG_DIR": rules})
        compose("up", "-d", "pilotfish", env=env)  # recreated with the directory
        wait_healthy(["pilotfish"])
        every_version_serves_without_rules()

        written = []

        def apply(name):
            # Each sample replaces the one before, as `kubectl apply` of a
            # VirtualService with the same name does: the old file goes
            # first, so that no two files define the reviews routes at once.
            for old in written:
                os.remove(old)
            target = os.path.join(rules, name)
            shutil.copy(sample(name), target + ".tmp")
            os.chmod(target + ".tmp", 0o644)
            os.replace(target + ".tmp", target)  # whole files only
            written[:] = [target]

        routing_rules(apply)
    finally:
        compose("up", "-d", "pilotfish")  # back to the API server
        wait_healthy(["pilotfish"])
        shutil.rmtree(rules, ignore_errors=True)


def pilotfish_restart_under_traffic():
    with Load() as load:
        time.sleep(2)
        compose("restart", "pilotfish")
        wait_healthy(["pilotfish"])
        wait_healthy([s for s in STACK if s.endswith("-sidecar")] + ["istio-ingressgateway"])
        time.sleep(3)
    log(f"  restart: {load.ok} requests answered, {len(load.failed)} failed")
    check(load.ok > 50, f"too little traffic during the restart: {load.ok}")
    check(not load.failed, f"requests failed while Pilotfish restarted: {load.failed[:10]}")


def consul_outage_under_traffic():
    with Load() as load:
        time.sleep(2)
        compose("stop", "consul")
        log("  consul stopped; traffic continues for 30 s")
        time.sleep(30)  # the outage the scenario asks for, not a wait for a state
        compose("start", "consul")
        wait_healthy(["consul"])
        log("  consul back; registering details-v2")
        compose("--profile", "extra", "up", "-d", "details-v2", "details-v2-init", "details-v2-sidecar")
        wait_healthy(["details-v2", "details-v2-sidecar"])
        wait_until("details v2 to answer through the mesh", PROPAGATION_TIMEOUT,
                   lambda: load.details["v2"] >= 5)
    log(f"  consul outage: {load.ok} requests answered, {len(load.failed)} failed, details {dict(load.details)}")
    check(load.ok > 100, f"too little traffic during the outage: {load.ok}")
    check(not load.failed, f"requests failed during the Consul outage: {load.failed[:10]}")


def trace_spans_the_call_chain():
    wanted = {"istio-ingressgateway.istio-system", "productpage.default", "reviews.default",
              "ratings.default"}
    # reviews v1 does not call ratings: ask until v2 or v3 answered.
    trace_id = None
    for _ in range(50):
        candidate = uuid.uuid4().hex[:16]
        status, body = product_page({"x-b3-traceid": candidate, "x-b3-spanid": candidate,
                                     "x-b3-sampled": "1"})
        if status == 200 and "ratings" in body["reviews"]:
            trace_id = candidate
            break
    check(trace_id, "no request reached ratings")
    found = set()

    def probe():
        url = f"http://127.0.0.1:{JAEGER_PORT}/api/traces/{trace_id}"
        with OPENER.open(url, timeout=5) as response:
            data = json.loads(response.read())["data"]
        for trace in data:
            services = {k: v["serviceName"] for k, v in trace["processes"].items()}
            found.update(services[span["processID"]] for span in trace["spans"])
        return wanted <= found

    try:
        # Envoy flushes Zipkin spans every 5 s.
        wait_until(f"trace {trace_id} in Jaeger", 30, probe, interval=1)
    except Failure as error:
        raise Failure(f"{error}: found spans of {sorted(found)}, want {sorted(wanted)}") from error
    log(f"  trace {trace_id}: spans from {sorted(found)}")
    gateway_log = compose("logs", "--no-color", "istio-ingressgateway").stdout
    check("GET /productpage" in gateway_log, "the gateway's access log has no GET /productpage")


def down(firewall_before):
    compose("--profile", "extra", "down", "-v", "--remove-orphans")
    docker = docker_binary()
    label = f"label=com.docker.compose.project={PROJECT}"
    left = {
        "containers": run([docker, "ps", "-aq", "--filter", label]).stdout.split(),
        "networks": run([docker, "network", "ls", "-q", "--filter", label]).stdout.split(),
        "volumes": run([docker, "volume", "ls", "-q", "--filter", label]).stdout.split(),
    }
    check(not any(left.values()), f"`down` left {left}")
    check(host_firewall() == firewall_before, "the host's iptables rules changed")


def main():
    if os.geteuid() != 0:
        log("SKIPPED: needs root to run the private dockerd")
        return 0
    dockerd = run([os.path.join(HERE, "dockerd.sh"), "status"], env=dict(os.environ),
                  check_status=False)
    was_running = dockerd.returncode == 0
    if not was_running:
        probe = run([os.path.join(HERE, "dockerd.sh"), "start"], env=dict(os.environ),
                    check_status=False)
        if probe.returncode != 0:
            log(f"SKIPPED: this machine cannot run dockerd:\n{probe.stdout}{probe.stderr}")
            return 0
    firewall_before = host_firewall()
    phases = [
        ("build images", build_images),
        ("up until healthy", up),
        ("routing rules from the API server (kubectl apply)", rules_from_the_api_server),
        ("routing rules from a mounted config directory", rules_from_a_directory),
        ("Pilotfish restart under traffic", pilotfish_restart_under_traffic),
        ("Consul stopped 30 s under traffic", consul_outage_under_traffic),
        ("trace across gateway, productpage, reviews, ratings; access log", trace_spans_the_call_chain),
        ("down", lambda: down(firewall_before)),
    ]
    timings = []
    started = time.monotonic()
    status = 0
    try:
        for name, phase in phases:
            log(f"==> {name}")
            t0 = time.monotonic()
            phase()
            timings.append((name, time.monotonic() - t0))
            log(f"    {name}: passed in {timings[-1][1]:.1f} s")
    except Failure as error:
        status = 1
        log(f"FAILED: {error}")
        logs = compose("logs", "--no-color", "--tail", "40", "pilotfish", "istio-ingressgateway",
                       "productpage-v1", "productpage-v1-sidecar")
        print(logs.stdout[-20000:], flush=True)
        if os.environ.get("PILOTFISH_COMPOSE_KEEP") != "1":
            compose("--profile", "extra", "down", "-v", "--remove-orphans")
    finally:
        if not was_running and os.environ.get("PILOTFISH_COMPOSE_KEEP") != "1":
            run([os.path.join(HERE, "dockerd.sh"), "stop"], env=dict(os.environ), check_status=False)
    log("phase timings:")
    for name, seconds in timings:
        log(f"  {seconds:7.1f} s  {name}")
    log(f"  {time.monotonic() - started:7.1f} s  total ({'passed' if status == 0 else 'FAILED'})")
    return status


if __name__ == "__main__":
    sys.exit(main())
