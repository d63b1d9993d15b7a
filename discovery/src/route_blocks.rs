//! Route configurations encoded from shared blocks of virtual hosts.
//!
//! A route configuration of 1,000 services is mostly virtual hosts that
//! every view of a namespace holds alike (the translator shares them by
//! `Arc`); a view selected by a `sourceLabels` rule differs in a few. The
//! hosts are cut into blocks at boundaries that depend only on host names
//! (so one host more or less moves no other boundary), each block is
//! encoded once per generation, and a view's configuration is its own
//! fields around references to the blocks, in the order prost encodes a
//! whole configuration (so the bytes, and versions, are the same). Blocks equal to the
//! previous generation's keep their bytes: protobuf maps encode in hash
//! order, and a fresh encoding of an unchanged host would change the
//! version and push it again.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use pilotfish_translate::emit::RouteConfigParts;
use prost::{Message, Name};

use sha2::{Digest, Sha256};

use crate::resource::{Resource, short_digest};

/// Hosts per block on average (a block starts at a host whose name hashes
/// to 0 modulo this), and at most.
const MEAN_BLOCK: u64 = 32;
const MAX_BLOCK: usize = 128;

// Field number of `virtual_hosts` in envoy/config/route/v3/route.proto.
const VIRTUAL_HOSTS: u32 = 2;

/// One encoded run of virtual hosts.
#[derive(Debug)]
struct Block {
    hosts: Vec<Arc<VirtualHost>>,
    bytes: Bytes,
    /// Hashed once, for the versions of every configuration holding it.
    digest: [u8; 32],
}

/// The blocks of the newest generation that encoded routes, and those of
/// the one before it (for reuse of equal bytes). Bounded by two
/// generations' hosts.
#[derive(Debug, Default)]
pub struct RouteBlocks {
    state: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    version: u64,
    /// This generation's blocks by the addresses of their hosts (which the
    /// blocks keep alive, so an address is not reused while listed).
    current: HashMap<Vec<usize>, Arc<Block>>,
    /// The previous generation's blocks by their first host's name.
    previous: HashMap<String, Vec<Arc<Block>>>,
}

impl RouteBlocks {
    /// Encodes `configs` of generation `version`, each as its own fields
    /// followed by shared blocks of its virtual hosts.
    pub fn encode(&self, version: u64, configs: Vec<RouteConfigParts>) -> Vec<(String, Resource)> {
        configs
            .into_iter()
            .map(|parts| {
                // In field order, as prost encodes the whole: the name
                // (field 1), the hosts (2), then every later field.
                let mut rest = parts.config;
                rest.virtual_hosts.clear();
                let name = std::mem::take(&mut rest.name);
                let head = RouteConfiguration {
                    name: name.clone(),
                    ..Default::default()
                };
                let blocks: Vec<Arc<Block>> = cut(&parts.virtual_hosts)
                    .map(|hosts| self.block(version, hosts))
                    .collect();
                let (head, rest) = (head.encode_to_vec(), rest.encode_to_vec());
                let digests = blocks.iter().map(|b| &b.digest[..]);
                let resource_version = short_digest(
                    std::iter::once(&head[..])
                        .chain(digests)
                        .chain(std::iter::once(&rest[..])),
                );
                let mut pieces = vec![Bytes::from(head)];
                pieces.extend(blocks.iter().map(|b| b.bytes.clone()));
                pieces.push(Bytes::from(rest));
                let resource = Resource::with_version(
                    RouteConfiguration::type_url(),
                    pieces,
                    resource_version,
                );
                (name, resource)
            })
            .collect()
    }

    /// The block of `hosts` for `version`: this generation's if encoded,
    /// else the previous generation's if equal, else encoded now.
    fn block(&self, version: u64, hosts: &[Arc<VirtualHost>]) -> Arc<Block> {
        let key: Vec<usize> = hosts.iter().map(|h| Arc::as_ptr(h) as usize).collect();
        let reusable = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if version > state.version {
                state.advance(version);
            }
            if version < state.version {
                // A late build of an older generation: encoded alone.
                None
            } else if let Some(block) = state.current.get(&key) {
                return block.clone();
            } else {
                state.previous_equal(hosts)
            }
        };
        let (bytes, digest) = reusable.unwrap_or_else(|| {
            let bytes = encode_hosts(hosts);
            let digest = Sha256::digest(&bytes).into();
            (bytes, digest)
        });
        let block = Arc::new(Block {
            hosts: hosts.to_vec(),
            bytes,
            digest,
        });
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.version != version {
            return block;
        }
        state.current.entry(key).or_insert(block).clone()
    }
}

impl Generations {
    fn advance(&mut self, version: u64) {
        let mut previous: HashMap<String, Vec<Arc<Block>>> = HashMap::new();
        for block in std::mem::take(&mut self.current).into_values() {
            if let Some(first) = block.hosts.first() {
                previous.entry(first.name.clone()).or_default().push(block);
            }
        }
        self.previous = previous;
        self.version = version;
    }

    /// The bytes (and digest) of a previous block holding hosts equal to
    /// `hosts`.
    fn previous_equal(&self, hosts: &[Arc<VirtualHost>]) -> Option<(Bytes, [u8; 32])> {
        let first = hosts.first()?;
        self.previous
            .get(&first.name)?
            .iter()
            .find(|block| {
                block.hosts.len() == hosts.len()
                    && block
                        .hosts
                        .iter()
                        .zip(hosts)
                        .all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
            })
            .map(|block| (block.bytes.clone(), block.digest))
    }
}

