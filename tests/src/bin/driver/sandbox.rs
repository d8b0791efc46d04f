//! `unit-sandbox CAPS SYSCALLS FAMILIES WRITABLE UMASK DENY -- PROG ARGS...`: runs PROG the way
//! packaging/systemd/portex.service would, as far as a process can do it to itself
//! without systemd as PID 1 (tests::unit builds the arguments from the unit):
//! - a mount namespace of its own (PrivateMounts) in which everything is read-only but
//!   the WRITABLE directories (ProtectSystem=strict with LogsDirectory and
//!   RuntimeDirectory; stricter than the unit, whose /dev, /proc and /sys stay partly
//!   writable), and a new /proc with hidepid=invisible (ProtectProc=invisible);
//! - a UTS namespace of its own (ProtectHostname);
//! - the capability bounding set CAPS (CapabilityBoundingSet), no new privileges;
//! - the file mode mask UMASK (octal; UMask=);
//! - a seccomp filter as systemd builds it: only the numbers in SYSCALLS, native
//!   architecture only; any other call fails with the errno DENY, or kills the process
//!   where DENY is `kill` (SystemCallFilter, SystemCallErrorNumber,
//!   SystemCallArchitectures=native); socket() only for FAMILIES, else EAFNOSUPPORT
//!   (RestrictAddressFamilies); no namespace but net for setns(), unshare() and clone(),
//!   clone3() ENOSYS so that the C library falls back to clone() (RestrictNamespaces);
//!   no writable and executable memory (MemoryDenyWriteExecute).
//!
//! Not emulated: PrivateDevices, PrivateTmp, ProtectKernel*'s hiding of individual
//! files, IPAddressDeny (a BPF program on the unit's cgroup), LockPersonality.
#![cfg(target_arch = "x86_64")]
use std::{
    ffi::CString,
    io::{Error, Result},
};

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 i (low half first).
const NR: u32 = 0;
const ARCH: u32 = 4;
fn arg(i: u32) -> u32 {
    16 + 8 * i
}
/// Every CLONE_NEW* flag but CLONE_NEWNET.
const NS_BUT_NET: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | 0x80/* CLONE_NEWTIME */) as u32;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}
fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}
const LD: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const JGE: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
const JSET: u32 = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;
const AND: u32 = libc::BPF_ALU | libc::BPF_AND | libc::BPF_K;
const RET: u32 = libc::BPF_RET | libc::BPF_K;

fn ret(v: u32) -> libc::sock_filter {
    stmt(RET, v)
}
fn errno(e: i32) -> u32 {
    SECCOMP_RET_ERRNO | e as u32
}

/// A block that decides on one syscall by its arguments; it ends in a return, so the
/// accumulator still holds the syscall number for the next test when it is skipped.
fn guarded(nr: u32, body: Vec<libc::sock_filter>) -> Vec<libc::sock_filter> {
    let mut v = vec![jump(JEQ, nr, 0, body.len() as u8)];
    v.extend(body);
    v
}

/// The filter program (see the module's comment).
fn program(allowed: &[u32], families: &[u32], deny: u32) -> Vec<libc::sock_filter> {
    let mut p = vec![
        stmt(LD, ARCH),
        jump(JEQ, AUDIT_ARCH_X86_64, 1, 0),
        ret(deny),
        stmt(LD, NR),
        jump(JGE, X32_SYSCALL_BIT, 0, 1),
        ret(deny),
    ];
    let has = |nr: i64| allowed.contains(&(nr as u32));
    if has(libc::SYS_socket) {
        let mut body = vec![stmt(LD, arg(0))];
        for f in families {
            body.push(jump(JEQ, *f, 0, 1));
            body.push(ret(SECCOMP_RET_ALLOW));
        }
        body.push(ret(errno(libc::EAFNOSUPPORT)));
        p.extend(guarded(libc::SYS_socket as u32, body));
    }
    if has(libc::SYS_setns) {
        // Only an explicit CLONE_NEWNET (0 would join any kind of namespace).
        let body = vec![
            stmt(LD, arg(1)),
            jump(JEQ, libc::CLONE_NEWNET as u32, 0, 1),
            ret(SECCOMP_RET_ALLOW),
            ret(errno(libc::EPERM)),
        ];
        p.extend(guarded(libc::SYS_setns as u32, body));
    }
    for nr in [libc::SYS_unshare, libc::SYS_clone] {
        if has(nr) {
            let body = vec![
                stmt(LD, arg(0)),
                jump(JSET, NS_BUT_NET, 0, 1),
                ret(errno(libc::EPERM)),
                ret(SECCOMP_RET_ALLOW),
            ];
            p.extend(guarded(nr as u32, body));
        }
    }
    if has(libc::SYS_clone3) {
        // Its flags sit behind a pointer that seccomp cannot read.
        p.extend(guarded(
            libc::SYS_clone3 as u32,
            vec![ret(errno(libc::ENOSYS))],
        ));
    }
    let wx = (libc::PROT_WRITE | libc::PROT_EXEC) as u32;
    if has(libc::SYS_mmap) {
        let body = vec![
            stmt(LD, arg(2)),
            stmt(AND, wx),
            jump(JEQ, wx, 0, 1),
            ret(errno(libc::EPERM)),
            ret(SECCOMP_RET_ALLOW),
        ];
        p.extend(guarded(libc::SYS_mmap as u32, body));
    }
    for nr in [libc::SYS_mprotect, libc::SYS_pkey_mprotect] {
        if has(nr) {
            let body = vec![
                stmt(LD, arg(2)),
                jump(JSET, libc::PROT_EXEC as u32, 0, 1),
                ret(errno(libc::EPERM)),
                ret(SECCOMP_RET_ALLOW),
            ];
            p.extend(guarded(nr as u32, body));
        }
    }
    for nr in allowed {
        p.push(jump(JEQ, *nr, 0, 1));
        p.push(ret(SECCOMP_RET_ALLOW));
    }
    p.push(ret(deny));
    p
}

