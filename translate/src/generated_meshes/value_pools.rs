//! Leaf values by field name. Each pool holds ordinary values, extreme but
//! valid ones (the longest duration, big regexes, Envoy format strings,
//! unicode), and an edge list of values Istio or Envoy refuse, drawn only
//! for "edgy" objects.

use serde_json::{Value, json};

use crate::envoy_validation::tls_fixture;
use crate::test_support::Rng;

/// The value pools, by field name.
pub struct Pools;

const DURATIONS: &[&str] = &[
    "1s",
    "0.5s",
    "10ms",
    "2m",
    "1h",
    "1.5s",
    "250ms",
    "1ms",
    "9223372035s",
    "87600h",
    "2562047h",
];
const BAD_DURATIONS: &[&str] = &[
    "0s",
    "100us",
    "-1s",
    "9223372036s",
    "315576000000s",
    "315576000001s",
    "1",
    "abc",
    "",
    "1e3s",
    "99999999999999h",
    "1s1",
    "0.0000000001s",
];

const HOSTS: &[&str] = &[
    "reviews",
    "ratings",
    "details",
    "db",
    "reviews.default.svc.cluster.local",
    "ratings.default.svc.cluster.local",
    "api.example.com",
    "*.example.com",
    "httpbin.org",
    "mongo.service.consul",
    "*",
    "reviews.default",
    "*.default.svc.cluster.local",
    "grpc.default.svc.cluster.local",
    "secure.example.com",
    "10.0.0.5",
];
const GATEWAY_HOSTS: &[&str] = &[
    "*/*",
    "./*",
    "*/api.example.com",
    "default/reviews.default.svc.cluster.local",
    "istio-system/*",
    "bookinfo.com",
    "*.bookinfo.com",
    "*",
];
const BAD_HOSTS: &[&str] = &[
    "",
    "UPPER.Example.com",
    "a..b",
    "ünï.example.com",
    "-bad-.com",
    "a*b.com",
    "*.",
    "host:80",
    "a/b/c",
    "with space.com",
    "*.*.example.com",
];

const NAMES: &[&str] = &[
    "v1",
    "v2",
    "v3",
    "http",
    "tcp",
    "https-443",
    "grpc-web",
    "route-a",
    "tls",
    "mongo",
    "http2",
];
const BAD_NAMES: &[&str] = &["", "Spaces here", "ü", "UPPER", "a/b"];

const HEADER_NAMES: &[&str] = &[
    "x-user",
    "end-user",
    "x-a",
    "content-type",
    "x-envoy-upstream-rq-timeout-ms",
    "X-Mixed-Case",
    "user-agent",
    ":authority",
    ":path",
    "host",
    "connection",
    "te",
    "cookie",
    "x-forwarded-for",
];
const BAD_HEADER_NAMES: &[&str] = &["", "x y", "x\ny", "bad:colon", "ü"];

const HEADER_VALUES: &[&str] = &[
    "v",
    "jason",
    "",
    "ü-value",
    "%DOWNSTREAM_REMOTE_ADDRESS%",
    "%REQ(x-user)%",
    "%UPSTREAM_HOST%",
    "100%%",
    "a b c",
    "\"quoted\"",
];
const BAD_HEADER_VALUES: &[&str] = &["two\nlines", "%BOGUS%", "100%", "%REQ(%", "nul\u{0}"];

const REGEXES: &[&str] = &[
    "^/api/.*",
    ".*",
    "[a-z]+",
    "(a|b)*c",
    "\\d{1,3}",
    "/api/(users|orders)/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "(?i)jason",
    "ü+",
    "(x{1,20}){1,20}",
    "(x{1,60}){1,60}",
    "[\\p{L}\\p{N}]{1,100}",
    "\\p{Greek}+",
    "",
    "^$",
    "[[:alpha:]]+",
];
const BAD_REGEXES: &[&str] = &[
    "(",
    "a{1001}",
    "(?=a)",
    "x**",
    "((((a{10}){10}){10}){10})",
    "\\",
    "(?P<n>x)(?P<n>y)",
    "\\C",
    "\\p{Alphabetic}",
    "(x{1,60}){1,60}",
    "a{1001}",
];

const STRINGS: &[&str] = &[
    "/",
    "/api",
    "/v2/",
    "jason",
    "example.com",
    "ü",
    "a b",
    "",
    "\\1",
    "/reviews/\\1",
];

const ADDRESSES: &[&str] = &[
    "10.0.0.1",
    "10.0.0.0/24",
    "240.240.0.1",
    "fd00::1",
    "2001:db8::/64",
    "0.0.0.0/0",
    "192.168.1.7",
];
const BAD_ADDRESSES: &[&str] = &[
    "300.0.0.1",
    "10.0.0.0/33",
    "",
    "::/200",
    "not-an-ip",
    "10.0.0.1/8",
];

