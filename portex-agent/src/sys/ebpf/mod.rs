//! Loading and attaching the kernel programs, and reading their loss counters and cost.
use std::{
    os::fd::{AsFd, AsRawFd},
    sync::Mutex,
};

use anyhow::{Context, Result, bail};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{TracePoint, trace_point::TracePointLinkId},
};
use portex_common::{BIND_CTX_SIZE, CONNECT_CTX_SIZE, counter};

mod load;

use load::{Loaded, is_syscall, load_programs, skip_group};

use crate::{
    logic::{
        arming::HookMode,
        kernel::{Hook, PROGRAMS, Skipped},
    },
    sys::{
        host,
        kernel_log::{self, KernelLog},
    },
};

/// The kernel object built by build.rs (aya-build).
#[cfg(not(portex_no_ebpf))]
pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portex"));
#[cfg(portex_no_ebpf)]
pub(crate) static OBJECT: &[u8] = &[];

#[derive(Clone, Debug)]
pub(crate) struct LoadOptions {
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ring_bytes: u32,
    /// Wake user space only when this many bytes wait (failures always wake).
    pub wakeup_bytes: u64,
    /// The connect/bind syscall tracepoints (errno, bind, cause). Without them portex
    /// still sees every TCP lifecycle and exhaustion signature, but not errno values
    /// other than the inferred EADDRNOTAVAIL, nor bind(). `Auto` loads them detached;
    /// the stream attaches them when `arming` says so.
    pub syscall_hooks: HookMode,
    /// Report sockets this host accepted (the server side of connections). They hold
    /// the listening port, not an ephemeral one; without them the kernel program drops
    /// their transitions at its first check.
    pub accepted: bool,
    /// The most verbose aya-log level the programs may emit (0: none; their log calls
    /// are then dead code the verifier removes). By default what the logger asks for
    /// (sys::logging).
    pub kernel_log: u8,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            ring_bytes: 4 << 20,
            // Batch wake-ups: one per 64 KiB (~580 events) or per reader tick (20 ms),
            // whichever comes first; failures always wake the reader at once.
            wakeup_bytes: 64 << 10,
            syscall_hooks: HookMode::On,
            accepted: true,
            kernel_log: crate::sys::logging::kernel_log_level(),
        }
    }
}

/// The loaded programs. Dropping it detaches them.
pub(crate) struct Probe {
    ebpf: Mutex<Ebpf>,
    counters: PerCpuArray<MapData, u64>,
    /// Every loaded program (attached or not): their statistics are cumulative.
    loaded: Vec<Loaded>,
    /// Programs attached for good.
    core: usize,
    /// Programs the running kernel refused or lacks (logged once each at start).
    skipped: Vec<Skipped>,
    /// Links of the syscall programs while they are attached.
    hooks: Mutex<Vec<(&'static str, TracePointLinkId)>>,
    /// The programs' diagnostics, until the reader thread takes them (kernel_log > 0).
    kernel_log: Mutex<Option<KernelLog>>,
}

impl Probe {
    pub(crate) fn load(opts: &LoadOptions) -> Result<(Probe, RingBuf<MapData>)> {
        if OBJECT.is_empty() {
            bail!(
                "this build has no eBPF object (built with AYA_BUILD_SKIP=1); rebuild without it"
            );
        }
        host::preflight()?;
        let accepted = opts.accepted as u64;
        let mut loader = EbpfLoader::new();
        // A small ring (--ring-kib 64) must wake the reader well before it is full.
        let wakeup = opts.wakeup_bytes.min(opts.ring_bytes as u64 / 4);
        loader.override_global("WAKEUP_BYTES", &wakeup, true);
        loader.override_global("REPORT_ACCEPTED", &accepted, true);
        loader.override_global(aya_log::LEVEL, &opts.kernel_log, true);
        loader.map_max_entries("EVENTS", opts.ring_bytes);
        let mut ebpf = loader
            .load(OBJECT)
            .context("loading the eBPF object into the kernel")?;
        let (loaded, core, mut skipped) = load_programs(&mut ebpf, opts)?;
        let kernel_log = match opts.kernel_log {
            0 => None,
            _ => Some(kernel_log::open(&mut ebpf)?),
        };
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS missing")?)?;
        let counters =
            PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("map COUNTERS missing")?)?;
        let mut probe = Probe {
            ebpf: Mutex::new(ebpf),
            counters,
            loaded,
            core,
            skipped: Vec::new(),
            hooks: Mutex::new(Vec::new()),
            kernel_log: Mutex::new(kernel_log),
        };
        if opts.syscall_hooks == HookMode::On
            && probe.loaded.iter().any(|l| is_syscall(l.name))
            && let Err(e) = probe.set_syscall_hooks(true)
        {
            // Loaded but not attachable (a kernel without syscall tracepoints): the
            // same loss as a refusal, said the same way.
            let why = format!("{e:#}");
            skip_group(&mut skipped, Hook::Syscall, &why);
        }
        probe.skipped = skipped;
        Ok((probe, ring))
    }

    /// The programs' diagnostics, for the thread that reads them (once).
    pub(crate) fn take_kernel_log(&self) -> Option<KernelLog> {
        self.kernel_log.lock().unwrap().take()
    }