fn check(rc: libc::c_int, what: &str) -> Result<()> {
    if rc != 0 {
        let e = Error::last_os_error();
        return Err(Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn mount_setattr(path: &str, flags: u32, set: u64, clr: u64) -> Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    let p = cstr(path);
    // SAFETY: valid path and attribute struct of the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            p.as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            size_of::<libc::mount_attr>(),
        )
    } as libc::c_int;
    check(rc, &format!("mount_setattr {path}"))
}

fn mount(src: &str, target: &str, fstype: Option<&str>, flags: u64, data: &str) -> Result<()> {
    let (s, t, d) = (cstr(src), cstr(target), cstr(data));
    let f = fstype.map(cstr);
    // SAFETY: NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            d.as_ptr().cast(),
        )
    };
    check(rc, &format!("mount {target}"))
}

fn cap_number(name: &str) -> u32 {
    match name {
        "dac_read_search" => 2,
        "net_admin" => 12,
        "sys_ptrace" => 19,
        "sys_admin" => 21,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("unit-sandbox does not know cap_{other}"),
    }
}

fn list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse()
                .ok()
                .unwrap_or_else(|| panic!("not a number: {x}"))
        })
        .collect()
}

pub fn unit_sandbox(args: &[String]) -> ! {
    let [
        caps,
        syscalls,
        families,
        writable,
        umask,
        deny,
        dash,
        cmd @ ..,
    ] = args
    else {
        panic!("unit-sandbox CAPS SYSCALLS FAMILIES WRITABLE UMASK DENY -- PROG ARGS...");
    };
    let deny = match deny.as_str() {
        "kill" => SECCOMP_RET_KILL_PROCESS,
        n => errno(n.parse().expect("an errno number or kill")),
    };
    assert_eq!(dash, "--");
    let umask = libc::mode_t::from_str_radix(umask, 8).expect("an octal umask");
    // SAFETY: sets this process's mask; cannot fail.
    unsafe { libc::umask(umask) };
    let err = enter(caps, &list(syscalls), &list(families), writable, deny, cmd).unwrap_err();
    eprintln!("unit-sandbox: {err}");
    std::process::exit(126);
}

fn enter(
    caps: &str,
    syscalls: &[u32],
    families: &[u32],
    writable: &str,
    deny: u32,
    cmd: &[String],
) -> Result<std::convert::Infallible> {
    // SAFETY: plain syscalls on this process; no pointers.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) };
    check(rc, "unshare")?;
    // Mounts of the host still arrive (ip netns add), ours do not leave.
    mount("none", "/", None, libc::MS_REC | libc::MS_SLAVE, "")?;
    mount(
        "proc",
        "/proc",
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "hidepid=invisible",
    )?;
    let writable: Vec<&str> = writable.split(',').filter(|w| !w.is_empty()).collect();
    for w in &writable {
        mount(w, w, None, libc::MS_BIND | libc::MS_REC, "")?;
    }
    const MOUNT_ATTR_RDONLY: u64 = 1;
    const AT_RECURSIVE: u32 = 0x8000;
    mount_setattr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY, 0)?;
    for w in &writable {
        mount_setattr(w, AT_RECURSIVE, 0, MOUNT_ATTR_RDONLY)?;
    }
    let keep: Vec<u32> = caps.split(',').map(cap_number).collect();
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")?
        .trim()
        .parse()
        .map_err(|_| Error::other("cap_last_cap"))?;
    for cap in (0..=last).filter(|c| !keep.contains(c)) {
        // SAFETY: as above.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        check(rc, "dropping a capability")?;
    }
    // SAFETY: as above.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    check(rc, "no_new_privs")?;
    let mut filter = program(syscalls, families, deny);
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: a valid program that outlives the call (the kernel copies it).
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    check(rc, "installing the syscall filter")?;
    let argv: Vec<CString> = cmd.iter().map(|a| cstr(a)).collect();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: a NULL-terminated array of NUL-terminated strings.
    unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
    Err(Error::other(format!(
        "exec {}: {}",
        cmd[0],
        Error::last_os_error()
    )))
}
