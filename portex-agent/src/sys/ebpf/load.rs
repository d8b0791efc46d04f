//! Loading the programs of the catalogue (logic::kernel): the variant each kernel takes,
//! an essential program's refusal as the agent's error, any other's as one line.
use anyhow::{Result, bail};
use aya::{
    Ebpf,
    programs::{ProgramError, TracePoint},
};

use super::LoadOptions;
use crate::{
    logic::{
        arming::HookMode,
        kernel::{self, Hook, PROGRAMS, Program, Skipped, tp_format, verifier},
    },
    sys::host,
};

pub(super) fn is_syscall(name: &str) -> bool {
    PROGRAMS
        .iter()
        .any(|p| p.name == name && p.hook == Hook::Syscall)
}

/// A program the kernel took: the feature's name and the object's program serving it.
#[derive(Clone, Copy)]
pub(super) struct Loaded {
    pub(super) name: &'static str,
    pub(super) object: &'static str,
}

/// Loads every program the options ask for and attaches the ones held for the whole
/// run. An essential program's refusal is the agent's error; any other is skipped
/// with one line (the syscall group whole: its programs work only together).
/// Returns the loaded programs, how many are attached, and the skipped ones.
pub(super) fn load_programs(
    ebpf: &mut Ebpf,
    opts: &LoadOptions,
) -> Result<(Vec<Loaded>, usize, Vec<Skipped>)> {
    let mut loaded = Vec::new();
    let mut core = 0;
    let mut skipped = Vec::new();
    let mut syscall_refused = None;
    for p in PROGRAMS {
        let syscall = p.hook == Hook::Syscall;
        if syscall && (opts.syscall_hooks == HookMode::Off || syscall_refused.is_some()) {
            continue;
        }
        let object = match load_variant(ebpf, p) {
            Ok(o) => o,
            Err(why) => {
                match p.hook {
                    Hook::Essential => bail!(kernel::essential_failed(p, &why)),
                    Hook::Syscall => syscall_refused = Some(format!("{}: {why}", p.name)),
                    Hook::Optional => skip(&mut skipped, p, why),
                }
                continue;
            }
        };
        loaded.push(Loaded {
            name: p.name,
            object,
        });
        if syscall {
            continue;
        }
        let prog: &mut TracePoint = ebpf.program_mut(object).unwrap().try_into()?;
        match prog.attach(p.category, p.tracepoint) {
            Ok(_) => core += 1,
            Err(e) => {
                let why = format!(
                    "attaching to tracepoint {}:{}: {e}",
                    p.category, p.tracepoint
                );
                if p.hook == Hook::Essential {
                    bail!(kernel::essential_failed(p, &why));
                }
                let _ = prog.unload();
                loaded.retain(|l| l.name != p.name);
                skip(&mut skipped, p, why);
            }
        }
    }
    if let Some(why) = syscall_refused {
        // The ones loaded before the refusal go too: half a group is no group.
        for l in loaded.iter().filter(|l| is_syscall(l.name)) {
            if let Ok(prog) = <&mut TracePoint>::try_from(ebpf.program_mut(l.object).unwrap()) {
                let _ = prog.unload();
            }
        }
        loaded.retain(|l| !is_syscall(l.name));
        skip_group(&mut skipped, Hook::Syscall, &why);
    }
    Ok((loaded, core, skipped))
}

/// Loads the first variant of `p` whose layout the running kernel has and which the
/// verifier accepts; its object name, or why none was taken (the last refusal).
fn load_variant(ebpf: &mut Ebpf, p: &Program) -> std::result::Result<&'static str, String> {
    // A variant whose layout is this kernel's and that the verifier refused says more
    // than the other variants' layouts.
    let (mut refused, mut other_layout) = (None, None);
    for v in p.variants {
        if let Some(layout) = v.layout
            && let Err(e) = layout_matches(p.category, p.tracepoint, layout)
        {
            other_layout.get_or_insert(e);
            continue;
        }
        match load_one(ebpf, v.object) {
            Ok(()) => return Ok(v.object),
            Err(e) => refused = Some(e),
        }
    }
    Err(refused
        .or(other_layout)
        .unwrap_or_else(|| "no variant of it is built".into()))
}

/// Loads one program into the kernel; the refusal as one line (the verifier's full
/// log goes to the debug log).
fn load_one(ebpf: &mut Ebpf, object: &str) -> std::result::Result<(), String> {
    refused_for_tests(object)?;
    let prog: &mut TracePoint = ebpf
        .program_mut(object)
        .ok_or("it is missing from the eBPF object")?
        .try_into()
        .map_err(|e: ProgramError| e.to_string())?;
    match prog.load() {
        Ok(()) => Ok(()),
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => {
            let log = format!("{verifier_log:?}");
            tracing::debug!("the verifier's log for {object}:\n{log}");
            Err(verifier::refusal(&io_error.to_string(), &log))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Debug builds only: PORTEX_TEST_REFUSE=prog,... makes the loader treat those programs
/// as refused by the verifier, so that the end-to-end tests can prove what a refusal
/// costs on a kernel that accepts everything (tests/tests/kernel_programs.rs).
fn refused_for_tests(object: &str) -> std::result::Result<(), String> {
    if cfg!(debug_assertions)
        && std::env::var("PORTEX_TEST_REFUSE").is_ok_and(|v| v.split(',').any(|p| p == object))
    {
        return Err("the verifier: refused by PORTEX_TEST_REFUSE (a test)".into());
    }
    Ok(())
}

/// Records a skipped program and says so, once.
fn skip(skipped: &mut Vec<Skipped>, p: &Program, why: String) {
    let s = Skipped {
        program: p.name,
        lost: p.lost,
        why,
    };
    tracing::warn!("{}", s.line());
    skipped.push(s);
}

/// Records every program of a group as skipped, with one line for the group.
pub(super) fn skip_group(skipped: &mut Vec<Skipped>, hook: Hook, why: &str) {
    let group: Vec<&Program> = PROGRAMS.iter().filter(|p| p.hook == hook).collect();
    let Some(first) = group.first() else { return };
    tracing::warn!(
        "the connect/bind syscall hooks are not loaded ({why}); without them, {}",
        first.lost
    );
    skipped.extend(group.iter().map(|p| Skipped {
        program: p.name,
        lost: p.lost,
        why: why.to_string(),
    }));
}

/// Whether the running kernel lays out `category:tp`'s record as `layout` says.
fn layout_matches(
    category: &str,
    tp: &str,
    layout: &[(&str, usize, usize)],
) -> std::result::Result<(), String> {
    let format = host::tracefs_events()
        .map(|d| d.join(category).join(tp).join("format"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .ok_or("its format cannot be read from tracefs")?;
    let bad = tp_format::mismatches(&format, layout);
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "this kernel lays out its record differently ({})",
            bad.join(", ")
        ))
    }
}
