//! The files in which container runtimes record a container's name, image and pod
//! (`workload::parse_oci_config` for containerd's and CRI-O's config.json,
//! `parse_docker_config` for docker's config.v2.json, `parse_storage_containers` for
//! containers/storage's containers.json), then the NDJSON line that carries what they
//! found. Whoever can write a runtime's state directory chooses these bytes.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use portex_agent::fuzzing::{
    Container, View, json,
    lifecycle::interpret,
    workload::{
        MAX_VALUE_BYTES, Workload, parse_docker_config, parse_oci_config, parse_storage_containers,
    },
};
use portex_common::{AF_INET, Event, IPPROTO_TCP, kind};

/// Every value is one a renderer may show: non-empty, bounded, no control character.
fn check(w: &Workload) {
    for v in [&w.name, &w.image, &w.pod_name, &w.pod_namespace]
        .into_iter()
        .flatten()
    {
        assert!(!v.is_empty() && v.len() <= MAX_VALUE_BYTES, "{v:?}");
        assert!(!v.chars().any(char::is_control), "{v:?}");
    }
}

fn one_record() -> Event {
    let mut e = Event::zeroed();
    e.kind = kind::CONNECT_RET;
    e.ts_ns = 1;
    e.tgid = 1;
    e.tid = 1;
    e.family = AF_INET;
    e.protocol = IPPROTO_TCP;
    e.sport = 40000;
    e.dport = 80;
    e
}

fuzz_target!(|data: &[u8]| {
    let id = "aa11".repeat(16);
    let found = [
        parse_oci_config(data),
        parse_docker_config(data),
        parse_storage_containers(data, &id).unwrap_or_default(),
        // containers.json entries of the fixtures' podman containers
        parse_storage_containers(
            data,
            "103510498ac0012ff99feda4d2bed2f5522f5575a4ef160bd23c5e5d0b23814f",
        )
        .unwrap_or_default(),
    ];
    let header = json::Header::new("fuzz", None);
    for w in found {
        check(&w);
        let c = Arc::new(Container {
            id: id.clone(),
            runtime: "containerd",
            pod_uid: None,
            workload: w,
        });
        interpret(&one_record(), |mut r| {
            r.container = Some(c.clone());
            let mut line = String::new();
            json::write_line(
                &View {
                    rec: &r,
                    unix_ns: 0,
                    process_name: "fuzz",
                },
                &header,
                &mut line,
            );
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            assert_eq!(v["container"]["name"].as_str(), c.workload.name.as_deref());
        });
    }
});
