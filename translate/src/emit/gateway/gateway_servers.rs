//! The Gateways that apply to a gateway proxy, and their servers grouped by
//! port.
//!
//! A Gateway applies when its `selector` is a subset of the proxy's labels
//! (an empty selector selects every gateway proxy) and, with
//! `scope_gateway_to_namespace`, when it lives in the proxy's namespace.
//!
//! A port serves one family of traffic, decided by its oldest server:
//! plaintext HTTP (every server merges into route configuration
//! `http.<port>`), TLS (terminated HTTPS and passthrough servers, told apart
//! by SNI) or opaque TCP (one server). A server that does not fit its
//! port's family, or whose SNI names another server already has, is
//! reported and left out; nothing is shadowed silently.

use std::collections::BTreeMap;

use pilotfish_crds::{ConfigObject, ConfigSpec, GatewaySpec, Server, ServerTlsMode};

use crate::claims::{Claim, Claimant, Claims};
use crate::diagnostics::{Diagnostic, DiagnosticKind};
use crate::emit::context::Context;
use crate::mesh::TlsCredential;
use crate::visibility;

/// Ports of the gateway proxy itself (admin, health, Prometheus).
pub const RESERVED_GATEWAY_PORTS: [u16; 3] = [15000, 15021, 15090];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// Plaintext HTTP (also HTTP2, GRPC).
    Http,
    /// TLS terminated here, then HTTP routing.
    Https,
    /// TLS forwarded untouched, routed by SNI (VirtualService `tls`).
    Passthrough,
    /// TLS terminated here, then forwarded as TCP (VirtualService `tcp`).
    TlsTerminated,
    /// Opaque TCP (VirtualService `tcp`).
    Tcp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortFamily {
    Http,
    Tls,
    Tcp,
}

impl ServerKind {
    /// Servers that present a certificate and claim SNI names.
    pub fn terminates_tls(self) -> bool {
        matches!(self, ServerKind::Https | ServerKind::TlsTerminated)
    }

    fn family(self) -> PortFamily {
        match self {
            ServerKind::Http => PortFamily::Http,
            ServerKind::Https | ServerKind::Passthrough | ServerKind::TlsTerminated => {
                PortFamily::Tls
            }
            ServerKind::Tcp => PortFamily::Tcp,
        }
    }
}

/// A server host: `[namespace/]host`. The namespace limits which
/// VirtualServices may bind to it (`*` or none: any; `.`: the Gateway's own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHost {
    /// `None` admits every namespace.
    pub namespace: Option<String>,
    /// Lower-cased; may be `*` or `*.suffix`.
    pub host: String,
}

impl ServerHost {
    fn parse(text: &str, gateway_namespace: &str) -> ServerHost {
        let text = text.trim().to_ascii_lowercase();
        let (namespace, host) = match text.split_once('/') {
            Some(("*", host)) => (None, host.to_string()),
            Some((".", host)) => (Some(gateway_namespace.to_string()), host.to_string()),
            Some((ns, host)) => (Some(ns.to_string()), host.to_string()),
            None => (None, text),
        };
        ServerHost { namespace, host }
    }

    /// Whether a VirtualService of `namespace` may bind to this host.
    pub fn admits(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }
}

/// Where a terminated server's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateSource {
    /// Files on the gateway proxy's host.
    Files {
        certificate_chain: String,
        private_key: String,
        ca_certificates: Option<String>,
        ca_crl: Option<String>,
    },
    /// A Kubernetes Secret in the proxy's namespace, served over SDS.
    Credential { name: String, has_ca: bool },
}

/// One server of a selected Gateway.
#[derive(Clone, Debug)]
pub struct GatewayServer<'a> {
    pub gateway: &'a ConfigObject,
    /// `namespace/name` of the Gateway, as VirtualServices name it.
    pub gateway_key: String,
    /// Index in `spec.servers`.
    pub index: usize,
    pub rank: ServerRank,
    pub server: &'a Server,
    pub kind: ServerKind,
    pub port: u16,
    pub hosts: Vec<ServerHost>,
    /// SNI names of a terminated server; empty takes any SNI (host `*`).
    pub server_names: Vec<String>,
    /// Terminated servers only.
    pub certificate: Option<CertificateSource>,
}

