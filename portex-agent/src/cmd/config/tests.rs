//! Layering, the file's keys and values, and precedence with real variables.
use std::path::Path;

use clap::Parser;

use super::*;
use crate::{
    cmd::cli::{self, Cli, Command},
    sys::test_env::with_vars,
};

/// The flags, without the environment (clap's derive parser alone).
fn args(v: &[&str]) -> AgentArgs {
    let mut all = vec!["portex", "agent"];
    all.extend_from_slice(v);
    match Cli::parse_from(all).command {
        Command::Agent(a) => a,
        _ => unreachable!(),
    }
}

/// The flags and `env`, as `portex agent` parses them (cli::parse).
fn args_env(v: &[&str], env: &[(&str, &str)]) -> Result<AgentArgs, clap::Error> {
    let mut all = vec!["portex", "agent"];
    all.extend_from_slice(v);
    let argv: Vec<std::ffi::OsString> = all.iter().map(Into::into).collect();
    with_vars(env, || match cli::parse(&argv)?.command {
        Command::Agent(a) => Ok(a),
        _ => unreachable!(),
    })
}

fn file(text: &str) -> AgentArgs {
    parse_file(Path::new("t.toml"), text).unwrap()
}

#[test]
fn flags_then_the_environment_then_the_file_then_defaults() {
    let f = || {
        file(
            "output = \"/from/file\"\nmetrics = \"9633\"\nwarn = 70.0\nrotate_keep = 3\n\
             accepted = true\ndport = [443]\nring_kib = 8\n",
        )
    };
    let env = [
        ("PORTEX_OUTPUT", "/from/env"),
        ("PORTEX_WARN", "60"),
        ("PORTEX_ACCEPTED", "false"),
        ("PORTEX_DPORT", "80,81"),
        ("PORTEX_QUEUE", "1M"),
    ];
    let a = args_env(&["--warn", "50", "--dport", "8080"], &env).unwrap();
    let c = resolve(&a, f()).unwrap();
    assert_eq!(c.warn, 50.0, "a flag beats its variable and the file");
    assert_eq!(c.filter.dport, ["8080".parse().unwrap()]);
    assert_eq!(c.output, "/from/env", "a variable beats the file");
    assert!(!c.accepted, "a variable turns off what the file turned on");
    assert_eq!(c.queue_bytes, 1 << 20, "a variable beats the default");
    assert_eq!(
        c.metrics,
        Some("127.0.0.1:9633".parse().unwrap()),
        "the file"
    );
    assert_eq!((c.rotate_keep, c.ring_kib), (3, 8), "the file");
    assert_eq!(c.critical, 95.0, "the default");
    // Without the flags, the variables; without either, the file.
    let c = resolve(&args_env(&[], &env).unwrap(), f()).unwrap();
    assert_eq!(c.warn, 60.0);
    assert_eq!(
        c.filter.dport,
        ["80".parse().unwrap(), "81".parse().unwrap()]
    );
    let c = resolve(&args_env(&[], &[]).unwrap(), f()).unwrap();
    assert_eq!((c.output.as_str(), c.warn), ("/from/file", 70.0));
    assert!(c.accepted);
    assert_eq!(c.filter.dport, ["443".parse().unwrap()]);
    // --config itself has its variable.
    let a = args_env(&[], &[("PORTEX_CONFIG", "/etc/portex/agent.toml")]).unwrap();
    assert_eq!(a.config, Some("/etc/portex/agent.toml".into()));
}

/// The layering itself, with the environment's layer injected (no variable set).
#[test]
fn each_layer_replaces_the_one_below_key_by_key() {
    let flags = args(&["--warn", "50", "--daddr", "10.0.0.1", "-6"]);
    let env = args(&[
        "--warn",
        "60",
        "--critical",
        "90",
        "--daddr",
        "10.0.0.2,10.0.0.3",
    ]);
    let f = file("warn = 70.0\ncritical = 99.0\nrotate_keep = 7\nipv4 = true\n");
    let c = resolve(&flags.over(env.clone()), f.clone()).unwrap();
    assert_eq!((c.warn, c.critical, c.rotate_keep), (50.0, 90.0, 7));
    assert_eq!(
        c.filter.daddr,
        ["10.0.0.1".parse().unwrap()],
        "a list is replaced"
    );
    assert_eq!(
        c.filter.family,
        Some(Family::V6),
        "-6 replaces the file's ipv4"
    );
    let c = resolve(&args(&[]).over(env), f.clone()).unwrap();
    assert_eq!((c.warn, c.critical), (60.0, 90.0));
    assert_eq!(c.filter.daddr.len(), 2);
    assert_eq!(c.filter.family, Some(Family::V4));
    let c = resolve(&args(&[]).over(AgentArgs::default()), f).unwrap();
    assert_eq!((c.warn, c.critical, c.metrics_max_pools), (70.0, 99.0, 20));
}

