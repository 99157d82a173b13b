//! Network namespaces for the three-node scenarios: one namespace per node, joined by a Linux
//! bridge in a namespace of its own (the topology of Corosync's `cluster3.sh`). Addresses
//! (10.214.7.0/24) exist only inside the namespaces, so no traffic leaves the machine.
//!
//! Names are `tcbn<pid>-<n>` and `tcbn<pid>-br`: distinct from the netns tests' (`tc<pid>-…`,
//! `tcb-<pid>-…`) and the Corosync harness's (`cpgb…`). Everything made is deleted on drop,
//! and namespaces of earlier runs whose process is gone are deleted at start.

use std::process::Command;

/// The address prefix of the nodes (node `i`, 1-based, is `.i`).
pub const NET: &str = "10.214.7";
const PREFIX: &str = "tcbn";

/// Runs `program args`; stdout, or what went wrong.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn ip(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// The namespaces of one cluster; deleted on drop.
#[derive(Debug)]
pub struct Net {
    nodes: Vec<String>,
    made: Vec<String>,
}

impl Net {
    /// Builds a bridge and `count` node namespaces, or says why this machine cannot.
    pub fn create(count: usize) -> Result<Net, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("the three-node scenarios need root (network namespaces)".into());
        }
        run("ip", &["-V"]).map_err(|error| format!("needs iproute2: {error}"))?;
        remove_stale();
        let pid = std::process::id();
        let bridge = format!("{PREFIX}{pid}-br");
        let mut net = Net {
            nodes: Vec::new(),
            made: Vec::new(),
        };
        run("ip", &["netns", "add", &bridge])?;
        net.made.push(bridge.clone());
        ip(&bridge, &["link", "set", "lo", "up"])?;
        ip(
            &bridge,
            &[
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        )?;
        ip(&bridge, &["link", "set", "br0", "up"])?;
        for index in 1..=count {
            let ns = format!("{PREFIX}{pid}-{index}");
            run("ip", &["netns", "add", &ns])?;
            net.made.push(ns.clone());
            net.nodes.push(ns.clone());
            let port = format!("vb{index}");
            ip(
                &bridge,
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            ip(&bridge, &["link", "set", &port, "master", "br0", "up"])?;
            ip(
                &ns,
                &["addr", "add", &format!("{NET}.{index}/24"), "dev", "eth0"],
            )?;
            ip(&ns, &["link", "set", "eth0", "up"])?;
            ip(&ns, &["link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The command prefix that runs a program in node `index`'s (0-based) namespace.
    #[must_use]
    pub fn prefix(&self, index: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.nodes[index].clone(),
        ]
    }

    /// Node `index`'s (0-based) address with `port`.
    #[must_use]
    pub fn addr(index: usize, port: u16) -> String {
        format!("{NET}.{}:{port}", index + 1)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            if let Err(error) = run("ip", &["netns", "del", ns]) {
                tracing::warn!(%error, "cannot delete a benchmark namespace");
            }
        }
    }
}

/// Deletes `tcbn<pid>-…` namespaces whose process is gone (a run killed with SIGKILL).
fn remove_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
    {
        if let Some(pid) = stale_pid(name)
            && pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// The pid in a namespace name of ours.
fn stale_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_are_taken_for_stale() {
        assert_eq!(stale_pid("tcbn123-br"), Some(123));
        assert_eq!(stale_pid("tcbn123-2"), Some(123));
        // The netns tests' and the Corosync harness's namespaces are not ours.
        assert_eq!(stale_pid("tcb-123-five"), None);
        assert_eq!(stale_pid("tc123-five-1"), None);
        assert_eq!(stale_pid("cpgb1"), None);
        assert_eq!(Net::addr(2, 5405), "10.214.7.3:5405");
    }
}