/// A server's precedence: its Gateway's place among the selected ones
/// (oldest first, see [`selected`]), then its index in `spec.servers`.
pub type ServerRank = (usize, usize);

impl GatewayServer<'_> {
    /// `Gateway ns/name spec.servers[i]`, as conflicts name a server.
    pub fn label(&self) -> String {
        format!("{} {}", self.object(), self.field(""))
    }

    /// `Gateway ns/name`.
    pub fn object(&self) -> String {
        self.gateway.key().to_string()
    }

    /// `spec.servers[i]` followed by `rest` (`.port`, `.tls.mode`...).
    pub fn field(&self, rest: &str) -> String {
        format!("spec.servers[{}]{rest}", self.index)
    }

    pub fn port_name(&self) -> &str {
        self.server.port.name.as_deref().unwrap_or_default()
    }

    /// `tls.httpsRedirect`: plaintext requests get a 301 to HTTPS.
    pub fn redirects_to_https(&self) -> bool {
        self.server
            .tls
            .as_ref()
            .and_then(|t| t.https_redirect)
            .unwrap_or(false)
    }

    /// Istio's route configuration names: `http.<port>` for plaintext
    /// (shared by every server of the port), and
    /// `https.<port>.<portName>.<gateway>.<namespace>` per terminated server.
    pub fn route_config_name(&self) -> String {
        match self.kind {
            ServerKind::Https => format!(
                "https.{}.{}.{}.{}",
                self.port,
                self.port_name(),
                self.gateway.meta.name,
                self.gateway.meta.namespace
            ),
            _ => format!("http.{}", self.port),
        }
    }

    /// Lower-cased host parts of the server's hosts.
    pub fn host_names(&self) -> impl Iterator<Item = &str> {
        self.hosts.iter().map(|h| h.host.as_str())
    }
}

/// The servers of one port, oldest Gateway first.
#[derive(Clone, Debug)]
pub struct PortServers<'a> {
    pub port: u16,
    pub family: PortFamily,
    pub servers: Vec<GatewayServer<'a>>,
    /// SNI names taken by terminated servers (`""` for any): passthrough
    /// routes claim from what is left.
    pub sni_owners: Claims<String, SniHolder>,
}

/// Who holds an SNI name on a TLS port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SniHolder {
    pub rank: SniRank,
    /// `Gateway ns/name spec.servers[i]` or `VirtualService ns/name spec.tls[i]`.
    pub label: String,
}

/// Terminated servers hold SNI names before any passthrough `tls` rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SniRank {
    Server(ServerRank),
    /// A rule of a VirtualService bound to a passthrough server: that
    /// server's rank, the VirtualService's position among those bound to
    /// it (oldest first), the rule's index.
    Rule(ServerRank, usize, usize),
}

impl Claimant for SniHolder {
    type Rank = SniRank;

    fn rank(&self) -> SniRank {
        self.rank
    }

    fn is(&self, other: &Self) -> bool {
        self == other
    }
}

/// A server's claim on its port: the oldest server decides the port's
/// family; servers of that family share it, except TCP (one server).
struct PortHolder {
    rank: ServerRank,
    family: PortFamily,
    label: String,
}

impl Claimant for PortHolder {
    type Rank = ServerRank;

    fn rank(&self) -> ServerRank {
        self.rank
    }

    fn is(&self, other: &Self) -> bool {
        self.rank == other.rank
    }

    fn shares_with(&self, other: &Self) -> bool {
        self.family == other.family && self.family != PortFamily::Tcp
    }
}