/// A flag beats a variable of the other half of a pair; within one layer the
/// halves exclude each other.
#[test]
fn a_flag_beats_the_variable_of_the_other_half_of_a_pair() {
    let with = |v: &[&str], env: &[(&str, &str)]| {
        resolve(&args_env(v, env).unwrap(), AgentArgs::default())
    };
    let c = with(&["-6"], &[("PORTEX_IPV4", "true")]).unwrap();
    assert_eq!(c.filter.family, Some(Family::V6));
    let c = with(
        &["--syscall-hooks", "on"],
        &[("PORTEX_NO_SYSCALL_HOOKS", "true")],
    )
    .unwrap();
    assert_eq!(c.syscall_hooks, HookMode::On);
    let c = with(&["--no-syscall-hooks"], &[("PORTEX_SYSCALL_HOOKS", "on")]).unwrap();
    assert_eq!(c.syscall_hooks, HookMode::Off);
    assert!(
        args_env(&["-4", "-6"], &[]).is_err(),
        "two flags: a usage error"
    );
    assert!(args_env(&["--syscall-hooks=on", "--no-syscall-hooks"], &[]).is_err());
    let e = with(&[], &[("PORTEX_IPV4", "1"), ("PORTEX_IPV6", "1")]).unwrap_err();
    assert!(e.to_string().contains("exclude each other"), "{e}");
}

#[test]
fn a_boolean_the_file_turns_on_can_be_turned_off() {
    let accepted = |v: &[&str], env: &[(&str, &str)], f: &str| {
        resolve(&args_env(v, env).unwrap(), file(f)).map(|c| c.accepted)
    };
    assert!(!accepted(&[], &[], "").unwrap(), "off by default");
    assert!(accepted(&["--accepted"], &[], "").unwrap());
    assert!(accepted(&[], &[], "accepted = true").unwrap());
    assert!(!accepted(&["--accepted=false"], &[], "accepted = true").unwrap());
    assert!(!accepted(&["--accepted=no"], &[], "accepted = true").unwrap());
    assert!(accepted(&["--accepted=true"], &[("PORTEX_ACCEPTED", "0")], "").unwrap());
    assert!(!accepted(&[], &[("PORTEX_ACCEPTED", "off")], "accepted = true").unwrap());
    // The value is attached (--accepted=false): a separate word is not one.
    assert!(args_env(&["--accepted", "false"], &[]).is_err());
    assert!(args_env(&["--accepted=maybe"], &[]).is_err());
    assert!(args_env(&[], &[("PORTEX_ACCEPTED", "maybe")]).is_err());
    // The same for the filters' booleans, and the older no_syscall_hooks key.
    let c = resolve(
        &args_env(&["--failures-only=false"], &[]).unwrap(),
        file("failures_only = true"),
    )
    .unwrap();
    assert!(!c.filter.failures_only);
    let hooks = |v: &[&str], f: &str| resolve(&args_env(v, &[]).unwrap(), file(f));
    let off = "no_syscall_hooks = true";
    assert_eq!(hooks(&[], off).unwrap().syscall_hooks, HookMode::Off);
    assert_eq!(
        hooks(&["--no-syscall-hooks=false"], off)
            .unwrap()
            .syscall_hooks,
        HookMode::Auto
    );
    assert_eq!(
        hooks(&["--no-syscall-hooks=false"], "syscall_hooks = \"on\"")
            .unwrap()
            .syscall_hooks,
        HookMode::On
    );
}

