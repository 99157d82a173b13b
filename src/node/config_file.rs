//! The node's TOML configuration file: parsing, Corosync's defaults and derivations, and
//! validation (ARCHITECTURE.md §2.2, PROTOCOL.md §1.12).
//!
//! Option names follow corosync.conf(5). Bad configuration stops the node with one line that
//! names the file, the key and the reason ([`ConfigError`]), because an operator reading a
//! journal should not have to decode a multi-line parser report or guess which `[[node]]` was
//! meant.
//!
//! The file is read in two steps: serde fills private "raw" structs whose fields are all
//! optional (so a missing key gets our message, not serde's), then those are resolved into
//! the public [`FileConfig`] with every default applied and every value checked.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ids::NodeId;
use crate::node::busy_poll;
use crate::totem::config::{Config, MINIMUM_TIMEOUT};
use crate::totem::wire::MEMBERS_MAX;

/// Default `crypto.authkey`.
pub const DEFAULT_AUTHKEY: &str = "/etc/totemcast/authkey";
/// Default `ipc.socket`: where clients find the node when nothing else names a socket.
pub const DEFAULT_SOCKET: &str = "/run/totemcast/totemcast.sock";
/// Default `system.state_dir` (holds the persisted ring seq).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/totemcast";
/// Port of the derived default `totem.mcastaddr` (Corosync's `mcastport` default).
pub const DEFAULT_MCAST_PORT: u16 = 5405;
/// Longest `totem.cluster_name`, in bytes.
pub const CLUSTER_NAME_MAX: usize = 64;

/// A complete, commented configuration: a 3-node cluster on loopback.
pub const EXAMPLE: &str = r#"# totemcast node configuration. Option names and meanings follow corosync.conf(5).
# Every node of the cluster reads the same file; a node finds its own [[node]] entry by its
# address, or is told with `totemcast node --nodeid N`.

[totem]
# Required, 1 to 64 bytes. Also salts the key derivation: clusters that share an authkey
# still cannot read each other's traffic.
cluster_name = "demo"
# "udpu": unicast to every node (default). "udp": IP multicast to mcastaddr.
transport = "udpu"
# Only used with transport = "udp". The default is 239.192.X.Y:5405 (ff15::XY for IPv6
# nodes), X.Y derived from a hash of cluster_name.
# mcastaddr = "239.192.1.1:5405"

# Timers are in milliseconds; no timer may be below 30 ms.
token = 3000                    # without the token this long, it is declared lost
token_coefficient = 650         # added to token per node beyond two (3 or more nodes):
                                # these 3 nodes run with a token of 3650 ms
token_retransmits_before_loss_const = 4
# token_retransmit = 869        # default: token / (token_retransmits_before_loss_const + 0.2)
# hold = 685                    # default: token_retransmit * 0.8 - 10 ms, at least 30 ms
join = 50                       # period of join messages while forming a ring
send_join = 0                   # random delay (0 to send_join) before each join; 0 = none
# consensus = 4380              # default: 1.2 * token
merge = 200                     # how often an idle ring looks for others to merge with
fail_recv_const = 2500          # token rotations without progress before a node is dropped
seqno_unchanged_const = 30      # idle rotations before the token is held
miss_count_const = 5            # rotations a gap persists before retransmission is asked
window_size = 50                # messages all nodes may send per token rotation
max_messages = 17               # messages one node may send per token visit
netmtu = 1500                   # link MTU in bytes (a cluster of one node sends no datagram)
max_message_size = 67108864     # largest application message in bytes (64 MiB)

[crypto]
# "aes256-gcm" (default) or "chacha20-poly1305"; "none" turns encryption and
# authentication off and must be written explicitly.
cipher = "aes256-gcm"
# Shared secret made by `totemcast keygen`; a relative path is relative to this file.
authkey = "/etc/totemcast/authkey"

[ipc]
# Clients connect here; a relative path is relative to this file.
socket = "/run/totemcast/totemcast.sock"
# Users and groups allowed to connect besides root (others get CS_ERR_ACCESS).
allowed_uids = []
allowed_gids = []

[system]
# Where the ring sequence number survives restarts; relative to this file when relative.
state_dir = "/var/lib/totemcast"
# Microseconds the node keeps polling for work (yielding the CPU in between) before it
# sleeps: a request that comes meanwhile needs no wake-up. 0: sleep at once.
busy_poll = 50

[logging]
debug = false
format = "text"                 # or "json"

# One entry per node: a unique nodeid (1 to 4294967295) and a unique ip:port.
[[node]]
nodeid = 1
addr = "127.0.0.1:5405"
name = "alpha"

[[node]]
nodeid = 2
addr = "127.0.0.1:5406"
name = "beta"

[[node]]
nodeid = 3
addr = "127.0.0.1:5407"
name = "gamma"
"#;

/// A configuration error: one line naming the file, the key and the reason, e.g.
/// `totemcast.toml: totem.token: 10 ms is below the minimum of 30 ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    /// The standard line for a bad `key` in the file at `origin`; other modules use it for
    /// problems found later (e.g. an unreadable `crypto.authkey`).
    #[must_use]
    pub fn at(origin: &Path, key: &str, reason: impl fmt::Display) -> ConfigError {
        ConfigError::line(format!("{}: {key}: {reason}", origin.display()))
    }

    /// The message, without a trailing newline.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Guarantees the one-line promise whatever went into the message (a path or a parser
    /// message may contain line breaks).
    fn line(message: String) -> ConfigError {
        if message.contains(['\n', '\r']) {
            let joined: Vec<&str> = message.lines().map(str::trim).collect();
            ConfigError(joined.join(" "))
        } else {
            ConfigError(message)
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for crate::Error {
    fn from(error: ConfigError) -> crate::Error {
        crate::Error::InvalidParam(error.0.into())
    }
}

/// How datagrams reach the other nodes (`totem.transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `"udpu"`: a unicast copy to every node.
    Udpu,
    /// `"udp"`: one IP multicast datagram to `totem.mcastaddr`.
    Udp,
}

impl Transport {
    /// The name used in the file.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Udpu => "udpu",
            Transport::Udp => "udp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The datagram cipher named by `crypto.cipher`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CipherName {
    /// `"aes256-gcm"` (the default).
    Aes256Gcm,
    /// `"chacha20-poly1305"`.
    ChaCha20Poly1305,
    /// `"none"`: no encryption and no authentication; only when written explicitly.
    None,
}

impl CipherName {
    /// The name used in the file.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            CipherName::Aes256Gcm => "aes256-gcm",
            CipherName::ChaCha20Poly1305 => "chacha20-poly1305",
            CipherName::None => "none",
        }
    }
}

impl fmt::Display for CipherName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The log line format (`logging.format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// `"text"`: human-readable lines (the default).
    Text,
    /// `"json"`: one JSON object per line.
    Json,
}

impl LogFormat {
    /// The name used in the file.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[totem]`: the protocol's settings with Corosync's defaults and derivations applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Totem {
    /// `cluster_name`: 1 to 64 bytes; salts the key derivation.
    pub cluster_name: String,
    /// `transport`.
    pub transport: Transport,
    /// `mcastaddr`: the multicast group; `Some` exactly when `transport` is [`Transport::Udp`].
    pub mcastaddr: Option<SocketAddr>,
    /// The effective token timeout: `token` plus `token_coefficient` per node beyond two
    /// when there are at least 3 nodes (what Corosync runs with and reports).
    pub token: Duration,
    /// `token_coefficient`.
    pub token_coefficient: Duration,
    /// `token_retransmits_before_loss_const`.
    pub token_retransmits_before_loss_const: u32,
    /// `token_retransmit`, explicit or derived from the effective token.
    pub token_retransmit: Duration,
    /// `hold`, explicit or derived from `token_retransmit`.
    pub hold: Duration,
    /// `join`.
    pub join: Duration,
    /// `send_join`.
    pub send_join: Duration,
    /// `consensus`, explicit or derived from the effective token.
    pub consensus: Duration,
    /// `merge`.
    pub merge: Duration,
    /// `fail_recv_const`.
    pub fail_recv_const: u32,
    /// `seqno_unchanged_const`.
    pub seqno_unchanged_const: u32,
    /// `miss_count_const`.
    pub miss_count_const: u32,
    /// `window_size`.
    pub window_size: u32,
    /// `max_messages`.
    pub max_messages: u32,
    /// `netmtu`: the link MTU as written (the core gets less; see [`FileConfig::core_config`]).
    pub netmtu: usize,
    /// `max_message_size`: the largest application message, in bytes.
    pub max_message_size: usize,
}

/// `[crypto]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crypto {
    /// `cipher`.
    pub cipher: CipherName,
    /// `authkey`, resolved against the configuration file's directory.
    pub authkey: PathBuf,
}