/// Gateways selecting the proxy, oldest first.
pub fn selected<'a>(ctx: &Context<'a>) -> Vec<(&'a ConfigObject, &'a GatewaySpec)> {
    let scoped = ctx.mesh.mesh.scope_gateway_to_namespace;
    let mut out: Vec<_> = ctx
        .mesh
        .config
        .iter()
        .filter_map(|object| match &object.spec {
            ConfigSpec::Gateway(spec) => Some((object, spec)),
            _ => None,
        })
        .filter(|(object, spec)| {
            visibility::labels_match(&spec.selector, &ctx.proxy.labels)
                && (!scoped || object.meta.namespace == ctx.proxy.namespace)
        })
        .collect();
    out.sort_by(|a, b| a.0.precedence().cmp(&b.0.precedence()));
    out
}

/// The servers of the selected Gateways, by port. Invalid, unsupported and
/// conflicting servers are reported and left out.
pub fn plan<'a>(ctx: &Context<'a>, diags: &mut Vec<Diagnostic>) -> Vec<PortServers<'a>> {
    let mut ports: BTreeMap<u16, PortServers<'a>> = BTreeMap::new();
    let mut port_holders: Claims<u16, PortHolder> = Claims::default();
    for (position, (object, spec)) in selected(ctx).into_iter().enumerate() {
        for (index, server) in spec.servers.iter().enumerate() {
            let server = match gateway_server(ctx, object, (position, index), server) {
                Ok(server) => server,
                Err(diagnostic) => {
                    diags.push(diagnostic);
                    continue;
                }
            };
            let holder = PortHolder {
                rank: server.rank,
                family: server.kind.family(),
                label: server.label(),
            };
            if let Claim::Lost { winner } = port_holders.claim(server.port, holder) {
                diags.push(port_conflict(&server, winner));
                continue;
            }
            let slot = ports.entry(server.port).or_insert_with(|| PortServers {
                port: server.port,
                family: server.kind.family(),
                servers: Vec::new(),
                sni_owners: Claims::default(),
            });
            if let Err(diagnostic) = admit(slot, server, diags) {
                diags.push(diagnostic);
            }
        }
    }
    ports.into_values().collect()
}

/// Adds `server` to its port, unless it conflicts with what the port has.
fn admit<'a>(
    slot: &mut PortServers<'a>,
    mut server: GatewayServer<'a>,
    diags: &mut Vec<Diagnostic>,
) -> Result<(), Diagnostic> {
    if server.kind == ServerKind::Https {
        let name = server.route_config_name();
        if let Some(twin) = slot
            .servers
            .iter()
            .find(|s| s.kind == ServerKind::Https && s.route_config_name() == name)
        {
            return Err(Diagnostic::invalid(
                server.object(),
                server.field(".port.name"),
                format!(
                    "port name {:?} on port {} is also used by {}; terminated servers of a Gateway need unique port names",
                    server.port_name(),
                    slot.port,
                    twin.field("")
                ),
            ));
        }
    }
    if server.kind.terminates_tls() {
        claim_server_names(slot, &mut server, diags)?;
    }
    slot.servers.push(server);
    Ok(())
}

/// A server that does not fit the family of its port, or a second TCP server.
fn port_conflict(server: &GatewayServer, holder: &PortHolder) -> Diagnostic {
    let port = server.port;
    let message = if server.kind.family() != holder.family {
        format!(
            "port {port} already serves {:?} for {} (older); a port serves one protocol family, so this {:?} server is not served",
            holder.family, holder.label, server.kind
        )
    } else {
        format!(
            "port {port} already has the TCP server of {} (older); a TCP port has one server",
            holder.label
        )
    };
    conflict(server, message)
}

