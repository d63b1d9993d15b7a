//! Small constructors for the protobuf well-known types and the Envoy
//! building blocks used everywhere (addresses, ADS config source, typed
//! extension configs), so no module repeats them.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, CidrRange, ConfigSource, SocketAddress, address,
    config_source, socket_address,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration, UInt32Value};
use prost::{Message, Name};

use crate::diagnostics::Diagnostic;

pub fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Always below 1e9, so it fits.
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Parses an Istio (Go-style) duration found at `field` of `object`; a bad
/// value becomes an InvalidField diagnostic naming both.
pub fn parse_duration(text: &str, object: &str, field: &str) -> Result<Duration, Diagnostic> {
    pilotfish_crds::duration::parse_duration(text)
        .map(duration)
        .map_err(|message| Diagnostic::invalid(object, field, message))
}

pub fn zero_duration() -> Duration {
    Duration::default()
}

pub fn seconds(secs: u64) -> Duration {
    duration(std::time::Duration::from_secs(secs))
}

pub fn u32_value(value: u32) -> UInt32Value {
    UInt32Value { value }
}

pub fn bool_value(value: bool) -> BoolValue {
    BoolValue { value }
}

/// Clamps a signed Istio count (connection pool sizes...) into a UInt32Value.
pub fn count(value: i32) -> UInt32Value {
    u32_value(u32::try_from(value).unwrap_or(0))
}

pub fn any<T: Message + Name>(message: T) -> Any {
    envoy_types::util::pack_any(message)
}

/// Decodes a packed message; used by tests and by callers inspecting output.
pub fn unpack<T: Message + Name + Default>(any: &Any) -> Option<T> {
    if any.type_url != T::type_url() {
        return None;
    }
    T::decode(any.value.as_slice()).ok()
}

/// Istio percentages are doubles in 0..=100; Envoy wants a fraction of a million.
pub fn percent(value: f64) -> FractionalPercent {
    let clamped = if value.is_finite() {
        value.clamp(0.0, 100.0)
    } else {
        0.0
    };
    FractionalPercent {
        // 0..=100 * 10_000 always fits in u32.
        numerator: (clamped * 10_000.0).round() as u32,
        denominator: DenominatorType::Million as i32,
    }
}

/// Legacy integer percentages (`percent: 50`).
pub fn integer_percent(value: i64) -> FractionalPercent {
    FractionalPercent {
        numerator: u32::try_from(value.clamp(0, 100)).unwrap_or(0),
        denominator: DenominatorType::Hundred as i32,
    }
}

/// Everything comes over the one ADS stream.
pub fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

pub fn socket_address(address: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// A single-address CIDR: /32 for IPv4, /128 for IPv6.
pub fn host_cidr(ip: IpAddr) -> CidrRange {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(u32_value(len)),
    }
}

/// A CIDR range from a network (host bits already cleared).
pub fn cidr(net: ipnet::IpNet) -> CidrRange {
    CidrRange {
        address_prefix: net.network().to_string(),
        prefix_len: Some(u32_value(u32::from(net.prefix_len()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_split_seconds_and_nanos() {
        let d = duration(std::time::Duration::from_millis(1500));
        assert_eq!((d.seconds, d.nanos), (1, 500_000_000));
    }

    #[test]
    fn percent_is_a_fraction_of_a_million() {
        assert_eq!(percent(12.5).numerator, 125_000);
        assert_eq!(percent(250.0).numerator, 1_000_000);
        assert_eq!(percent(f64::NAN).numerator, 0);
    }

    #[test]
    fn host_cidrs_have_full_prefix_length() {
        let v4 = host_cidr("10.0.0.1".parse().unwrap());
        let v6 = host_cidr("fd00::1".parse().unwrap());
        assert_eq!(v4.prefix_len, Some(u32_value(32)));
        assert_eq!(v6.prefix_len, Some(u32_value(128)));
    }
}