#[test]
fn filters_resolve_from_flags_the_environment_and_the_file() {
    let c = resolve(
        &args_env(&[], &[]).unwrap(),
        file(
            "pid = 42\ncomm = \"curl\"\ndaddr = \"10.0.0.0/8, ::1\"\n\
             dport = [443, \"8000-8100\"]\nnetns = \"blue\"\ncontainer = \"3F1C\"\n\
             ipv4 = true\ncount = 5\nduration = \"10m\"\n",
        ),
    )
    .unwrap()
    .filter;
    assert_eq!(c.pid, Some(42));
    assert_eq!(c.comm.as_deref(), Some("curl"));
    assert_eq!(
        c.daddr,
        ["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]
    );
    assert_eq!(
        c.dport,
        ["443".parse().unwrap(), "8000-8100".parse().unwrap()]
    );
    assert_eq!(c.netns.as_deref(), Some("blue"));
    assert_eq!(c.container.as_deref(), Some("3f1c"));
    assert_eq!(c.family, Some(Family::V4));
    assert_eq!(c.count, Some(5));
    assert_eq!(c.duration, Some(Duration::from_secs(600)));
    // A number of seconds works in the file too.
    let d = resolve(&args(&[]), file("duration = 90")).unwrap();
    assert_eq!(d.filter.duration, Some(Duration::from_secs(90)));

    // -4 and -6 are one setting: the command line's replaces the file's.
    let fam = |v: &[&str], env: &[(&str, &str)], f: &str| {
        resolve(&args_env(v, env).unwrap(), file(f)).map(|c| c.filter.family)
    };
    assert_eq!(fam(&["-6"], &[], "ipv4 = true").unwrap(), Some(Family::V6));
    assert_eq!(fam(&["--ipv4=false"], &[], "ipv4 = true").unwrap(), None);
    assert_eq!(
        fam(&[], &[("PORTEX_IPV6", "1")], "ipv4 = true").unwrap(),
        Some(Family::V6)
    );
    assert_eq!(fam(&["-4"], &[], "").unwrap(), Some(Family::V4));
    assert!(args_env(&["-4", "-6"], &[]).is_err());
    assert!(fam(&[], &[], "ipv4 = true\nipv6 = true").is_err());

    // Short flags as tcplife's and tcpconnect's users type them.
    let a = args_env(&["-p", "7", "-4", "--count", "3", "--duration", "2s"], &[]).unwrap();
    let c = resolve(&a, AgentArgs::default()).unwrap().filter;
    assert_eq!((c.pid, c.count), (Some(7), Some(3)));
    assert_eq!(c.duration, Some(Duration::from_secs(2)));
}

#[test]
fn bad_filter_values_are_one_clear_error_from_a_flag_a_variable_or_the_file() {
    for (flag, var, key) in [
        ("--dport=0", ("PORTEX_DPORT", "0"), "dport = [0]"),
        (
            "--dport=90-80",
            ("PORTEX_DPORT", "90-80"),
            "dport = \"90-80\"",
        ),
        (
            "--daddr=10.0.0.0/33",
            ("PORTEX_DADDR", "10.0.0.0/33"),
            "daddr = [\"10.0.0.0/33\"]",
        ),
        (
            "--container=web",
            ("PORTEX_CONTAINER", "web"),
            "container = \"web\"",
        ),
        ("--duration=0", ("PORTEX_DURATION", "0"), "duration = 0"),
        ("--count=0", ("PORTEX_COUNT", "0"), "count = 0"),
    ] {
        assert!(args_env(&[flag], &[]).is_err(), "{flag}");
        assert!(args_env(&[], &[var]).is_err(), "{var:?}");
        let by_key =
            parse_file(Path::new("t.toml"), key).and_then(|f| resolve(&args(&[]), f).map(|_| ()));
        let e = by_key.expect_err(key).to_string();
        assert!(e.contains("t.toml") || e.starts_with("count"), "{key}: {e}");
    }
    // Unknown keys stay errors beside the filter keys, and every error names its line.
    let e = parse_file(Path::new("t.toml"), "dport = 80\ndprot = 81").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("config t.toml: line 2: unknown key `dprot` (the keys are"),
        "{e}"
    );
    let e = parse_file(Path::new("t.toml"), "dport = 80\n\ncomm = 1").unwrap_err();
    assert!(e.to_string().starts_with("config t.toml: line 3: "), "{e}");
    let e = parse_file(Path::new("t.toml"), "config = \"/etc/x.toml\"").unwrap_err();
    assert!(e.to_string().contains("unknown key `config`"), "{e}");
}