/// Takes the server's SNI names; names an older server has are reported.
/// A server left with none is not served.
fn claim_server_names(
    slot: &mut PortServers,
    server: &mut GatewayServer,
    diags: &mut Vec<Diagnostic>,
) -> Result<(), Diagnostic> {
    let owner = SniHolder {
        rank: SniRank::Server(server.rank),
        label: server.label(),
    };
    let wanted = std::mem::take(&mut server.server_names);
    // An empty list (host `*`) takes every SNI: it is one claim, of "".
    let keys: Vec<String> = if wanted.is_empty() {
        vec![String::new()]
    } else {
        wanted
    };
    let mut kept = Vec::new();
    for key in keys {
        match slot.sni_owners.claim(key.clone(), owner.clone()) {
            Claim::Lost { winner } => diags.push(conflict(
                server,
                format!(
                    "port {}: SNI {} is already served by {} (older); this server does not get it",
                    slot.port,
                    if key.is_empty() { "*" } else { key.as_str() },
                    winner.label,
                ),
            )),
            Claim::Won | Claim::Again => kept.push(key),
        }
    }
    if kept.is_empty() {
        return Err(conflict(
            server,
            format!(
                "port {}: every host of this server is served by an older server; it is not served",
                slot.port
            ),
        ));
    }
    server.server_names = kept.into_iter().filter(|k| !k.is_empty()).collect();
    Ok(())
}

fn conflict(server: &GatewayServer, message: String) -> Diagnostic {
    Diagnostic::new(DiagnosticKind::ListenerConflict, server.object(), message).at(server.field(""))
}

fn gateway_server<'a>(
    ctx: &Context,
    gateway: &'a ConfigObject,
    rank: ServerRank,
    server: &'a Server,
) -> Result<GatewayServer<'a>, Diagnostic> {
    let index = rank.1;
    let object = gateway.key().to_string();
    let field = |rest: &str| format!("spec.servers[{index}]{rest}");
    let port = u16::try_from(server.port.number)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Diagnostic::invalid(&object, field(".port.number"), "not a TCP port"))?;
    if RESERVED_GATEWAY_PORTS.contains(&port) {
        return Err(Diagnostic::invalid(
            &object,
            field(".port.number"),
            format!("port {port} is used by the gateway proxy itself"),
        ));
    }
    if server.hosts.is_empty() {
        return Err(Diagnostic::invalid(
            &object,
            field(".hosts"),
            "a server needs at least one host",
        ));
    }
    if server
        .bind
        .as_deref()
        .is_some_and(|b| !b.is_empty() && b != "0.0.0.0")
    {
        return Err(Diagnostic::unsupported(&object, field(".bind")));
    }
    let kind = server_kind(&object, index, server)?;
    let namespace = &gateway.meta.namespace;
    let hosts: Vec<ServerHost> = server
        .hosts
        .iter()
        .map(|h| ServerHost::parse(h, namespace))
        .collect();
    let server_names = if kind.terminates_tls() && !hosts.iter().any(|h| h.host == "*") {
        let mut names: Vec<String> = hosts.iter().map(|h| h.host.clone()).collect();
        names.sort();
        names.dedup();
        names
    } else {
        Vec::new()
    };
    let certificate = match kind {
        ServerKind::Https | ServerKind::TlsTerminated => {
            Some(certificate_source(ctx, &object, index, server)?)
        }
        _ => None,
    };
    Ok(GatewayServer {
        gateway,
        gateway_key: format!("{namespace}/{}", gateway.meta.name),
        index,
        rank,
        server,
        kind,
        port,
        hosts,
        server_names,
        certificate,
    })
}