/// `[ipc]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipc {
    /// `socket`, resolved against the configuration file's directory.
    pub socket: PathBuf,
    /// `allowed_uids`, sorted and without duplicates (root is always allowed).
    pub allowed_uids: Vec<u32>,
    /// `allowed_gids`, sorted and without duplicates.
    pub allowed_gids: Vec<u32>,
}

/// `[system]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct System {
    /// `state_dir`, resolved against the configuration file's directory.
    pub state_dir: PathBuf,
    /// `busy_poll` (µs): how long the node polls for work before it sleeps.
    pub busy_poll: Duration,
}

/// `[logging]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logging {
    /// `debug`.
    pub debug: bool,
    /// `format`.
    pub format: LogFormat,
}

/// One `[[node]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// `nodeid`: unique, never 0.
    pub nodeid: NodeId,
    /// `addr`: unique; every node has the same address family.
    pub addr: SocketAddr,
    /// `name`, if given (unique when given).
    pub name: Option<String>,
}

/// A parsed, defaulted and validated configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileConfig {
    /// The file as it was named to [`load`] or [`parse`]; later errors start with it.
    pub origin: PathBuf,
    /// `[totem]`.
    pub totem: Totem,
    /// `[crypto]`.
    pub crypto: Crypto,
    /// `[ipc]`.
    pub ipc: Ipc,
    /// `[system]`.
    pub system: System,
    /// `[logging]`.
    pub logging: Logging,
    /// The `[[node]]` entries in file order (at least one).
    pub nodes: Vec<NodeEntry>,
}

/// Reads and checks the configuration file at `path`. Relative paths inside it are resolved
/// against the file's directory, made absolute so that a later change of working directory
/// does not move them.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError::line(format!("{}: cannot read: {error}", path.display())))?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = absolute.parent().unwrap_or(Path::new(""));
    parse_in(&text, path, dir)
}

/// Parses and checks configuration `text`. `origin` names the file in messages, and relative
/// paths in the text are resolved against its directory (left relative when `origin` is).
pub fn parse(text: &str, origin: &Path) -> Result<FileConfig, ConfigError> {
    parse_in(text, origin, origin.parent().unwrap_or(Path::new("")))
}

fn parse_in(text: &str, origin: &Path, dir: &Path) -> Result<FileConfig, ConfigError> {
    let raw: RawFile = toml::from_str(text).map_err(|error| toml_error(&error, text, origin))?;
    let ctx = Ctx { origin, dir };
    let nodes = resolve_nodes(&ctx, raw.node.unwrap_or_default())?;
    let totem = resolve_totem(&ctx, raw.totem, &nodes)?;
    let config = FileConfig {
        origin: origin.to_path_buf(),
        totem,
        crypto: resolve_crypto(&ctx, raw.crypto)?,
        ipc: resolve_ipc(&ctx, raw.ipc)?,
        system: resolve_system(&ctx, raw.system)?,
        logging: resolve_logging(&ctx, &raw.logging)?,
        nodes,
    };
    // The core's own checks are the last word; the datagram overhead is not known until the
    // cipher is set up, so the driver checks again through `core_config` with it.
    config.core_config(config.nodes[0].nodeid, 0)?;
    Ok(config)
}

impl FileConfig {
    /// The `[[node]]` entry with `id`.
    #[must_use]
    pub fn node(&self, id: NodeId) -> Option<&NodeEntry> {
        self.nodes.iter().find(|node| node.nodeid == id)
    }

    /// Every nodeid, sorted.
    #[must_use]
    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.nodes.iter().map(|node| node.nodeid).collect();
        ids.sort_unstable();
        ids
    }

    /// Bytes of IP and UDP header in front of every datagram (all nodes share one family).
    #[must_use]
    pub fn ip_udp_header_len(&self) -> usize {
        if self.nodes[0].addr.is_ipv6() { 48 } else { 28 }
    }

    /// This node's id: `requested` (`--nodeid`) when given, which must be in the list;
    /// otherwise the one node whose address belongs to this machine.
    ///
    /// An address is taken as local when a UDP socket can be bound to it, which is what the
    /// node will do with it anyway (a host with `ip_nonlocal_bind` set fools this).
    pub fn select_local_node(&self, requested: Option<u32>) -> Result<NodeId, ConfigError> {
        if let Some(id) = requested {
            let id = NodeId(id);
            return match self.node(id) {
                Some(_) => Ok(id),
                None => Err(ConfigError::at(
                    &self.origin,
                    "--nodeid",
                    format!(
                        "{id} is not the nodeid of any [[node]] (nodeids: {})",
                        join_ids(&self.node_ids())
                    ),
                )),
            };
        }
        let mut checked: Vec<(IpAddr, bool)> = Vec::new();
        let mut local = Vec::new();
        for node in &self.nodes {
            let ip = node.addr.ip();
            let is_local = if let Some(&(_, known)) = checked.iter().find(|(seen, _)| *seen == ip) {
                known
            } else {
                let bound = UdpSocket::bind((ip, 0)).is_ok();
                checked.push((ip, bound));
                bound
            };
            if is_local {
                local.push(node.nodeid);
            }
        }
        let origin = self.origin.display();
        match local.as_slice() {
            [one] => Ok(*one),
            [] => Err(ConfigError::line(format!(
                "{origin}: no [[node]] addr is an address of this machine; pass --nodeid"
            ))),
            several => {
                let mut several = several.to_vec();
                several.sort_unstable();
                Err(ConfigError::line(format!(
                    "{origin}: several [[node]] entries are local (nodeids {}); pass --nodeid",
                    join_ids(&several)
                )))
            }
        }
    }

    /// The protocol core's configuration for node `node`: Corosync's defaults for the
    /// effective token, then the file's values. The core's `netmtu` is the file's less the
    /// IP/UDP header and `datagram_overhead` (what the cipher adds to each datagram).
    /// `ring_seq_start`, `message_number_start` and `rng_seed` keep their defaults: the
    /// driver knows the persisted state and the incarnation.
    pub fn core_config(
        &self,
        node: NodeId,
        datagram_overhead: usize,
    ) -> Result<Config, ConfigError> {
        if self.node(node).is_none() {
            return Err(ConfigError::at(
                &self.origin,
                "node",
                format!(
                    "nodeid {node} is not in the [[node]] list (nodeids: {})",
                    join_ids(&self.node_ids())
                ),
            ));
        }
        let totem = &self.totem;
        let mut config = Config::with_token(node, self.node_ids(), totem.token);
        config.token_retransmit = totem.token_retransmit;
        config.hold = totem.hold;
        config.join_timeout = totem.join;
        config.send_join = totem.send_join;
        config.consensus_timeout = totem.consensus;
        config.merge_timeout = totem.merge;
        config.fail_recv_const = totem.fail_recv_const;
        config.seqno_unchanged_const = totem.seqno_unchanged_const;
        config.miss_count_const = totem.miss_count_const;
        config.window_size = totem.window_size;
        config.max_messages = totem.max_messages;
        let header = self.ip_udp_header_len();
        config.netmtu = totem
            .netmtu
            .saturating_sub(header)
            .saturating_sub(datagram_overhead);
        // The core carries the service's header too.
        config.message_size_max = totem.max_message_size + crate::api::SERVICE_HEADER_MAX;
        // The core's netmtu is not the one written: errors say it in the file's terms.
        let netmtu_error = |range: &str| {
            format!(
                "netmtu: {} leaves {} bytes per datagram after {header} bytes of IP/UDP header \
                 and {datagram_overhead} of crypto overhead; the protocol needs {range}",
                totem.netmtu, config.netmtu
            )
        };
        if config.netmtu > crate::totem::config::NETMTU_MAX {
            let range = format!("at most {}", crate::totem::config::NETMTU_MAX);
            return Err(ConfigError::line(format!(
                "{}: totem.{}",
                self.origin.display(),
                netmtu_error(&range)
            )));
        }
        config.validate().map_err(|error| {
            let detail = error.detail();
            // The core names its value differently from the file.
            let detail = if let Some(rest) = detail.strip_prefix("message_size_max") {
                format!("max_message_size{rest}")
            } else if let Some((_, range)) = detail
                .strip_prefix("netmtu:")
                .and_then(|rest| rest.split_once(" is outside "))
            {
                netmtu_error(range)
            } else {
                detail.to_owned()
            };
            ConfigError::line(format!("{}: totem.{detail}", self.origin.display()))
        })?;
        if self.nodes.len() == 1 {
            // A cluster of this node alone never sends a datagram (its ring neither seals nor
            // sends): packets as large as the core makes spare a large message its fragments.
            config.netmtu = crate::totem::config::PACKET_BYTES_MAX;
        }
        Ok(config)
    }
}