#[test]
fn flags_override_the_file_which_overrides_defaults() {
    let file = file(
        "output = \"/var/log/portex/events.ndjson\"\nmetrics = \"127.0.0.1:9633\"\nrotate_size = \"64M\"\nwarn = 70.0\n",
    );
    let c = resolve(&args(&["--warn", "60"]), file).unwrap();
    assert_eq!(c.output, "/var/log/portex/events.ndjson");
    assert_eq!(c.metrics, Some("127.0.0.1:9633".parse().unwrap()));
    assert_eq!(c.rotate_size, 64 << 20);
    assert_eq!(c.warn, 60.0);
    assert_eq!(c.critical, 95.0);
    let c = resolve(&args(&["--metrics", "9633"]), AgentArgs::default()).unwrap();
    assert_eq!(c.metrics, Some("127.0.0.1:9633".parse().unwrap()));
    let d = resolve(&args(&[]), AgentArgs::default()).unwrap();
    assert_eq!((d.output.as_str(), d.metrics), ("-", None));
}

#[test]
fn unknown_keys_and_bad_values_are_errors() {
    assert!(parse_file(Path::new("t.toml"), "outptu = \"x\"").is_err());
    let file = file("metrics = \"nowhere\"");
    assert!(resolve(&args(&[]), file).is_err());
}

#[test]
fn syscall_hooks_default_to_auto_and_follow_flags_then_file() {
    let mode = |a: &[&str], f: &str| {
        resolve(&args(a), parse_file(Path::new("t.toml"), f)?).map(|c| c.syscall_hooks)
    };
    assert_eq!(mode(&[], "").unwrap(), HookMode::Auto);
    assert_eq!(mode(&["--no-syscall-hooks"], "").unwrap(), HookMode::Off);
    assert_eq!(
        mode(&["--syscall-hooks", "on"], "syscall_hooks = \"off\"").unwrap(),
        HookMode::On
    );
    assert_eq!(mode(&[], "syscall_hooks = \"off\"").unwrap(), HookMode::Off);
    assert_eq!(mode(&[], "no_syscall_hooks = true").unwrap(), HookMode::Off);
    let e = mode(&[], "syscall_hooks = \"sometimes\"").unwrap_err();
    assert_eq!(
        e.to_string(),
        "config t.toml: line 1: expected on, off or auto, got sometimes"
    );
}

#[test]
fn every_bound_applies_to_the_flag_and_the_key_alike() {
    for (flag, key) in [
        (vec!["--ring-kib", "3"], "ring_kib = 3"),
        (vec!["--queue", "1K"], "queue = \"1K\""),
        (vec!["--rotate-size", "1"], "rotate_size = 1"),
        (vec!["--rotate-keep", "1001"], "rotate_keep = 1001"),
        (
            vec!["--metrics-max-pools", "10001"],
            "metrics_max_pools = 10001",
        ),
        (
            vec!["--metrics-top-processes", "10001"],
            "metrics_top_processes = 10001",
        ),
        (
            vec!["--syscall-hooks-linger", "999999999"],
            "syscall_hooks_linger = 999999999",
        ),
        (vec!["--warn", "101"], "warn = 101.0"),
        (vec!["--nat-scan", "3601"], "nat_scan = 3601"),
    ] {
        let by_flag = resolve(&args(&flag), AgentArgs::default()).unwrap_err();
        let by_key = resolve(&args(&[]), parse_file(Path::new("t"), key).unwrap()).unwrap_err();
        assert_eq!(by_flag.to_string(), by_key.to_string(), "{key}");
    }
}

#[test]
fn the_packaged_config_file_is_valid() {
    let text = include_str!("../../../../packaging/systemd/agent.toml");
    let c = resolve(&args(&[]), file(text)).unwrap();
    assert_eq!(c.syscall_hooks, HookMode::Auto);
    assert_eq!(c.syscall_hooks_linger, 300);
    assert!(!c.accepted);
    assert_eq!(c.metrics, Some("127.0.0.1:9633".parse().unwrap()));
    assert_eq!(c.nat_scan, 5);
}

#[test]
fn the_nat_scan_period_defaults_to_5_s_and_0_turns_it_off() {
    assert_eq!(
        resolve(&args(&[]), AgentArgs::default()).unwrap().nat_scan,
        5
    );
    let c = resolve(&args(&["--nat-scan", "0"]), file("nat_scan = 30")).unwrap();
    assert_eq!(c.nat_scan, 0);
    assert_eq!(
        resolve(&args(&[]), file("nat_scan = 30")).unwrap().nat_scan,
        30
    );
}