/// The kind of a server from its port protocol and TLS mode.
fn server_kind(object: &str, index: usize, server: &Server) -> Result<ServerKind, Diagnostic> {
    let field = |rest: &str| format!("spec.servers[{index}]{rest}");
    let protocol = server
        .port
        .protocol
        .as_deref()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let mode = server.tls.as_ref().and_then(|t| t.mode);
    match protocol.as_str() {
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => Ok(ServerKind::Http),
        "TCP" | "MONGO" | "REDIS" | "MYSQL" => Ok(ServerKind::Tcp),
        "HTTPS" | "TLS" => match mode {
            None => Err(Diagnostic::invalid(
                object,
                field(".tls"),
                format!("a {protocol} server needs tls with a mode"),
            )),
            Some(ServerTlsMode::Passthrough) => Ok(ServerKind::Passthrough),
            Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual) => {
                Ok(if protocol == "HTTPS" {
                    ServerKind::Https
                } else {
                    ServerKind::TlsTerminated
                })
            }
            Some(_) => Err(Diagnostic::new(
                DiagnosticKind::Unsupported,
                object,
                format!("{protocol} with this tls mode is not implemented by Pilotfish yet; the server is not served"),
            )
            .at(field(".tls.mode"))),
        },
        "" => Err(Diagnostic::invalid(object, field(".port.protocol"), "missing protocol")),
        other => Err(Diagnostic::invalid(
            object,
            field(".port.protocol"),
            format!("unknown protocol {other:?}"),
        )),
    }
}

/// Certificates of a terminated server: files, or a credential the proxy's
/// namespace holds (Istio looks credentials up next to the gateway proxy).
fn certificate_source(
    ctx: &Context,
    object: &str,
    index: usize,
    server: &Server,
) -> Result<CertificateSource, Diagnostic> {
    let field = |rest: &str| format!("spec.servers[{index}].tls{rest}");
    let Some(tls) = server.tls.as_ref() else {
        return Err(Diagnostic::invalid(object, field(""), "missing tls"));
    };
    let verifies_clients = matches!(
        tls.mode,
        Some(ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
    );
    for (present, name) in [
        (!tls.credential_names.is_empty(), ".credentialNames"),
        (!tls.tls_certificates.is_empty(), ".tlsCertificates"),
        (
            tls.ca_cert_credential_name.is_some(),
            ".caCertCredentialName",
        ),
    ] {
        if present {
            return Err(Diagnostic::new(
                DiagnosticKind::Unsupported,
                object,
                "not implemented by Pilotfish yet; the server is not served",
            )
            .at(field(name)));
        }
    }
    if let Some(name) = non_empty(&tls.credential_name) {
        let key = (ctx.proxy.namespace.clone(), name.to_string());
        let credential: &TlsCredential = ctx.mesh.credentials.get(&key).ok_or_else(|| {
            Diagnostic::new(
                DiagnosticKind::MissingCredential,
                object,
                format!(
                    "no Secret {}/{name} with a certificate and key (credentials are read from the gateway proxy's namespace); the server is not served",
                    ctx.proxy.namespace
                ),
            )
            .at(field(".credentialName"))
        })?;
        let has_ca = credential.ca_certificates.is_some();
        if verifies_clients && !has_ca {
            return Err(Diagnostic::new(
                DiagnosticKind::MissingCredential,
                object,
                format!("Secret {}/{name} has no CA certificate (ca.crt or cacert) to verify clients with; the server is not served", ctx.proxy.namespace),
            )
            .at(field(".credentialName")));
        }
        return Ok(CertificateSource::Credential {
            name: name.to_string(),
            has_ca,
        });
    }
    let certificate_chain = non_empty(&tls.server_certificate).ok_or_else(|| {
        Diagnostic::invalid(
            object,
            field(".serverCertificate"),
            "missing (and no credentialName)",
        )
    })?;
    let private_key = non_empty(&tls.private_key).ok_or_else(|| {
        Diagnostic::invalid(
            object,
            field(".privateKey"),
            "missing (and no credentialName)",
        )
    })?;
    let ca_certificates = non_empty(&tls.ca_certificates).map(str::to_string);
    if verifies_clients && ca_certificates.is_none() {
        return Err(Diagnostic::invalid(
            object,
            field(".caCertificates"),
            "MUTUAL needs a CA to verify client certificates with",
        ));
    }
    Ok(CertificateSource::Files {
        certificate_chain: certificate_chain.to_string(),
        private_key: private_key.to_string(),
        ca_certificates,
        ca_crl: non_empty(&tls.ca_crl).map(str::to_string),
    })
}

fn non_empty(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|s| !s.is_empty())
}
