//! A tracepoint's record layout, from its tracefs `format` file. Pure.
//!
//! The kernel programs read fields at fixed offsets. Most tracepoints portex uses have
//! kept theirs for years; `tcp:tcp_retransmit_skb` gained `state` and `family` over
//! time, so its program is attached only when the running kernel's layout is the one
//! it was written for.

/// (field name, offset, size) of every field that follows the common ones.
pub(crate) fn fields(format: &str) -> Vec<(&str, usize, usize)> {
    format
        .lines()
        .filter_map(|l| {
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in l.trim().split(';') {
                let part = part.trim();
                if let Some(d) = part.strip_prefix("field:") {
                    // "const void * skaddr", "__u8 saddr[4]": the name is the last word,
                    // without its array length.
                    let name = d.rsplit([' ', '*']).next()?;
                    decl = Some(name.split('[').next()?);
                } else if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.parse().ok();
                } else if let Some(s) = part.strip_prefix("size:") {
                    size = s.parse().ok();
                }
            }
            Some((decl?, offset?, size?))
        })
        .filter(|(name, _, _)| !name.starts_with("common_"))
        .collect()
}

/// The fields of `expected` that the format lays out differently (or lacks): empty
/// when a program reading at those offsets is right for this kernel.
pub(crate) fn mismatches<'a>(format: &str, expected: &[(&'a str, usize, usize)]) -> Vec<&'a str> {
    let have = fields(format);
    expected
        .iter()
        .filter(|(name, off, size)| !have.iter().any(|f| f == &(*name, *off, *size)))
        .map(|(name, _, _)| *name)
        .collect()
}

/// What the retransmit program reads (portex-ebpf/src/retransmit.rs).
pub(crate) const TCP_RETRANSMIT_SKB: &[(&str, usize, usize)] = &[
    ("skaddr", 16, 8),
    ("state", 24, 4),
    ("sport", 28, 2),
    ("dport", 30, 2),
    ("family", 32, 2),
    ("saddr", 34, 4),
    ("daddr", 38, 4),
    ("saddr_v6", 42, 16),
    ("daddr_v6", 58, 16),
];

/// The same before the record gained `family` (5.10-5.12): the addresses sit two
/// bytes earlier (portex-ebpf/src/retransmit.rs, WITHOUT_FAMILY).
pub(crate) const TCP_RETRANSMIT_SKB_NO_FAMILY: &[(&str, usize, usize)] = &[
    ("skaddr", 16, 8),
    ("state", 24, 4),
    ("sport", 28, 2),
    ("dport", 30, 2),
    ("saddr", 32, 4),
    ("daddr", 36, 4),
    ("saddr_v6", 40, 16),
    ("daddr_v6", 56, 16),
];

#[cfg(test)]
mod tests {
    use super::*;

    // Linux 6.18's, as tracefs prints it.
    const V6_18: &str = "name: tcp_retransmit_skb
ID: 2281
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:32;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:38;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:42;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:58;\tsize:16;\tsigned:0;
\tfield:int err;\toffset:76;\tsize:4;\tsigned:1;

print fmt: \"skbaddr=%p\"
";

    #[test]
    fn reads_names_offsets_and_sizes() {
        let f = fields(V6_18);
        assert_eq!(f[0], ("skbaddr", 8, 8));
        assert_eq!(f[1], ("skaddr", 16, 8));
        assert!(f.contains(&("saddr_v6", 42, 16)));
        assert!(f.contains(&("err", 76, 4)));
        assert!(!f.iter().any(|(n, _, _)| n.starts_with("common_")));
        assert!(mismatches(V6_18, TCP_RETRANSMIT_SKB).is_empty());
    }

    // Debian 11's 5.10.223, as its tracefs prints it (the kernel matrix, 2026-12-07).
    const V5_10: &str = "\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;";

    #[test]
    fn each_kernel_matches_exactly_one_variant() {
        assert!(mismatches(V6_18, TCP_RETRANSMIT_SKB).is_empty());
        assert!(!mismatches(V6_18, TCP_RETRANSMIT_SKB_NO_FAMILY).is_empty());
        assert!(mismatches(V5_10, TCP_RETRANSMIT_SKB_NO_FAMILY).is_empty());
        assert_eq!(
            mismatches(V5_10, TCP_RETRANSMIT_SKB),
            ["family", "saddr", "daddr", "saddr_v6", "daddr_v6"]
        );
    }

    #[test]
    fn an_older_layout_is_not_taken_for_this_one() {
        // Linux 4.15: no state and no family, so the addresses start earlier.
        let old = "\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:28;\tsize:4;\tsigned:0;";
        let bad = mismatches(old, TCP_RETRANSMIT_SKB);
        assert!(bad.contains(&"state") && bad.contains(&"sport"), "{bad:?}");
        assert_eq!(mismatches("", TCP_RETRANSMIT_SKB).len(), 9);
        assert!(fields("garbage;\n\tfield:;offset:x;").is_empty());
    }
}