// ---------------------------------------------------------------------------------------
// The raw file, as serde sees it.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawFile {
    totem: RawTotem,
    crypto: RawCrypto,
    ipc: RawIpc,
    system: RawSystem,
    logging: RawLogging,
    node: Option<Vec<RawNode>>,
}

// Timers are u32 milliseconds as in Corosync, which also keeps every derivation far from
// overflowing a Duration.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawTotem {
    cluster_name: Option<String>,
    transport: Option<String>,
    mcastaddr: Option<String>,
    token: Option<u32>,
    token_coefficient: Option<u32>,
    token_retransmits_before_loss_const: Option<u32>,
    token_retransmit: Option<u32>,
    hold: Option<u32>,
    join: Option<u32>,
    send_join: Option<u32>,
    consensus: Option<u32>,
    merge: Option<u32>,
    fail_recv_const: Option<u32>,
    seqno_unchanged_const: Option<u32>,
    miss_count_const: Option<u32>,
    window_size: Option<u32>,
    max_messages: Option<u32>,
    netmtu: Option<usize>,
    max_message_size: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawCrypto {
    cipher: Option<String>,
    authkey: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawIpc {
    socket: Option<String>,
    allowed_uids: Option<Vec<u32>>,
    allowed_gids: Option<Vec<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSystem {
    state_dir: Option<String>,
    busy_poll: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLogging {
    debug: Option<bool>,
    format: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    nodeid: Option<u32>,
    addr: Option<String>,
    name: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Resolving the raw values.

struct Ctx<'a> {
    origin: &'a Path,
    dir: &'a Path,
}

impl Ctx<'_> {
    fn error(&self, key: &str, reason: impl fmt::Display) -> ConfigError {
        ConfigError::at(self.origin, key, reason)
    }

    fn path(
        &self,
        key: &str,
        value: Option<String>,
        default: &str,
    ) -> Result<PathBuf, ConfigError> {
        let value = value.unwrap_or_else(|| default.to_owned());
        if value.is_empty() {
            return Err(self.error(key, "must not be empty"));
        }
        let path = Path::new(&value);
        Ok(if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        })
    }
}

fn resolve_nodes(ctx: &Ctx<'_>, raw: Vec<RawNode>) -> Result<Vec<NodeEntry>, ConfigError> {
    if raw.is_empty() {
        return Err(ctx.error(
            "node",
            "at least one [[node]] entry (nodeid and addr) is required",
        ));
    }
    if raw.len() > MEMBERS_MAX {
        return Err(ctx.error(
            "node",
            format!("{} entries exceed the maximum of {MEMBERS_MAX}", raw.len()),
        ));
    }
    let mut nodes: Vec<NodeEntry> = Vec::with_capacity(raw.len());
    for (index, entry) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("node[{index}].{field}");
        let nodeid = match entry.nodeid {
            None => {
                return Err(ctx.error(
                    &key("nodeid"),
                    "missing (every [[node]] needs a nodeid from 1 to 4294967295)",
                ));
            }
            Some(0) => {
                return Err(ctx.error(
                    &key("nodeid"),
                    "0 is not allowed (nodeids are 1 to 4294967295)",
                ));
            }
            Some(id) => NodeId(id),
        };
        if let Some(other) = nodes.iter().position(|node| node.nodeid == nodeid) {
            return Err(ctx.error(
                &key("nodeid"),
                format!("{nodeid} is also the nodeid of node[{other}]"),
            ));
        }
        let Some(text) = entry.addr else {
            return Err(ctx.error(
                &key("addr"),
                "missing (every [[node]] needs an ip:port, e.g. 127.0.0.1:5405)",
            ));
        };
        let addr = parse_node_addr(&text).map_err(|reason| ctx.error(&key("addr"), reason))?;
        if let Some(other) = nodes.iter().position(|node| node.addr == addr) {
            return Err(ctx.error(
                &key("addr"),
                format!("{addr} is also the addr of node[{other}]"),
            ));
        }
        if let Some(first) = nodes.first()
            && first.addr.is_ipv6() != addr.is_ipv6()
        {
            return Err(ctx.error(
                &key("addr"),
                format!(
                    "{addr} is {} but node[0].addr is {}; all nodes must use one address family",
                    family(addr.ip()),
                    family(first.addr.ip())
                ),
            ));
        }
        if let Some(name) = &entry.name {
            if name.is_empty() {
                return Err(ctx.error(&key("name"), "must not be empty (leave it out instead)"));
            }
            if let Some(other) = nodes
                .iter()
                .position(|node| node.name.as_ref() == Some(name))
            {
                return Err(ctx.error(
                    &key("name"),
                    format!("{name:?} is also the name of node[{other}]"),
                ));
            }
        }
        nodes.push(NodeEntry {
            nodeid,
            addr,
            name: entry.name,
        });
    }
    Ok(nodes)
}

fn parse_node_addr(text: &str) -> Result<SocketAddr, String> {
    let Ok(addr) = text.parse::<SocketAddr>() else {
        return Err(match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => {
                format!("{text:?} is not an address with a port (e.g. {text}:5405)")
            }
            Ok(IpAddr::V6(_)) => {
                format!("{text:?} is not an address with a port (e.g. [{text}]:5405)")
            }
            Err(_) => format!(
                "{text:?} is not an IP address with a port (e.g. 127.0.0.1:5405 or [::1]:5405); \
                 host names are not resolved"
            ),
        });
    };
    if addr.port() == 0 {
        return Err(format!("{text:?} has port 0; a node needs a fixed port"));
    }
    let ip = addr.ip();
    if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Err(format!(
            "{text:?} is not the address of one machine (unspecified, broadcast or multicast)"
        ));
    }
    Ok(addr)
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv6() { "IPv6" } else { "IPv4" }
}

fn join_ids(ids: &[NodeId]) -> String {
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    ids.join(", ")
}

/// Milliseconds for messages, with the fraction only when a derived value has one.
fn show_ms(duration: Duration) -> String {
    if duration.subsec_nanos() % 1_000_000 == 0 {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
    }
}

fn millis(value: Option<u32>, default: u32) -> Duration {
    Duration::from_millis(u64::from(value.unwrap_or(default)))
}

