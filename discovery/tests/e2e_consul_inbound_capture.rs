//! The receiving side of the interception (deploy/scripts/pilotfish-iptables.sh
//! `-b '*'`) on a mesh pod, port by port, told apart by where the app saw
//! each connection come from:
//!
//! - the registered port (9080) is captured and delivered by the
//!   `inbound|9080||` cluster: the app sees 127.0.0.1;
//! - a port the registry does not know (7777) is captured too and passed
//!   through by `InboundPassthroughCluster`, from 127.0.0.6 (Istio's
//!   passthrough source, which the script lets through without looping);
//! - the sidecar's own ports (here 15020, Istio's status port) are never
//!   captured: the app there sees the caller's own pod IP;
//! - the pod calling itself by name (its own IP) still passes its inbound
//!   side, on the registered port and on the unknown one.

mod support;

use support::app::AppAnswer;
use support::mesh::{HTTP_PORT, Mesh, MeshPod, PodSpec, host};

const UNDECLARED_PORT: u16 = 7777;
const STATUS_PORT: u16 = 15020;

fn call(from: &MeshPod, port: u16) -> AppAnswer {
    let response = from
        .get(&host("details"), port, &[])
        .unwrap_or_else(|e| panic!("{} -> details:{port}: {e}", from.name()));
    AppAnswer::from_response(&response)
        .unwrap_or_else(|e| panic!("{} -> details:{port}: {e}", from.name()))
}

#[test]
fn capture_all_inbound_ports_except_the_sidecars_own() {
    let mut mesh = Mesh::start("consul-inbound", &[], &[]);
    mesh.add_pod(PodSpec::http("productpage", "v1"));
    mesh.add_pod(PodSpec::http("details", "v1").capture_all_inbound());
    mesh.add_app("details-v1", "details-undeclared", UNDECLARED_PORT);
    mesh.add_app("details-v1", "details-status", STATUS_PORT);
    mesh.register("productpage-v1", Some("http"));
    mesh.register("details-v1", Some("http"));
    mesh.start_sidecars();
    mesh.wait_converged(&["productpage-v1", "details-v1"]);
    let client = mesh.pod("productpage-v1");
    let server = mesh.pod("details-v1");
    let passthrough = |pod: &MeshPod| {
        pod.envoy()
            .cluster_stat("InboundPassthroughCluster", "upstream_cx_total")
    };
    let inbound_requests = |pod: &MeshPod| {
        pod.envoy()
            .cluster_stat(&format!("inbound|{HTTP_PORT}||"), "upstream_rq_total")
    };

    for from in [client, server] {
        let (rq, cx) = (inbound_requests(server), passthrough(server));
        let answer = call(from, HTTP_PORT);
        assert_eq!(
            (answer.service.as_str(), answer.peer.as_str()),
            ("details", "127.0.0.1"),
            "{} -> details:{HTTP_PORT}",
            from.name()
        );
        assert_eq!(inbound_requests(server), rq + 1);
        assert_eq!(passthrough(server), cx);

        let answer = call(from, UNDECLARED_PORT);
        assert_eq!(
            (answer.service.as_str(), answer.peer.as_str()),
            ("details-undeclared", "127.0.0.6"),
            "{} -> details:{UNDECLARED_PORT}: captured, passed through",
            from.name()
        );
        assert_eq!(passthrough(server), cx + 1);
    }

    let cx = passthrough(server);
    let answer = call(client, STATUS_PORT);
    assert_eq!(
        (answer.service.as_str(), answer.peer.as_str()),
        ("details-status", client.ip.as_str()),
        "the sidecar's status port must not be captured"
    );
    assert_eq!(passthrough(server), cx);
    assert_eq!(
        server
            .extra_app(STATUS_PORT)
            .peers()
            .keys()
            .collect::<Vec<_>>(),
        [&client.ip]
    );
    mesh.assert_no_rejected_updates();
}
