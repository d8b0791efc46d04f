//! The world outside the process: BPF programs and their ring buffer, /proc, sysctls,
//! netlink sock_diag, network namespaces, cgroups, files and sockets. The only place
//! with `unsafe`; parsers of what the kernel writes live beside their reader.
pub(crate) mod clock;
pub(crate) mod conntrack;
pub(crate) mod conntrack_stats;
pub(crate) mod containers;
pub(crate) mod ebpf;
pub(crate) mod host;
pub(crate) mod http;
pub(crate) mod kernel_log;
pub(crate) mod logging;
pub(crate) mod netlink;
pub(crate) mod netns;
pub(crate) mod nft;
pub(crate) mod owners;
pub(crate) mod procinfo;
pub(crate) mod reader;
pub(crate) mod self_stats;
pub(crate) mod sink;
pub(crate) mod snapshot;
pub(crate) mod sockdiag;
pub(crate) mod sysctls;
#[cfg(test)]
pub(crate) mod test_env;
pub(crate) mod tw_owners_file;