fn resolve_totem(ctx: &Ctx<'_>, raw: RawTotem, nodes: &[NodeEntry]) -> Result<Totem, ConfigError> {
    let cluster_name = match raw.cluster_name {
        None => {
            return Err(ctx.error(
                "totem.cluster_name",
                format!("missing (required, 1 to {CLUSTER_NAME_MAX} bytes)"),
            ));
        }
        Some(name) if name.is_empty() || name.len() > CLUSTER_NAME_MAX => {
            return Err(ctx.error(
                "totem.cluster_name",
                format!(
                    "{name:?} is {} bytes; it must be 1 to {CLUSTER_NAME_MAX}",
                    name.len()
                ),
            ));
        }
        Some(name) => name,
    };
    let transport = match raw.transport.as_deref() {
        None | Some("udpu") => Transport::Udpu,
        Some("udp") => Transport::Udp,
        Some(other) => {
            return Err(ctx.error(
                "totem.transport",
                format!("{other:?} is not a transport (\"udpu\" or \"udp\")"),
            ));
        }
    };
    let v6 = nodes[0].addr.is_ipv6();
    let explicit_mcast = match raw.mcastaddr {
        None => None,
        Some(text) => Some(
            parse_mcast_addr(&text, v6).map_err(|reason| ctx.error("totem.mcastaddr", reason))?,
        ),
    };
    let mcastaddr = match transport {
        Transport::Udp => {
            Some(explicit_mcast.unwrap_or_else(|| default_mcast_addr(&cluster_name, v6)))
        }
        Transport::Udpu => {
            if explicit_mcast.is_some() {
                tracing::warn!(
                    "{}: totem.mcastaddr is ignored with transport = \"udpu\"",
                    ctx.origin.display()
                );
            }
            None
        }
    };

    // Counts first: the derivations below divide by one of them.
    let count = |key: &str, value: Option<u32>, default: u32| -> Result<u32, ConfigError> {
        match value.unwrap_or(default) {
            0 => Err(ctx.error(key, "must be at least 1")),
            value => Ok(value),
        }
    };
    let retransmits = count(
        "totem.token_retransmits_before_loss_const",
        raw.token_retransmits_before_loss_const,
        4,
    )?;
    let fail_recv_const = count("totem.fail_recv_const", raw.fail_recv_const, 2500)?;
    let seqno_unchanged_const =
        count("totem.seqno_unchanged_const", raw.seqno_unchanged_const, 30)?;
    let miss_count_const = count("totem.miss_count_const", raw.miss_count_const, 5)?;
    let window_size = count("totem.window_size", raw.window_size, 50)?;
    let max_messages = count("totem.max_messages", raw.max_messages, 17)?;
    if max_messages > window_size {
        return Err(ctx.error(
            "totem.max_messages",
            format!("{max_messages} exceeds window_size {window_size}"),
        ));
    }
    let core_defaults = Config::with_token(NodeId(1), vec![NodeId(1)], Duration::from_secs(3));
    let window_max = core_defaults.sort_queue_capacity / 4;
    if u64::from(window_size) > window_max {
        return Err(ctx.error(
            "totem.window_size",
            format!("{window_size} exceeds the maximum of {window_max}"),
        ));
    }

    let minimum = |key: &str, value: Duration, how: &str| -> Result<(), ConfigError> {
        if value < MINIMUM_TIMEOUT {
            Err(ctx.error(
                key,
                format!(
                    "{}{how} is below the minimum of {}",
                    show_ms(value),
                    show_ms(MINIMUM_TIMEOUT)
                ),
            ))
        } else {
            Ok(())
        }
    };
    let configured_token = millis(raw.token, 3000);
    minimum("totem.token", configured_token, "")?;
    let token_coefficient = millis(raw.token_coefficient, 650);
    // Corosync grows the token with the nodelist so that larger rings, whose rotations take
    // longer, are not declared failed by a timeout tuned for two nodes.
    let token = if nodes.len() >= 3 {
        configured_token + token_coefficient * (nodes.len() as u32 - 2)
    } else {
        configured_token
    };
    let explicit = |key: &str, value: Option<u32>| -> Result<Option<Duration>, ConfigError> {
        value
            .map(|value| {
                let value = millis(Some(value), 0);
                minimum(key, value, "").map(|()| value)
            })
            .transpose()
    };
    let token_retransmit =
        if let Some(value) = explicit("totem.token_retransmit", raw.token_retransmit)? {
            value
        } else {
            // The same arithmetic as `Config::with_token`, so defaults match it exactly.
            let Some(divisor) = retransmits.checked_mul(10).and_then(|v| v.checked_add(2)) else {
                return Err(ctx.error(
                    "totem.token_retransmits_before_loss_const",
                    format!("{retransmits} is too large"),
                ));
            };
            let value = token * 10 / divisor;
            minimum(
                "totem.token_retransmit",
                value,
                &format!(
                    " (token {} / (token_retransmits_before_loss_const {retransmits} + 0.2))",
                    show_ms(token)
                ),
            )?;
            value
        };
    if token_retransmit >= token {
        return Err(ctx.error(
            "totem.token_retransmit",
            format!(
                "{} must be shorter than the token timeout ({})",
                show_ms(token_retransmit),
                show_ms(token)
            ),
        ));
    }
    let hold = explicit("totem.hold", raw.hold)?.unwrap_or_else(|| {
        (token_retransmit * 8 / 10)
            .saturating_sub(Duration::from_millis(10))
            .max(MINIMUM_TIMEOUT)
    });
    if hold >= token {
        return Err(ctx.error(
            "totem.hold",
            format!(
                "{} must be shorter than the token timeout ({})",
                show_ms(hold),
                show_ms(token)
            ),
        ));
    }
    let join = millis(raw.join, 50);
    minimum("totem.join", join, "")?;
    let consensus = if let Some(value) = explicit("totem.consensus", raw.consensus)? {
        if value < token * 6 / 5 {
            // Corosync only warns: a short consensus makes membership flap, it does not
            // break safety.
            tracing::warn!(
                "{}: totem.consensus: {} is less than 1.2 × token ({}); membership may \
                     not settle",
                ctx.origin.display(),
                show_ms(value),
                show_ms(token)
            );
        }
        value
    } else {
        token * 6 / 5
    };
    if consensus < join {
        return Err(ctx.error(
            "totem.consensus",
            format!(
                "{} must be at least join ({})",
                show_ms(consensus),
                show_ms(join)
            ),
        ));
    }
    let merge = millis(raw.merge, 200);
    minimum("totem.merge", merge, "")?;

    let max_message_size = raw
        .max_message_size
        .unwrap_or(crate::api::MAX_ATOMIC_MSGSIZE);
    if max_message_size == 0 {
        return Err(ctx.error("totem.max_message_size", "must be at least 1"));
    }
    // The core refuses a message it could never queue; say so in the file's terms.
    if max_message_size + crate::api::SERVICE_HEADER_MAX > core_defaults.send_queue_bytes_max {
        return Err(ctx.error(
            "totem.max_message_size",
            format!(
                "{max_message_size} exceeds the send queue of {} bytes",
                core_defaults.send_queue_bytes_max
            ),
        ));
    }

    Ok(Totem {
        cluster_name,
        transport,
        mcastaddr,
        token,
        token_coefficient,
        token_retransmits_before_loss_const: retransmits,
        token_retransmit,
        hold,
        join,
        send_join: millis(raw.send_join, 0),
        consensus,
        merge,
        fail_recv_const,
        seqno_unchanged_const,
        miss_count_const,
        window_size,
        max_messages,
        netmtu: raw.netmtu.unwrap_or(1500),
        max_message_size,
    })
}

fn parse_mcast_addr(text: &str, v6: bool) -> Result<SocketAddr, String> {
    // A bare group address takes Corosync's default mcastport.
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, DEFAULT_MCAST_PORT),
            Err(_) => {
                return Err(format!(
                    "{text:?} is not an IP address (with or without a port), e.g. \
                     239.192.1.1:5405"
                ));
            }
        },
    };
    if !addr.ip().is_multicast() {
        return Err(format!("{text:?} is not a multicast address"));
    }
    if addr.is_ipv6() != v6 {
        let nodes = if v6 { "IPv6" } else { "IPv4" };
        return Err(format!(
            "{text:?} is {} but the nodes are {nodes}",
            family(addr.ip())
        ));
    }
    if addr.port() == 0 {
        return Err(format!("{text:?} has port 0"));
    }
    Ok(addr)
}

