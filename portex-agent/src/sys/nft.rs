//! The NAT rules' port range, as nftables reports it (`nft -j list ruleset`, which
//! reads the ruleset from the kernel over netlink) in the caller's network namespace.
//! Supported: masquerade and snat statements of nftables. iptables-nft's MASQUERADE
//! and SNAT targets keep their range in an xt target nft does not show (checked with
//! iptables-nft 1.8.9), and legacy iptables rules are not seen at all: the kernel's
//! default range is then assumed, and the reports say so.
use std::process::{Command, Stdio};

use crate::logic::nat::rule_range;

/// Where nft lives on Debian and most distributions: an absolute path, not $PATH (a
/// root agent runs no binary a user could put first in PATH).
const NFT: [&str; 2] = ["/usr/sbin/nft", "/sbin/nft"];

/// The range all masquerade/snat rules agree on; None when there is no nft, no rule
/// with a range, or several ranges.
pub(crate) fn nat_range() -> Option<(u16, u16)> {
    let nft = NFT.iter().find(|p| std::path::Path::new(p).exists())?;
    let out = Command::new(nft)
        .args(["-j", "list", "ruleset"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    rule_range(&serde_json::from_slice(&out.stdout).ok()?)
}