/// `hosts` in blocks: a block ends before a host whose name marks a
/// boundary, or at `MAX_BLOCK` hosts.
fn cut(hosts: &[Arc<VirtualHost>]) -> impl Iterator<Item = &[Arc<VirtualHost>]> {
    let mut rest = hosts;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .iter()
            .enumerate()
            .skip(1)
            .take(MAX_BLOCK - 1)
            .find(|(_, host)| starts_block(&host.name))
            .map_or(rest.len().min(MAX_BLOCK), |(i, _)| i);
        let (block, tail) = rest.split_at(end);
        rest = tail;
        Some(block)
    })
}

fn starts_block(name: &str) -> bool {
    // SipHash with fixed keys: the same boundaries in every process.
    let mut hasher = DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish().is_multiple_of(MEAN_BLOCK)
}

/// `hosts` as `virtual_hosts` fields of a route configuration.
fn encode_hosts(hosts: &[Arc<VirtualHost>]) -> Bytes {
    let mut buf = Vec::new();
    for host in hosts {
        prost::encoding::message::encode(VIRTUAL_HOSTS, host.as_ref(), &mut buf);
    }
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;

    fn host(name: &str) -> Arc<VirtualHost> {
        // Two filters: a map prost encodes in hash order.
        let per_filter = ["fault", "cors"]
            .map(|f| {
                (
                    f.to_string(),
                    Any {
                        type_url: format!("t/{f}"),
                        value: vec![1],
                    },
                )
            })
            .into();
        Arc::new(VirtualHost {
            name: name.into(),
            domains: vec![name.into()],
            typed_per_filter_config: per_filter,
            ..Default::default()
        })
    }

    fn parts(hosts: &[Arc<VirtualHost>]) -> RouteConfigParts {
        RouteConfigParts {
            config: RouteConfiguration {
                name: "9080".into(),
                validate_clusters: Some(Default::default()),
                ..Default::default()
            },
            virtual_hosts: hosts.to_vec(),
        }
    }

    fn hosts(n: usize) -> Vec<Arc<VirtualHost>> {
        (0..n).map(|i| host(&format!("svc-{i}:9080"))).collect()
    }

    #[test]
    fn a_configuration_from_blocks_decodes_as_the_whole_configuration() {
        let hosts = hosts(300);
        let blocks = RouteBlocks::default();
        let [(name, resource)] =
            <[_; 1]>::try_from(blocks.encode(1, vec![parts(&hosts)])).expect("one configuration");
        assert_eq!(name, "9080");
        assert!(resource.pieces().len() > 3, "cut into blocks");
        let decoded = RouteConfiguration::decode(resource.value().as_ref()).expect("valid");
        assert_eq!(decoded, parts(&hosts).assemble());
    }

    #[test]
    fn views_differing_in_one_host_share_every_other_block() {
        let shared = hosts(300);
        let mut selected = shared.clone();
        selected[150] = Arc::new(VirtualHost {
            domains: vec!["other".into()],
            ..(*selected[150]).clone()
        });
        let blocks = RouteBlocks::default();
        let encoded = blocks.encode(1, vec![parts(&shared), parts(&selected)]);
        let (one, two) = (&encoded[0].1, &encoded[1].1);
        assert_eq!(one.pieces().len(), two.pieces().len());
        let blocks = |r: &Resource| r.pieces()[1..r.pieces().len() - 1].to_vec();
        let distinct = blocks(one)
            .iter()
            .zip(&blocks(two))
            .filter(|(a, b)| a.as_ptr() != b.as_ptr())
            .count();
        assert_eq!(distinct, 1, "only the block holding the changed host");
    }

    #[test]
    fn equal_hosts_of_the_next_generation_keep_their_bytes_and_version() {
        let blocks = RouteBlocks::default();
        let first = blocks.encode(1, vec![parts(&hosts(100))]);
        // The next generation's hosts: equal, but built anew.
        let second = blocks.encode(2, vec![parts(&hosts(100))]);
        assert_eq!(first[0].1.version(), second[0].1.version());
        let mut changed = hosts(100);
        changed[0] = host("new:9080");
        let third = blocks.encode(3, vec![parts(&changed)]);
        assert_ne!(second[0].1.version(), third[0].1.version());
        assert_eq!(
            second[0].1.pieces().iter().rev().nth(1).map(|b| b.as_ptr()),
            third[0].1.pieces().iter().rev().nth(1).map(|b| b.as_ptr()),
            "the unchanged last block is reused"
        );
    }

    #[test]
    fn one_host_more_moves_no_other_block_boundary() {
        let before = hosts(400);
        let mut after = before.clone();
        after.insert(200, host("inserted:9080"));
        let blocks = |hosts: &[Arc<VirtualHost>]| {
            cut(hosts)
                .map(|b| b.iter().map(|h| h.name.clone()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        let (a, b) = (blocks(&before), blocks(&after));
        assert!(a.iter().all(|block| block.len() <= MAX_BLOCK));
        assert!(a.len() > 4, "{a:?}");
        let new = b.iter().filter(|block| !a.contains(block)).count();
        assert!(
            new <= 2,
            "only the block around the new host changes: {new}"
        );
    }
}