/// Corosync derives the default group from the cluster name so that clusters on one network
/// do not collide by default; it must be stable across nodes and restarts, hence a fixed hash
/// (32-bit FNV-1a, folded to 16 bits) rather than anything random.
fn default_mcast_addr(cluster_name: &str, v6: bool) -> SocketAddr {
    let mut hash: u32 = 0x811c_9dc5;
    for &byte in cluster_name.as_bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let folded = ((hash >> 16) ^ (hash & 0xffff)) as u16;
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0, folded))
    } else {
        let [high, low] = folded.to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(239, 192, high, low))
    };
    SocketAddr::new(ip, DEFAULT_MCAST_PORT)
}

fn resolve_crypto(ctx: &Ctx<'_>, raw: RawCrypto) -> Result<Crypto, ConfigError> {
    let cipher = match raw.cipher.as_deref() {
        None | Some("aes256-gcm") => CipherName::Aes256Gcm,
        Some("chacha20-poly1305") => CipherName::ChaCha20Poly1305,
        Some("none") => CipherName::None,
        Some(other) => {
            return Err(ctx.error(
                "crypto.cipher",
                format!(
                    "{other:?} is not a cipher (\"aes256-gcm\", \"chacha20-poly1305\" or \"none\")"
                ),
            ));
        }
    };
    Ok(Crypto {
        cipher,
        authkey: ctx.path("crypto.authkey", raw.authkey, DEFAULT_AUTHKEY)?,
    })
}

fn resolve_ipc(ctx: &Ctx<'_>, raw: RawIpc) -> Result<Ipc, ConfigError> {
    let sorted = |ids: Option<Vec<u32>>| {
        let mut ids = ids.unwrap_or_default();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    Ok(Ipc {
        socket: ctx.path("ipc.socket", raw.socket, DEFAULT_SOCKET)?,
        allowed_uids: sorted(raw.allowed_uids),
        allowed_gids: sorted(raw.allowed_gids),
    })
}

fn resolve_system(ctx: &Ctx<'_>, raw: RawSystem) -> Result<System, ConfigError> {
    let busy_poll = match raw.busy_poll.map(Duration::from_micros) {
        None => busy_poll::DEFAULT,
        Some(window) if window > busy_poll::MAX => {
            return Err(ctx.error(
                "system.busy_poll",
                format!(
                    "{} µs is above the maximum of {} µs (polling that long keeps a CPU busy; \
                     0 turns polling off)",
                    window.as_micros(),
                    busy_poll::MAX.as_micros()
                ),
            ));
        }
        Some(window) => window,
    };
    Ok(System {
        state_dir: ctx.path("system.state_dir", raw.state_dir, DEFAULT_STATE_DIR)?,
        busy_poll,
    })
}

fn resolve_logging(ctx: &Ctx<'_>, raw: &RawLogging) -> Result<Logging, ConfigError> {
    let format = match raw.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ctx.error(
                "logging.format",
                format!("{other:?} is not a log format (\"text\" or \"json\")"),
            ));
        }
    };
    Ok(Logging {
        debug: raw.debug.unwrap_or(false),
        format,
    })
}

// ---------------------------------------------------------------------------------------
// Parser errors as one line.

/// Where in the text a parser error points.
struct Location {
    line: usize,
    /// `totem`, `node[1]`, …: the table the offset is in, if any.
    section: Option<String>,
    /// The key whose line the offset is on (or whose multi-line value it is in).
    key: Option<String>,
    /// The offset is on a `[table]` header line.
    on_header: bool,
}

fn toml_error(error: &toml::de::Error, text: &str, origin: &Path) -> ConfigError {
    let message = tidy_serde_message(error.message());
    let origin = origin.display();
    let Some(span) = error.span() else {
        return ConfigError::line(format!("{origin}: {message}"));
    };
    let location = locate(text, span.start);
    let line = location.line;
    if let Some((unknown, expected)) = unknown_field(error.message()) {
        let hint = closest(&unknown, &expected)
            .map(|near| format!(" (did you mean {near:?}?)"))
            .unwrap_or_default();
        return ConfigError::line(match (&location.section, location.on_header) {
            (_, true) => format!("{origin}:{line}: unknown section [{unknown}]{hint}"),
            (Some(section), false) => {
                format!("{origin}:{line}: {section}: unknown key {unknown:?}{hint}")
            }
            (None, false) => format!("{origin}:{line}: unknown key {unknown:?}{hint}"),
        });
    }
    let key = match (location.section, location.key) {
        (Some(section), Some(key)) => Some(format!("{section}.{key}")),
        (section, key) => section.or(key),
    };
    let hint = if key.as_deref() == Some("node") && message.contains("expected an array") {
        " (write [[node]], one per node)"
    } else {
        ""
    };
    ConfigError::line(match key {
        Some(key) => format!("{origin}:{line}: {key}: {message}{hint}"),
        None => format!("{origin}:{line}: {message}"),
    })
}

/// Serde speaks of its own data model and our private struct names; say it in TOML's terms.
fn tidy_serde_message(message: &str) -> String {
    const STRUCT: &str = "expected struct ";
    let mut message = message
        .trim()
        .replace("invalid type: map", "invalid type: table")
        .replace("expected a sequence", "expected an array")
        .replace("expected u32", "expected an integer from 0 to 4294967295")
        .replace("expected usize", "expected a non-negative integer");
    if let Some(at) = message.find(STRUCT) {
        let name = at + STRUCT.len();
        let end = message[name..]
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(message.len(), |offset| name + offset);
        message.replace_range(at..end, "expected a table");
    }
    message
}

/// The unknown name and the expected ones of serde's "unknown field" message.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field ")?;
    let names: Vec<String> = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    let (unknown, expected) = names.split_first()?;
    Some((unknown.clone(), expected.to_vec()))
}

