//! `status` names the owners of TIME_WAIT ports (which the kernel does not keep) when a
//! portex with a ledger is running: it reads the file the agent rewrites every second.
use std::{path::Path, thread, time::Duration};

use portex_e2e::*;

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn status_names_time_wait_owners_from_a_running_agent() {
    if !require_root() {
        return;
    }
    let dir = TmpDir::new("tw-owners");
    let portex = Portex::agent_to(&dir.join("events.ndjson"), &["--metrics", "off"]);
    let own_file = format!("/run/portex/tw-owners/{}.json", portex.pid());
    let ns = Netns::with_range("twown", 41000, 41999);
    // 12 connections this side closes first: 12 client-side TIME_WAIT of the driver.
    let d = ns.drive(&["client-close", "127.0.0.1:5000", "12"]);
    let mut seen = None;
    // Up to 30 s: the file is rewritten every second, later on a loaded machine.
    for _ in 0..150 {
        thread::sleep(Duration::from_millis(200));
        let (_, v) = status_in(&ns, &[]);
        let n = &v["namespaces"][0];
        if n["time_wait_owners_named"] == 12 {
            seen = Some(n.clone());
            break;
        }
    }
    let n = seen.expect("status never named the 12 TIME_WAIT owners");
    let pool = &n["pools"][0];
    assert_eq!(pool["time_wait"], 12, "{pool}");
    let holder = &pool["holders"][0];
    assert_eq!(holder["pid"], d.pid, "{pool}");
    assert_eq!(holder["time_wait"], 12, "{pool}");
    assert!(Path::new(&own_file).exists());
    drop(portex.stop());
    assert!(
        !Path::new(&own_file).exists(),
        "the agent left {own_file} behind"
    );
}