const ENDPOINT_ADDRESSES: &[&str] = &[
    "10.1.0.1",
    "10.1.0.2",
    "fd00::7",
    "backend.example.com",
    "unix:///var/run/app.sock",
];

const EXPORT_TO: &[&str] = &[".", "*", "default", "istio-system"];
const BAD_EXPORT_TO: &[&str] = &["~", "Bad_NS", "", "a b"];

const GATEWAYS: &[&str] = &[
    "mesh",
    "gw",
    "istio-system/gw",
    "default/gw",
    "gw.istio-system.svc.cluster.local",
];
const BAD_GATEWAYS: &[&str] = &["", "a/b/c", "BAD", "/gw"];

const LABEL_VALUES: &[&str] = &["v1", "v2", "v3", "reviews", "ingressgateway", ""];
const BAD_LABEL_VALUES: &[&str] = &["Bad Value", "-x", "ü", "a/b"];

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error,connect-failure,refused-stream",
    "retriable-4xx",
    "503",
    "cancelled,deadline-exceeded,unavailable",
    "reset,retriable-status-codes",
];
const BAD_RETRY_ON: &[&str] = &["bogus", ",,", "5xx,nope", "600"];

const CIPHERS: &[&str] = &[
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "AES256-SHA",
];
const CURVES: &[&str] = &["P-256", "X25519", "P-384"];
const BAD_TLS_NAMES: &[&str] = &["BOGUS-CIPHER", "", "P-999"];

const LOCALITIES: &[&str] = &[
    "us-east/zone1/*",
    "us-east/*",
    "*",
    "us-west/zone2/sub",
    "us-east",
];
const BAD_LOCALITIES: &[&str] = &["", "a/b/c/d", "*/zone"];

const SCHEMES: &[&str] = &["http", "https"];
const BAD_SCHEMES: &[&str] = &["", "ftp", "ht tp"];

const CREDENTIALS: &[&str] = &["gw-cert", "missing-cert", "istio-system/gw-cert"];

/// A field's string pool and its edge pool.
fn string_pools(field: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match field {
        "backoff"
        | "baseEjectionTime"
        | "budgetInterval"
        | "connectTimeout"
        | "duration"
        | "exponentialDelay"
        | "fixedDelay"
        | "idleTimeout"
        | "interval"
        | "maxAge"
        | "maxConnectionDuration"
        | "perTryTimeout"
        | "time"
        | "timeout"
        | "ttl"
        | "warmupDurationSecs"
        | "weightExpirationPeriod"
        | "weightStabilizationPeriod"
        | "weightUpdatePeriod" => (DURATIONS, BAD_DURATIONS),
        "host" | "sniHosts" | "targetHost" | "defaultEndpoint" => (HOSTS, BAD_HOSTS),
        "name" | "subset" => (NAMES, BAD_NAMES),
        "regex" | "match" => (REGEXES, BAD_REGEXES),
        "addresses" | "destinationSubnets" | "sourceSubnet" | "bind" => (ADDRESSES, BAD_ADDRESSES),
        "address" => (ENDPOINT_ADDRESSES, BAD_ADDRESSES),
        "exportTo" | "namespace" | "sourceNamespace" => (EXPORT_TO, BAD_EXPORT_TO),
        "gateways" => (GATEWAYS, BAD_GATEWAYS),
        "labels" | "matchLabels" | "selector" | "sourceLabels" => (LABEL_VALUES, BAD_LABEL_VALUES),
        "set" | "add" | "value" => (HEADER_VALUES, BAD_HEADER_VALUES),
        "remove" | "allowHeaders" | "exposeHeaders" | "httpHeaderName" => {
            (HEADER_NAMES, BAD_HEADER_NAMES)
        }
        "retryOn" => (RETRY_ON, BAD_RETRY_ON),
        "cipherSuites" => (CIPHERS, BAD_TLS_NAMES),
        "ecdhCurves" => (CURVES, BAD_TLS_NAMES),
        "from" | "to" | "locality" | "failoverPriority" => (LOCALITIES, BAD_LOCALITIES),
        "scheme" => (SCHEMES, BAD_SCHEMES),
        "credentialName" | "caCertCredentialName" | "credentialNames" => (CREDENTIALS, BAD_NAMES),
        "allowMethods" => (&["GET", "POST", "OPTIONS", "*"], &["", "get me"]),
        // Port protocols, and a tunnel's CONNECT or POST.
        "protocol" => (
            &[
                "HTTP", "HTTPS", "GRPC", "HTTP2", "TCP", "TLS", "MONGO", "http", "CONNECT", "POST",
            ],
            &["", "SPDY", "PUT"],
        ),
        _ => (STRINGS, BAD_NAMES),
    }
}