/// The expected name nearest to a misspelt one, if it is near enough to be the likely intent.
fn closest(unknown: &str, expected: &[String]) -> Option<String> {
    expected
        .iter()
        .map(|name| (edit_distance(unknown, name), name))
        .filter(|&(distance, name)| {
            distance <= 2.max(name.len() / 4)
                || name.starts_with(unknown)
                || unknown.starts_with(name.as_str())
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, name)| name.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// A line-based look at the text, enough for the flat files this module reads; it does not
/// need to understand every TOML construct, only to name the key in the common cases.
fn locate(text: &str, offset: usize) -> Location {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    let line = before.split(|&byte| byte == b'\n').count();
    let lines: Vec<&str> = text.lines().collect();
    let upto = line.min(lines.len());
    let mut section: Option<String> = None;
    let mut arrays: Vec<(String, usize)> = Vec::new();
    for raw in &lines[..upto] {
        let trimmed = raw.trim();
        if let Some(inner) = trimmed.strip_prefix("[[") {
            let name = inner
                .split("]]")
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            let index = if let Some((_, count)) = arrays.iter_mut().find(|(seen, _)| *seen == name)
            {
                *count += 1;
                *count - 1
            } else {
                arrays.push((name.clone(), 1));
                0
            };
            section = Some(format!("{name}[{index}]"));
        } else if let Some(inner) = trimmed.strip_prefix('[') {
            let name = inner.split(']').next().unwrap_or_default().trim();
            section = Some(name.to_owned());
        }
    }
    let on_header = lines
        .get(line - 1)
        .is_some_and(|current| current.trim_start().starts_with('['));
    let mut key = None;
    if !on_header {
        // A multi-line array's later lines have no `=`: walk back to the line that has one.
        for raw in lines[..upto].iter().rev() {
            let trimmed = raw.trim_start();
            if trimmed.starts_with('[') {
                break;
            }
            if let Some((name, _)) = trimmed.split_once('=') {
                let name = name.trim().trim_matches(['"', '\'']);
                if !name.is_empty() && !name.starts_with('#') {
                    key = Some(name.to_owned());
                }
                break;
            }
        }
    }
    Location {
        line,
        section,
        key,
        on_header,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "/etc/totemcast/totemcast.toml";

    fn parse_text(text: &str) -> Result<FileConfig, ConfigError> {
        parse(text, Path::new(ORIGIN))
    }

    /// A minimal valid file with `totem` lines added to `[totem]` and the given node block.
    fn file(totem: &str, nodes: &str) -> String {
        format!("[totem]\ncluster_name = \"demo\"\n{totem}\n{nodes}")
    }

    const THREE_NODES: &str = "[[node]]\nnodeid = 1\naddr = \"127.0.0.1:5405\"\n\
                               [[node]]\nnodeid = 2\naddr = \"127.0.0.1:5406\"\n\
                               [[node]]\nnodeid = 3\naddr = \"127.0.0.1:5407\"\n";

    fn ids(ids: &[u32]) -> Vec<NodeId> {
        ids.iter().map(|&id| NodeId(id)).collect()
    }

    fn assert_one_line_error(text: &str, needles: &[&str]) {
        let error = match parse_text(text) {
            Ok(config) => panic!("accepted:\n{text}\nas {config:?}"),
            Err(error) => error.to_string(),
        };
        assert!(!error.contains('\n'), "multi-line: {error:?}");
        assert!(error.starts_with(ORIGIN), "{error}");
        for needle in needles {
            assert!(error.contains(needle), "{error:?} lacks {needle:?}\n{text}");
        }
    }

    #[test]
    fn example_parses_with_corosync_defaults() {
        let config = parse_text(EXAMPLE).unwrap();
        let totem = &config.totem;
        assert_eq!(totem.cluster_name, "demo");
        assert_eq!(totem.transport, Transport::Udpu);
        assert_eq!(totem.mcastaddr, None);
        assert_eq!(totem.token, Duration::from_millis(3650));
        assert_eq!(totem.consensus, Duration::from_millis(4380));
        assert_eq!(totem.max_message_size, crate::api::MAX_ATOMIC_MSGSIZE);
        assert_eq!(config.node_ids(), ids(&[1, 2, 3]));
        assert_eq!(config.nodes[1].name.as_deref(), Some("beta"));
        assert_eq!(
            config.nodes[2].addr,
            "127.0.0.1:5407".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(config.crypto.cipher, CipherName::Aes256Gcm);
        assert_eq!(config.crypto.authkey, Path::new(DEFAULT_AUTHKEY));
        assert_eq!(config.ipc.socket, Path::new(DEFAULT_SOCKET));
        assert_eq!(config.system.state_dir, Path::new(DEFAULT_STATE_DIR));
        assert_eq!(config.system.busy_poll, Duration::from_micros(50));
        assert_eq!(config.logging.format, LogFormat::Text);
        assert!(!config.logging.debug);

        // Every timer and constant the core gets is Corosync's default for 3 nodes.
        let core = config.core_config(NodeId(2), 40).unwrap();
        let mut expected = Config::new(NodeId(2), &ids(&[3, 1, 2]));
        expected.netmtu = 1500 - 28 - 40;
        assert_eq!(core, expected);
    }

    #[test]
    fn defaults_without_optional_sections() {
        let text =
            "[totem]\ncluster_name = \"x\"\n[[node]]\nnodeid = 7\naddr = \"10.0.0.1:5405\"\n";
        let config = parse_text(text).unwrap();
        let core = config.core_config(NodeId(7), 0).unwrap();
        let mut expected = Config::new(NodeId(7), &ids(&[7]));
        // A cluster of one node sends no datagram: its packets are as large as the core allows.
        expected.netmtu = crate::totem::config::PACKET_BYTES_MAX;
        assert_eq!(core, expected);
        // A netmtu that is wrong is still reported as such.
        let text = text.replace("[[node]]", "netmtu = 10\n[[node]]");
        let error = parse_text(&text)
            .and_then(|config| config.core_config(NodeId(7), 0))
            .unwrap_err()
            .to_string();
        assert!(error.contains("totem.netmtu: 10"), "{error}");
        assert_eq!(config.totem.token, Duration::from_secs(3));
        assert_eq!(config.crypto.cipher, CipherName::Aes256Gcm);
        assert_eq!(config.logging.format, LogFormat::Text);
        assert!(config.ipc.allowed_uids.is_empty());
    }

    #[test]
    fn explicit_values_override_the_derivations() {
        let totem = "transport = \"udp\"\nmcastaddr = \"239.1.2.3:6000\"\ntoken = 1000\n\
                     token_coefficient = 100\ntoken_retransmit = 300\nhold = 200\njoin = 60\n\
                     send_join = 80\nconsensus = 2000\nmerge = 300\nfail_recv_const = 100\n\
                     seqno_unchanged_const = 10\nmiss_count_const = 3\nwindow_size = 40\n\
                     max_messages = 20\nnetmtu = 9000\nmax_message_size = 1048576\n";
        let config = parse_text(&file(totem, THREE_NODES)).unwrap();
        let t = &config.totem;
        assert_eq!(t.transport, Transport::Udp);
        assert_eq!(t.mcastaddr, Some("239.1.2.3:6000".parse().unwrap()));
        assert_eq!(t.token, Duration::from_millis(1100));
        let core = config.core_config(NodeId(3), 0).unwrap();
        assert_eq!(core.token_timeout, Duration::from_millis(1100));
        assert_eq!(core.token_retransmit, Duration::from_millis(300));
        assert_eq!(core.hold, Duration::from_millis(200));
        assert_eq!(core.join_timeout, Duration::from_millis(60));
        assert_eq!(core.send_join, Duration::from_millis(80));
        assert_eq!(core.consensus_timeout, Duration::from_secs(2));
        assert_eq!(core.merge_timeout, Duration::from_millis(300));
        assert_eq!(core.fail_recv_const, 100);
        assert_eq!(core.seqno_unchanged_const, 10);
        assert_eq!(core.miss_count_const, 3);
        assert_eq!(core.window_size, 40);
        assert_eq!(core.max_messages, 20);
        assert_eq!(core.netmtu, 9000 - 28);
        assert_eq!(
            core.message_size_max,
            1_048_576 + crate::api::SERVICE_HEADER_MAX
        );
    }

    #[test]
    fn derivations_follow_the_effective_token() {
        // Two nodes: no coefficient. hold derives from an explicit token_retransmit.
        let two = "[[node]]\nnodeid = 1\naddr = \"127.0.0.1:5405\"\n\
                   [[node]]\nnodeid = 2\naddr = \"127.0.0.1:5406\"\n";
        let config = parse_text(&file("token = 2000\ntoken_retransmit = 500", two)).unwrap();
        assert_eq!(config.totem.token, Duration::from_secs(2));
        assert_eq!(config.totem.hold, Duration::from_millis(390));
        assert_eq!(config.totem.consensus, Duration::from_millis(2400));
        // Five nodes with retransmits_before_loss 9: token 1000 + 3 × 100 = 1300.
        let five = (1..=5)
            .map(|id| {
                format!(
                    "[[node]]\nnodeid = {id}\naddr = \"127.0.0.1:{}\"\n",
                    5404 + id
                )
            })
            .collect::<Vec<_>>()
            .concat();
        let config = parse_text(&file(
            "token = 1000\ntoken_coefficient = 100\ntoken_retransmits_before_loss_const = 9",
            &five,
        ))
        .unwrap();
        assert_eq!(config.totem.token, Duration::from_millis(1300));
        assert_eq!(
            config.totem.token_retransmit,
            Duration::from_millis(1300) * 10 / 92
        );
        assert_eq!(config.totem.consensus, Duration::from_millis(1560));
        // A zero coefficient turns the growth off, as in Corosync.
        let config = parse_text(&file("token_coefficient = 0", &five)).unwrap();
        assert_eq!(config.totem.token, Duration::from_secs(3));
    }

    #[test]
    fn bad_values_give_one_line_naming_the_key() {
        let cases: &[(&str, &[&str])] = &[
            (
                "token = 10",
                &["totem.token: 10 ms is below the minimum of 30 ms"],
            ),
            (
                "token = 100\ntoken_coefficient = 0",
                &["totem.token_retransmit:", "below the minimum"],
            ),
            (
                "token_retransmit = 20",
                &["totem.token_retransmit:", "20 ms"],
            ),
            ("hold = 5", &["totem.hold:", "minimum"]),
            ("join = 29", &["totem.join:", "29 ms"]),
            ("consensus = 10", &["totem.consensus:", "minimum"]),
            ("merge = 0", &["totem.merge:", "minimum"]),
            (
                "token = 1000\ntoken_retransmit = 1000\ntoken_coefficient = 0",
                &["totem.token_retransmit:", "shorter"],
            ),
            (
                "token = 1000\nhold = 1500\ntoken_coefficient = 0",
                &["totem.hold:", "shorter"],
            ),
            (
                "join = 500\nconsensus = 400",
                &["totem.consensus:", "at least join"],
            ),
            (
                "max_messages = 60",
                &["totem.max_messages:", "exceeds window_size 50"],
            ),
            (
                "window_size = 5000\nmax_messages = 5",
                &["totem.window_size:", "maximum"],
            ),
            ("window_size = 0", &["totem.window_size:", "at least 1"]),
            ("max_messages = 0", &["totem.max_messages:", "at least 1"]),
            (
                "fail_recv_const = 0",
                &["totem.fail_recv_const:", "at least 1"],
            ),
            (
                "seqno_unchanged_const = 0",
                &["totem.seqno_unchanged_const:"],
            ),
            ("miss_count_const = 0", &["totem.miss_count_const:"]),
            (
                "token_retransmits_before_loss_const = 0",
                &["totem.token_retransmits_before_loss_const:"],
            ),
            ("transport = \"tcp\"", &["totem.transport:", "\"tcp\""]),
            (
                "transport = \"udp\"\nmcastaddr = \"10.1.1.1:5405\"",
                &["totem.mcastaddr:", "not a multicast"],
            ),
            (
                "transport = \"udp\"\nmcastaddr = \"ff15::1\"",
                &["totem.mcastaddr:", "IPv6", "IPv4"],
            ),
            ("mcastaddr = \"nonsense\"", &["totem.mcastaddr:"]),
            ("cluster_name = \"\"", &["totem.cluster_name:", "1 to 64"]),
            ("netmtu = 100", &["totem.netmtu: 100 leaves 72 bytes"]),
            ("netmtu = 70000", &["totem.netmtu:", "70000"]),
            ("max_message_size = 0", &["totem.max_message_size:"]),
            (
                "max_message_size = 1000000000",
                &["totem.max_message_size:", "send queue"],
            ),
        ];
        for (totem, needles) in cases {
            // `cluster_name` may appear twice (a TOML error); put overrides in a fresh file.
            let text = if totem.starts_with("cluster_name") {
                format!("[totem]\n{totem}\n{THREE_NODES}")
            } else {
                file(totem, THREE_NODES)
            };
            assert_one_line_error(&text, needles);
        }
        let long = format!(
            "[totem]\ncluster_name = \"{}\"\n{THREE_NODES}",
            "x".repeat(65)
        );
        assert_one_line_error(&long, &["totem.cluster_name:", "65 bytes"]);
    }

    #[test]
    fn bad_sections_give_one_line_naming_the_key() {
        let cases: &[(&str, &[&str])] = &[
            ("[crypto]\ncipher = \"des\"", &["crypto.cipher:", "\"des\""]),
            ("[crypto]\nauthkey = \"\"", &["crypto.authkey:", "empty"]),
            ("[ipc]\nsocket = \"\"", &["ipc.socket:", "empty"]),
            (
                "[ipc]\nallowed_uids = [1, -2]",
                &["ipc.allowed_uids:", "-2"],
            ),
            ("[system]\nstate_dir = \"\"", &["system.state_dir:"]),
            (
                "[system]\nbusy_poll = 10001",
                &["system.busy_poll:", "10001 µs", "maximum of 10000"],
            ),
            ("[system]\nbusy_poll = -1", &["system.busy_poll:"]),
            (
                "[logging]\nformat = \"xml\"",
                &["logging.format:", "\"xml\""],
            ),
            ("[logging]\ndebug = \"yes\"", &["logging.debug:", "boolean"]),
        ];
        for (section, needles) in cases {
            assert_one_line_error(&format!("{}\n{section}\n", file("", THREE_NODES)), needles);
        }
    }

    #[test]
    fn bad_nodes_give_one_line_naming_the_entry() {
        let node = |id: &str, addr: &str| format!("[[node]]\nnodeid = {id}\naddr = \"{addr}\"\n");
        let cases: Vec<(String, &[&str])> = vec![
            (String::new(), &["node:", "at least one [[node]]"]),
            (
                node("1", "127.0.0.1:5405") + &node("2", "127.0.0.1") + &node("3", "127.0.0.1:7"),
                &[
                    "node[1].addr: \"127.0.0.1\" is not an address with a port (e.g. 127.0.0.1:5405)",
                ],
            ),
            (
                node("1", "[::1]:1") + &node("1", "[::1]:2"),
                &["node[1].nodeid:", "node[0]"],
            ),
            (
                node("0", "127.0.0.1:5405"),
                &["node[0].nodeid:", "0 is not allowed"],
            ),
            (
                node("1", "127.0.0.1:5405") + &node("2", "127.0.0.1:5405"),
                &["node[1].addr:", "also the addr of node[0]"],
            ),
            (
                node("1", "127.0.0.1:5405") + &node("2", "[::1]:5405"),
                &["node[1].addr:", "IPv6", "one address family"],
            ),
            (node("1", "alpha:5405"), &["node[0].addr:", "host names"]),
            (node("1", "127.0.0.1:0"), &["node[0].addr:", "port 0"]),
            (node("1", "0.0.0.0:5405"), &["node[0].addr:"]),
            (node("1", "::1"), &["node[0].addr:", "[::1]:5405"]),
            (
                "[[node]]\nnodeid = 1\n".to_owned(),
                &["node[0].addr: missing"],
            ),
            (
                "[[node]]\naddr = \"127.0.0.1:1\"\n".to_owned(),
                &["node[0].nodeid: missing"],
            ),
            (
                node("1", "127.0.0.1:1") + &node("4294967296", "127.0.0.1:2"),
                &["totemcast.toml:8: node[1].nodeid:", "4294967295"],
            ),
            (
                node("1", "127.0.0.1:1")
                    + "name = \"a\"\n"
                    + &node("2", "127.0.0.1:2")
                    + "name = \"a\"\n",
                &["node[1].name:", "\"a\""],
            ),
            (
                "[node]\nnodeid = 1\n".to_owned(),
                &[":4: node: invalid type: table", "[[node]]"],
            ),
        ];
        for (nodes, needles) in &cases {
            assert_one_line_error(&file("", nodes), needles);
        }
    }

    #[test]
    fn parser_errors_carry_the_line_and_the_key() {
        let text = file("token = 3000\n\ntokn = 5", THREE_NODES);
        let error = parse_text(&text).unwrap_err().to_string();
        assert_eq!(
            error,
            format!("{ORIGIN}:5: totem: unknown key \"tokn\" (did you mean \"token\"?)")
        );

        let error = parse_text(&file("token = \"x\"", THREE_NODES))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!(
                "{ORIGIN}:3: totem.token: invalid type: string \"x\", expected an integer from 0 to 4294967295"
            )
        );

        let text = format!(
            "{}[[node]]\nnodeid = 4\naddress = \"x\"\n",
            file("", THREE_NODES)
        );
        let error = parse_text(&text).unwrap_err().to_string();
        assert!(
            error.contains(":15: node[3]: unknown key \"address\""),
            "{error}"
        );
        assert!(error.contains("did you mean \"addr\""), "{error}");

        let error = parse_text(&format!("[totme]\n{}", file("", THREE_NODES)))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(":1: unknown section [totme] (did you mean \"totem\"?)"),
            "{error}"
        );

        let error = parse_text(&file("token = 5\ntoken = 6", THREE_NODES))
            .unwrap_err()
            .to_string();
        assert!(error.contains(":4: totem.token: duplicate key"), "{error}");

        let text = file("", THREE_NODES) + "[ipc]\nallowed_gids = [\n  1,\n  \"two\",\n]\n";
        let error = parse_text(&text).unwrap_err().to_string();
        assert!(
            error.contains(":16: ipc.allowed_gids: invalid type: string"),
            "{error}"
        );

        let error = parse_text("[totem\n").unwrap_err().to_string();
        assert!(error.starts_with(&format!("{ORIGIN}:1: ")), "{error}");
        assert!(!error.contains('\n'), "{error}");

        let error = parse_text("totem = 5\n").unwrap_err().to_string();
        assert!(
            error.contains(":1: totem: invalid type: integer `5`, expected a table"),
            "{error}"
        );
    }

    #[test]
    fn cluster_name_is_required() {
        let text = format!("[totem]\ntoken = 3000\n{THREE_NODES}");
        assert_one_line_error(&text, &["totem.cluster_name: missing"]);
        assert_one_line_error(THREE_NODES, &["totem.cluster_name: missing"]);
    }

    #[test]
    fn busy_poll_is_written_in_microseconds_and_zero_turns_it_off() {
        for (written, micros) in [("0", 0), ("200", 200), ("10000", 10_000)] {
            let text = format!("{}[system]\nbusy_poll = {written}\n", file("", THREE_NODES));
            let config = parse_text(&text).unwrap();
            assert_eq!(config.system.busy_poll, Duration::from_micros(micros));
        }
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let text = format!(
            "{}[crypto]\nauthkey = \"keys/authkey\"\n[ipc]\nsocket = \"run/node.sock\"\n\
             [system]\nstate_dir = \"state\"\n",
            file("", THREE_NODES)
        );
        let config = parse(&text, Path::new("/srv/cluster/totemcast.toml")).unwrap();
        assert_eq!(
            config.crypto.authkey,
            Path::new("/srv/cluster/keys/authkey")
        );
        assert_eq!(config.ipc.socket, Path::new("/srv/cluster/run/node.sock"));
        assert_eq!(config.system.state_dir, Path::new("/srv/cluster/state"));
        let config = parse(&text, Path::new("totemcast.toml")).unwrap();
        assert_eq!(config.crypto.authkey, Path::new("keys/authkey"));
    }

    #[test]
    fn load_reads_the_file_and_resolves_against_its_directory() {
        let dir = std::env::temp_dir().join(format!("totemcast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("totemcast.toml");
        std::fs::write(&path, file("[crypto]\nauthkey = \"authkey\"", THREE_NODES)).unwrap();
        let loaded = load(&path);
        let missing = load(&dir.join("missing.toml"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded.unwrap().crypto.authkey, dir.join("authkey"));
        let error = missing.unwrap_err().to_string();
        assert!(error.contains("missing.toml: cannot read"), "{error}");
    }

    #[test]
    fn cipher_defaults_to_aes_and_none_must_be_explicit() {
        let config = parse_text(&file("", THREE_NODES)).unwrap();
        assert_eq!(config.crypto.cipher, CipherName::Aes256Gcm);
        let text = format!("{}[crypto]\ncipher = \"none\"\n", file("", THREE_NODES));
        assert_eq!(parse_text(&text).unwrap().crypto.cipher, CipherName::None);
        let text = format!(
            "{}[crypto]\ncipher = \"chacha20-poly1305\"\n",
            file("", THREE_NODES)
        );
        assert_eq!(
            parse_text(&text).unwrap().crypto.cipher,
            CipherName::ChaCha20Poly1305
        );
    }

    #[test]
    fn local_node_selection() {
        let config = parse_text(EXAMPLE).unwrap();
        let error = config.select_local_node(None).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "{ORIGIN}: several [[node]] entries are local (nodeids 1, 2, 3); pass --nodeid"
            )
        );
        assert_eq!(config.select_local_node(Some(2)), Ok(NodeId(2)));
        let error = config.select_local_node(Some(9)).unwrap_err().to_string();
        assert!(
            error.contains("--nodeid: 9 is not the nodeid of any [[node]]"),
            "{error}"
        );
        assert!(config.core_config(NodeId(9), 0).is_err());

        // Documentation addresses (RFC 5737) are normally no address of this machine, but a
        // test network may use them: check first rather than assume.
        let remote_ips = ["203.0.113.1", "203.0.113.2", "198.51.100.1", "198.51.100.2"];
        let remote: Vec<&str> = remote_ips
            .into_iter()
            .filter(|ip| UdpSocket::bind((*ip, 0)).is_err())
            .take(2)
            .collect();
        if remote.is_empty() {
            return;
        }
        let remote = remote
            .iter()
            .zip(1..)
            .map(|(ip, id)| format!("[[node]]\nnodeid = {id}\naddr = \"{ip}:5405\"\n"))
            .collect::<Vec<_>>()
            .concat();
        let config = parse_text(&file("", &remote)).unwrap();
        let error = config.select_local_node(None).unwrap_err().to_string();
        assert!(
            error.contains("no [[node]] addr is an address of this machine; pass --nodeid"),
            "{error}"
        );
        let mixed = format!("{remote}[[node]]\nnodeid = 5\naddr = \"127.0.0.1:5405\"\n");
        let config = parse_text(&file("", &mixed)).unwrap();
        assert_eq!(config.select_local_node(None), Ok(NodeId(5)));
    }

    #[test]
    fn ipv6_nodes_parse() {
        let nodes = "[[node]]\nnodeid = 1\naddr = \"[::1]:5405\"\n\
                     [[node]]\nnodeid = 2\naddr = \"[::1]:5406\"\n";
        let config = parse_text(&file("transport = \"udp\"", nodes)).unwrap();
        assert!(config.nodes[0].addr.is_ipv6());
        assert_eq!(config.ip_udp_header_len(), 48);
        let core = config.core_config(NodeId(1), 0).unwrap();
        assert_eq!(core.netmtu, 1500 - 48);
        let group = config.totem.mcastaddr.unwrap();
        assert!(group.is_ipv6() && group.ip().is_multicast(), "{group}");
    }

    #[test]
    fn default_mcastaddr_is_stable_and_multicast() {
        let udp = |name: &str| {
            let text =
                format!("[totem]\ncluster_name = \"{name}\"\ntransport = \"udp\"\n{THREE_NODES}");
            parse_text(&text).unwrap().totem.mcastaddr.unwrap()
        };
        let demo = udp("demo");
        assert_eq!(demo, udp("demo"));
        assert_ne!(demo, udp("other"));
        assert!(demo.ip().is_multicast());
        assert_eq!(demo.port(), DEFAULT_MCAST_PORT);
        let IpAddr::V4(ip) = demo.ip() else {
            panic!("{demo} is not IPv4")
        };
        assert_eq!(ip.octets()[..2], [239, 192]);
        // Pinned, so that nodes built from different versions still agree.
        assert_eq!(demo.to_string(), "239.192.155.203:5405");
        assert_eq!(
            default_mcast_addr("demo", true).to_string(),
            "[ff15::9bcb]:5405"
        );
        // udpu needs no group even when one is written.
        let text = file("mcastaddr = \"239.1.1.1:5405\"", THREE_NODES);
        assert_eq!(parse_text(&text).unwrap().totem.mcastaddr, None);
    }

    #[test]
    fn crypto_overhead_counts_against_netmtu() {
        let config = parse_text(&file("netmtu = 250", THREE_NODES)).unwrap();
        assert_eq!(config.core_config(NodeId(1), 0).unwrap().netmtu, 222);
        let error = config.core_config(NodeId(1), 100).unwrap_err().to_string();
        assert!(
            error.contains("totem.netmtu: 250 leaves 122 bytes per datagram"),
            "{error}"
        );
        assert!(!error.contains('\n'));
    }

    #[test]
    fn config_error_maps_to_invalid_param() {
        let error = parse_text("").unwrap_err();
        let line = error.to_string();
        let core: crate::Error = error.into();
        assert_eq!(core.code(), crate::CsError::InvalidParam);
        assert_eq!(core.detail(), line);
    }
}
