//! AuthorizationPolicy checks (filled in below).

use super::Report;
use crate::authorization_policy::AuthorizationPolicySpec;

pub(super) fn check(_spec: &AuthorizationPolicySpec, _r: &mut Report) {}