/// A key for a map found at `field` (headers, labels, endpoint ports...).
pub fn map_key(field: &str, edge: bool, rng: &mut Rng) -> String {
    let (plain, bad): (&[&str], &[&str]) = match field {
        "headers" | "set" | "add" | "withoutHeaders" => (HEADER_NAMES, BAD_HEADER_NAMES),
        "queryParams" => (&["id", "user", "q", "ü"], &["", "a b"]),
        "ports" => (NAMES, BAD_NAMES),
        "to" => (LOCALITIES, BAD_LOCALITIES),
        _ => (
            &["app", "version", "istio", "app.kubernetes.io/name", "tier"],
            &["", "Bad Key!", "a/b/c", "-x"],
        ),
    };
    let pool = if edge { bad } else { plain };
    rng.pick(pool).to_string()
}

impl Pools {
    pub fn string(&self, field: &str, edge: bool, rng: &mut Rng) -> String {
        match field {
            // Paths on the proxy's own disk hold what their field says:
            // no control plane can read a sidecar's filesystem, so a wrong
            // file there is the proxy's to report.
            "caCertificates" => return tls_fixture("ca.pem"),
            "caCrl" => return tls_fixture("crl.pem"),
            "clientCertificate" | "serverCertificate" => return tls_fixture("client.pem"),
            "privateKey" => return tls_fixture("client-key.pem"),
            "hosts" => {
                let pool = match rng.below(3) {
                    0 => GATEWAY_HOSTS,
                    _ if edge => BAD_HOSTS,
                    _ => HOSTS,
                };
                return rng.pick(pool).to_string();
            }
            "bytes" => return rng.pick(&["aGVsbG8=", "", "!!notbase64"]).to_string(),
            "string" if rng.below(10) == 0 => return "x".repeat(4096 + rng.below(8192)),
            _ => {}
        }
        if !edge && rng.below(40) == 0 {
            return long_value(field, rng);
        }
        let (plain, bad) = string_pools(field);
        let pool = if edge && !bad.is_empty() { bad } else { plain };
        rng.pick(pool).to_string()
    }

    pub fn integer(&self, field: &str, schema: &Value, edge: bool, rng: &mut Rng) -> Value {
        let min = schema.get("minimum").and_then(Value::as_f64);
        let max = schema.get("maximum").and_then(Value::as_f64);
        let int32 = schema.get("format").and_then(Value::as_str) == Some("int32");
        let plain: &[i64] = match field {
            "number" | "port" | "targetPort" | "ports" => &[80, 443, 9080, 5432, 15001, 1, 65535],
            "weight" => &[0, 1, 25, 50, 75, 100],
            "status" | "httpStatus" | "redirectCode" | "outlierDetectionHttpErrorCodes" => {
                &[200, 301, 302, 307, 308, 404, 418, 503, 599, 100]
            }
            "percent" | "maxEjectionPercent" | "minHealthPercent" | "mirrorPercent"
            | "mirror_percent" => &[0, 1, 50, 100],
            "attempts" => &[0, 1, 3, 10],
            _ => &[0, 1, 2, 10, 100, 1024, 2_147_483_647],
        };
        let extreme: &[i64] = &[
            -1,
            -2_147_483_648,
            2_147_483_648,
            4_294_967_295,
            4_294_967_296,
            65_536,
            101,
            9_007_199_254_740_991,
        ];
        let value = if edge {
            *rng.pick(extreme)
        } else {
            *rng.pick(plain)
        };
        // Out-of-schema integers would be refused by the API server; they
        // only appear in edgy objects (a file may still carry them).
        let value = if edge {
            value
        } else {
            clamp(value, min, max, int32)
        };
        json!(value)
    }

    pub fn number(&self, _field: &str, edge: bool, rng: &mut Rng) -> Value {
        let pool: &[f64] = if edge {
            &[-1.0, 100.1, 1e9, -0.0001, f64::MAX]
        } else {
            &[0.0, 0.5, 1.0, 12.5, 50.0, 99.9999, 100.0]
        };
        json!(*rng.pick(pool))
    }
}

fn clamp(value: i64, min: Option<f64>, max: Option<f64>, int32: bool) -> i64 {
    let mut v = value;
    if int32 {
        v = v.clamp(i64::from(i32::MIN), i64::from(i32::MAX));
    }
    if let Some(min) = min {
        v = v.max(min as i64);
    }
    if let Some(max) = max {
        v = v.min(max as i64);
    }
    v
}

/// A long but otherwise ordinary value: repeated pool entries, or for
/// regexes a deep but bounded expression.
fn long_value(field: &str, rng: &mut Rng) -> String {
    let (plain, _) = string_pools(field);
    let unit = rng.pick(plain).to_string();
    let times = 20 + rng.below(200);
    match field {
        "regex" | "match" => format!("({})", vec!["[a-z0-9]{1,8}"; times].join("|")),
        _ if plain == DURATIONS || plain == ADDRESSES || plain == HOSTS => unit,
        _ => unit.repeat(times.min(253 / unit.len().max(1)).max(1)),
    }
}
