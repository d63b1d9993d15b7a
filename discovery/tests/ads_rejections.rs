//! Who may make pilotfish leave a config object out by rejecting (NACKing)
//! what it produced (`--quarantine-rejected-config`), driven by a client
//! that plays Envoy's part and rejects on cue. The end-to-end test
//! (e2e_rejected_config.rs) makes a real Envoy reject real config.

mod ads_support;

use ads_support::{Credential, SotwClient, node, start_with_quarantine};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use pilotfish_discovery::ads::rejection::{Rejection, Verdict};
use pilotfish_discovery::push::Change;
use pilotfish_discovery::quarantine::QuarantinePolicy;
use pilotfish_discovery::security::WorkloadIdentity;
use pilotfish_discovery::xds_types::XdsType;
use std::time::Duration;
use tokio::sync::mpsc;

const ROUTES: &str = "9080";
const WAIT: Duration = Duration::from_secs(5);

fn reviews_vs(path: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  http:\n  - match: [{{uri: {{prefix: {path}}}}}]\n    route: [{{destination: {{host: reviews.default.svc.cluster.local}}}}]\n"
    )
}

fn routes_request(answering: Option<&DiscoveryResponse>) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node(),
        type_url: XdsType::Route.type_url(),
        resource_names: vec![ROUTES.into()],
        version_info: answering
            .map(|r| r.version_info.clone())
            .unwrap_or_default(),
        response_nonce: answering.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// Serves the reviews VirtualService to a client that accepts its routes,
/// then rejects them once the VirtualService changed. Returns what the
/// sync status says of the rejection, and what reached the push scheduler.
async fn reject_an_edit(
    policy: QuarantinePolicy,
    authenticated: bool,
) -> (Rejection, Option<Change>) {
    let (mut h, mut changes) = start_with_quarantine(policy).await;
    h.set_config("reviews.yaml", &reviews_vs("/v1"));
    let identity = WorkloadIdentity::new("cluster.local", "default", "test");
    let channel = match authenticated {
        true => h
            .secure_channel(Credential::Certificate(&identity))
            .await
            .expect("TLS with a mesh certificate"),
        false => h.plaintext_channel().await,
    };
    let mut client = SotwClient::on(channel).await;
    client.send(routes_request(None)).await;
    let accepted = client.next().await;
    client.send(routes_request(Some(&accepted))).await;
    let routes_status = |h: &ads_support::Harness| {
        let proxies = h.ctx.status.list();
        let routes = proxies.first().and_then(|p| p.types.get(&XdsType::Route));
        routes.cloned().unwrap_or_default()
    };
    ads_support::wait_for("the ACK in the sync status", WAIT, || {
        let acked = routes_status(&h).acked_version;
        match acked.as_deref() == Some(accepted.version_info.as_str()) {
            true => Ok(()),
            false => Err(format!("acked {acked:?}")),
        }
    })
    .await;

    h.set_config("reviews.yaml", &reviews_vs("/v2"));
    let edited = client.next().await;
    let mut nack = routes_request(Some(&edited));
    nack.version_info = accepted.version_info.clone();
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "test: route rejected".into(),
        details: vec![],
    });
    client.send(nack).await;
    let rejection = ads_support::wait_for("the rejection in the sync status", WAIT, || {
        let routes = routes_status(&h);
        routes.rejected.clone().ok_or_else(|| format!("{routes:?}"))
    })
    .await;
    // A request to leave the object out is sent before the status records
    // the rejection: whatever was sent is there now.
    let change = match changes.try_recv() {
        Ok(change) => Some(change),
        Err(mpsc::error::TryRecvError::Empty) => None,
        Err(e) => panic!("changes channel: {e}"),
    };
    (rejection, change)
}

fn left_out_object(change: Option<Change>) -> Option<String> {
    match change {
        Some(Change::Rejected(request)) => Some(request.object.key().to_string()),
        Some(other) => panic!("unexpected change {other:?}"),
        None => None,
    }
}

#[tokio::test]
async fn an_authenticated_proxys_rejection_leaves_out_the_one_object_that_changed() {
    let (rejection, change) = reject_an_edit(QuarantinePolicy::Authenticated, true).await;
    assert_eq!(rejection.resources, [ROUTES]);
    assert_eq!(rejection.config, ["VirtualService default/reviews"]);
    assert_eq!(rejection.message, "test: route rejected");
    assert!(matches!(rejection.verdict, Verdict::Object(_)));
    assert_eq!(
        left_out_object(change).as_deref(),
        Some("VirtualService default/reviews")
    );
}

#[tokio::test]
async fn an_anonymous_plaintext_proxy_cannot_leave_config_out_by_default() {
    let (rejection, change) = reject_an_edit(QuarantinePolicy::Authenticated, false).await;
    assert!(
        matches!(rejection.verdict, Verdict::Object(_)),
        "still put down to the object: {rejection:?}"
    );
    assert_eq!(left_out_object(change), None);
}

#[tokio::test]
async fn any_proxy_leaves_config_out_when_allowed_and_none_when_off() {
    let (_, change) = reject_an_edit(QuarantinePolicy::Any, false).await;
    assert_eq!(
        left_out_object(change).as_deref(),
        Some("VirtualService default/reviews")
    );
    let (_, change) = reject_an_edit(QuarantinePolicy::Off, true).await;
    assert_eq!(left_out_object(change), None);
}