    /// The programs this kernel refused, with why and what is lost.
    pub(crate) fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Every program of the catalogue and whether this kernel took it (loaded).
    pub(crate) fn programs(&self) -> Vec<(&'static str, bool)> {
        PROGRAMS
            .iter()
            .map(|p| (p.name, self.loaded.iter().any(|l| l.name == p.name)))
            .collect()
    }

    /// Programs attached now.
    pub(crate) fn attached(&self) -> usize {
        self.core + self.hooks.lock().unwrap().len()
    }

    pub(crate) fn syscall_hooks_attached(&self) -> bool {
        !self.hooks.lock().unwrap().is_empty()
    }

    /// Attaches or detaches the (loaded) syscall programs; a no-op when they already are.
    pub(crate) fn set_syscall_hooks(&self, on: bool) -> Result<()> {
        let mut ebpf = self.ebpf.lock().unwrap();
        let mut hooks = self.hooks.lock().unwrap();
        let attached = !hooks.is_empty();
        if on == attached {
            return Ok(());
        }
        if !on {
            for (name, link) in hooks.drain(..) {
                let prog: &mut TracePoint = ebpf.program_mut(name).unwrap().try_into()?;
                prog.detach(link)?;
            }
            set_hooks_flag(&mut ebpf, false)?;
            // A thread caught between sys_enter and sys_exit left its entry behind; the
            // state program would take a later connect() of that thread for one in a
            // syscall whose exit never comes.
            clear::<CONNECT_CTX_SIZE>(&mut ebpf, "CONNECTS")?;
            clear::<BIND_CTX_SIZE>(&mut ebpf, "BINDS")?;
            return Ok(());
        }
        // Before the first program runs, so that the state program looks for the
        // entries the syscall programs make.
        set_hooks_flag(&mut ebpf, true)?;
        for l in self.loaded.iter().filter(|l| is_syscall(l.name)) {
            let Some(p) = PROGRAMS.iter().find(|p| p.name == l.name) else {
                continue;
            };
            let (name, category, tp) = (l.object, p.category, p.tracepoint);
            let prog: &mut TracePoint = ebpf.program_mut(name).unwrap().try_into()?;
            match prog.attach(category, tp) {
                Ok(link) => hooks.push((name, link)),
                Err(e) => {
                    for (name, link) in hooks.drain(..) {
                        let prog: &mut TracePoint = ebpf.program_mut(name).unwrap().try_into()?;
                        let _ = prog.detach(link);
                    }
                    let _ = set_hooks_flag(&mut ebpf, false);
                    return Err(e).with_context(|| {
                        format!("attaching {name} to tracepoint {category}:{tp}")
                    });
                }
            }
        }
        Ok(())
    }

    /// A kernel counter summed over CPUs.
    pub(crate) fn counter(&self, index: u32) -> u64 {
        self.counters
            .get(&index, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    pub(crate) fn ringbuf_drops(&self) -> u64 {
        self.counter(counter::RINGBUF_FULL)
    }

    pub(crate) fn map_full(&self) -> u64 {
        self.counter(counter::MAP_FULL)
    }

    /// Runs the kernel skipped because another BPF program was running on the CPU
    /// (events lost without a trace in the ring buffer), summed over every loaded
    /// program, attached or not.
    pub(crate) fn recursion_misses(&self) -> u64 {
        let ebpf = self.ebpf.lock().unwrap();
        self.loaded
            .iter()
            .filter_map(|l| ebpf.program(l.object))
            .filter_map(|prog| prog.fd().ok())
            .filter_map(|fd| recursion_misses(fd.as_fd().as_raw_fd()))
            .sum()
    }
}

/// Tells the state program whether the syscall programs are attached (map HOOKS).
fn set_hooks_flag(ebpf: &mut Ebpf, on: bool) -> Result<()> {
    let map = ebpf.map_mut("HOOKS").context("map HOOKS missing")?;
    let mut a: Array<&mut MapData, u32> = Array::try_from(map)?;
    a.set(0, on as u32, 0)?;
    Ok(())
}

/// Empties a per-thread in-flight map (values of N bytes).
fn clear<const N: usize>(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let map = ebpf
        .map_mut(name)
        .with_context(|| format!("map {name} missing"))?;
    let mut m: HashMap<&mut MapData, u32, [u8; N]> = HashMap::try_from(map)?;
    let keys: Vec<u32> = m.keys().filter_map(|k| k.ok()).collect();
    for k in keys {
        let _ = m.remove(&k);
    }
    Ok(())
}

/// Reads recursion_misses of a program with BPF_OBJ_GET_INFO_BY_FD (aya does not
/// expose it).
fn recursion_misses(fd: i32) -> Option<u64> {
    // Offset in struct bpf_prog_info (include/uapi/linux/bpf.h), stable UAPI.
    const RECURSION_MISSES: usize = 208;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let mut info = [0u64; 32];
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: attr and info outlive the call; the kernel writes at most info_len bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return None;
    }
    let at = |off: usize| {
        if (attr.info_len as usize) >= off + 8 {
            info[off / 8]
        } else {
            0
        }
    };
    Some(at(RECURSION_MISSES))
}
