//! DNS proxying: three ServiceEntries resolved by DNS, without addresses,
//! on one port. Nothing tells their traffic apart by destination unless
//! each has an address, so each gets one (240.240.0.0/16), and the sidecar
//! answers the application's DNS, captured by `pilotfish-iptables.sh
//! --capture-dns`, with it (`pilotfish bootstrap --dns-proxy`). The
//! application resolves each name through its sidecar, connects, and each
//! connection reaches its own service's backend; the addresses are the same
//! after the control plane restarts.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::dns::resolve_a;
use support::l4::{tcp_tally, wait_chain};
use support::{PROPAGATION, Pod, run_checked, wait_until};

const REGISTRY: &str = r#"
services:
- hostname: web.default.svc.cluster.local
  addresses: [127.1.0.90]
  ports: [{name: http, port: 8080, protocol: HTTP}]
  endpoints: [{address: 127.0.0.91, labels: {version: v1}}]
"#;

/// Three databases as egress is usually declared. Each endpoint is an IP
/// literal, which Envoy's DNS cluster resolves to itself, so the test needs
/// no upstream DNS server for the clusters.
fn entries() -> String {
    DATABASES
        .iter()
        .map(|(host, backend)| {
            let ip = backend.split(':').next().unwrap_or_default();
            format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\n\
                 spec:\n  hosts: [{host}]\n  ports: [{{number: 5432, name: tcp-postgres, protocol: TCP}}]\n  \
                 resolution: DNS\n  location: MESH_EXTERNAL\n  endpoints: [{{address: {ip}}}]\n",
                name = host.split('.').next().unwrap_or_default(),
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Written while no control plane runs.
const LATER: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db-d}
spec:
  hosts: [db-d.example.com]
  ports: [{number: 5432, name: tcp-postgres, protocol: TCP}]
  resolution: DNS
  endpoints: [{address: 127.0.0.64}]
"#;

const DATABASES: [(&str, &str); 3] = [
    ("db-a.example.com", "127.0.0.61:5432"),
    ("db-b.example.com", "127.0.0.62:5432"),
    ("db-c.example.com", "127.0.0.63:5432"),
];

/// The pod's nameserver (its resolv.conf), whose queries the capture
/// sends to the sidecar.
fn nameserver() -> SocketAddr {
    SocketAddr::from((support::pod::TEST_RESOLVER, 53))
}
const N: usize = 5;
/// Enough that, without conntrack zones, some forwarded query would reuse
/// an earlier query's source port (about n²/56,000 expected collisions).
const LOOKUPS: usize = 1000;

fn resolve(pod: &Pod, name: &str) -> Ipv4Addr {
    let answer = pod
        .ns()
        .run(|| resolve_a(nameserver(), name, Duration::from_secs(2)))
        .unwrap_or_else(|e| panic!("resolving {name} through the sidecar: {e}"));
    answer[0]
}

#[test]
fn dns_service_entries_sharing_a_port_are_reached_by_name_through_the_sidecars_dns() {
    let mut pod = Pod::builder("dns-proxy")
        .registry(REGISTRY)
        .config("databases.yaml", &entries())
        .pilotfish_arg("--outbound-traffic-policy")
        .pilotfish_arg("REGISTRY_ONLY")
        .dns_proxy()
        .resolver(&[
            ("outside.example.org", "127.0.0.77"),
            ("plainname", "127.0.0.78"),
        ])
        .start();
    for (host, backend) in DATABASES {
        let name = host.split('.').next().unwrap_or_default();
        pod.add_backend(backend, name, "");
    }
    // A pod's default route would carry the allocated range; this
    // namespace only has loopback (and without a source address the
    // kernel would pick 0.0.0.0, which no reply reaches).
    run_checked(&mut pod.ns().command(
        "ip",
        &[
            "route",
            "add",
            "240.240.0.0/16",
            "dev",
            "lo",
            "src",
            "127.0.0.1",
        ],
    ));
    for (host, _) in DATABASES {
        wait_chain(
            &pod,
            "0.0.0.0_5432",
            &format!("tcp|outbound|5432||{host}"),
            true,
        );
    }

    let mut addresses = Vec::new();
    for (host, _) in DATABASES {
        let ip = resolve(&pod, host);
        assert_eq!(ip.octets()[..2], [240, 240], "{host} answered with {ip}");
        let name = host.split('.').next().unwrap_or_default();
        tcp_tally(&pod, &format!("{ip}:5432"), N).assert_all(
            name,
            &format!("{host} resolved through the sidecar to {ip}"),
        );
        addresses.push(ip);
    }
    let distinct: std::collections::BTreeSet<_> = addresses.iter().collect();
    assert_eq!(distinct.len(), 3, "{addresses:?}");
    // A name the mesh does not know goes to the pod's own resolver.
    assert_eq!(
        resolve(&pod, "outside.example.org"),
        Ipv4Addr::new(127, 0, 0, 77),
        "forwarded upstream"
    );
    assert_eq!(
        resolve(&pod, "plainname"),
        Ipv4Addr::new(127, 0, 0, 78),
        "a single-label name forwarded upstream"
    );
    // What applications do: glibc's getaddrinfo (A and AAAA queries to
    // the namespace's nameserver, captured to the sidecar).
    for (name, ip) in [
        ("plainname", "127.0.0.78"),
        ("outside.example.org", "127.0.0.77"),
    ] {
        let out = run_checked(&mut pod.ns().command("getent", &["ahosts", name]));
        assert!(
            out.contains(ip),
            "getent ahosts {name} through the sidecar: {out}"
        );
    }
    // Lookups in a row, each from a new port: the sidecar forwards to
    // that same nameserver, and without
    // the capture's conntrack zones a forwarded query leaving from the port
    // of an earlier, redirected one is sent back to the sidecar (answered
    // NXDOMAIN: about one in fifty under Docker).
    let failed: Vec<String> = pod.ns().run(|| {
        (0..LOOKUPS)
            .filter_map(|_| {
                match resolve_a(nameserver(), "outside.example.org", Duration::from_secs(2)) {
                    Ok(answer) if answer == [Ipv4Addr::new(127, 0, 0, 77)] => None,
                    other => Some(format!("{other:?}")),
                }
            })
            .collect()
    });
    assert!(
        failed.is_empty(),
        "{} of {LOOKUPS} lookups through the sidecar failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // Queries to another server are not the application's lookups (Docker's
    // resolver forwards from inside the namespace): left alone, so this one
    // meets the closed port, not the sidecar.
    let elsewhere = SocketAddr::from(([127, 0, 0, 99], 53));
    let direct = pod
        .ns()
        .run(|| resolve_a(elsewhere, "db-a.example.com", Duration::from_secs(2)));
    assert!(
        direct.is_err(),
        "a query to {elsewhere} was answered: {direct:?}"
    );
    // A mesh service with a VIP is answered with it.
    let web = resolve(&pod, "web.default.svc.cluster.local");
    assert_eq!(web, Ipv4Addr::new(127, 1, 0, 90), "a mesh service's VIP");

    // Another replica (here: the next instance) allocates the same. A
    // fourth entry written after the restart shows that the sidecar's DNS
    // table is the new instance's, not the one Envoy kept meanwhile.
    pod.pilotfish
        .terminate(Duration::from_secs(10))
        .expect("pilotfish exits on SIGTERM");
    pod.write_config("later.yaml", LATER);
    pod.restart_pilotfish();
    wait_until("db-d resolved through the sidecar", PROPAGATION * 4, || {
        pod.ns()
            .run(|| resolve_a(nameserver(), "db-d.example.com", Duration::from_secs(1)))
            .map_err(|e| e.to_string())
    });
    pod.pilotfish.wait_synced_without_nack(pod.envoy.node_id());
    for ((host, _), before) in DATABASES.iter().zip(&addresses) {
        assert_eq!(resolve(&pod, host), *before, "{host} after a restart");
    }
    pod.envoy.assert_no_rejected_updates();
}
