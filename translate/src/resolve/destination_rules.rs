//! Every DestinationRule of the generation in precedence order, its host
//! resolved: a view merges the ones that apply to it without sorting or
//! resolving again.

use pilotfish_crds::{ConfigObject, ConfigSpec};

use crate::hosts;

#[derive(Clone, Debug)]
pub(crate) struct ResolvedDestinationRule {
    /// Position in the mesh's config.
    pub config: usize,
    /// `spec.host`, resolved against the object's namespace.
    pub host: String,
}

pub(crate) fn table(config: &[ConfigObject], domain_suffix: &str) -> Vec<ResolvedDestinationRule> {
    let mut rules: Vec<(&ConfigObject, ResolvedDestinationRule)> = config
        .iter()
        .enumerate()
        .filter_map(|(position, object)| match &object.spec {
            ConfigSpec::DestinationRule(spec) => Some((
                object,
                ResolvedDestinationRule {
                    config: position,
                    host: hosts::resolve(&spec.host, &object.meta.namespace, domain_suffix),
                },
            )),
            _ => None,
        })
        .collect();
    rules.sort_by(|a, b| a.0.precedence().cmp(&b.0.precedence()));
    rules.into_iter().map(|(_, rule)| rule).collect()
}
