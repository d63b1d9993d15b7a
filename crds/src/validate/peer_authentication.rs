//! PeerAuthentication checks (filled in below).

use super::Report;
use crate::peer_authentication::PeerAuthenticationSpec;

pub(super) fn check(_spec: &PeerAuthenticationSpec, _r: &mut Report) {}
