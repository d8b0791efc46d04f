//! Just enough of bpf(2) for the soak: the maps and programs a process holds (found
//! through /proc/PID/fdinfo by portex_e2e::bpf_fds), a map's name, and the
//! entries of a hash map, read with BPF_MAP_LOOKUP_BATCH (bucket by bucket, so entries
//! deleted while it runs cannot restart the walk the way BPF_MAP_GET_NEXT_KEY would).
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};

const PROG_GET_FD_BY_ID: i64 = 13;
const MAP_GET_FD_BY_ID: i64 = 14;
const OBJ_GET_INFO_BY_FD: i64 = 15;
const MAP_LOOKUP_BATCH: i64 = 24;
/// BPF_MAP_TYPE_HASH and BPF_MAP_TYPE_LRU_HASH: the maps whose occupancy can grow.
pub const HASH_TYPES: [u32; 2] = [1, 9];

/// A prefix of `union bpf_attr` (the kernel zero-extends what it is not given).
type Attr = [u64; 10];

fn bpf(cmd: i64, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid, zero-initialised bpf_attr prefix of the size passed;
    // the pointers inside it point to live buffers of the sizes the command expects.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size_of::<Attr>()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_by_id(cmd: i64, id: u32) -> std::io::Result<OwnedFd> {
    let mut a: Attr = [0; 10];
    a[0] = id as u64;
    let fd = bpf(cmd, &mut a)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A map held by a process, from its fdinfo.
#[derive(Clone, Debug)]
pub struct MapRef {
    pub id: u32,
    pub kind: u32,
    pub key_size: usize,
    pub value_size: usize,
    pub name: String,
}

/// The maps (by id) and programs (ids) whose descriptors `pid` holds.
pub fn held_by(pid: u32) -> Result<(Vec<MapRef>, Vec<u32>)> {
    let (mut maps, mut progs) = (Vec::new(), Vec::new());
    for fd in portex_e2e::bpf_fds(pid).context("fds of the agent")? {
        let field = |k: &str| fd.field(k).unwrap_or(0) as u32;
        if fd.kind == "map" {
            let id = field("map_id");
            if maps.iter().any(|m: &MapRef| m.id == id) {
                continue;
            }
            maps.push(MapRef {
                id,
                kind: field("map_type"),
                key_size: field("key_size") as usize,
                value_size: field("value_size") as usize,
                name: map_name(id).unwrap_or_else(|_| format!("map{id}")),
            });
        } else if fd.kind == "prog" {
            progs.push(field("prog_id"));
        }
    }
    maps.sort_by_key(|m| m.id);
    progs.sort_unstable();
    progs.dedup();
    Ok((maps, progs))
}

fn map_name(id: u32) -> Result<String> {
    let fd = fd_by_id(MAP_GET_FD_BY_ID, id)?;
    // struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags (u32
    // each), then char name[16] at offset 24.
    let mut info = [0u8; 80];
    let mut a: Attr = [0; 10];
    a[0] = fd.as_raw_fd() as u64 | ((info.len() as u64) << 32);
    a[1] = info.as_mut_ptr() as u64;
    bpf(OBJ_GET_INFO_BY_FD, &mut a)?;
    let name = &info[24..40];
    let end = name.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// Calls `each(key, value)` for every entry of a hash or LRU hash map.
pub fn for_each_entry(m: &MapRef, mut each: impl FnMut(&[u8], &[u8])) -> Result<()> {
    if !HASH_TYPES.contains(&m.kind) {
        bail!("map {} is not a hash map", m.name);
    }
    let fd = fd_by_id(MAP_GET_FD_BY_ID, m.id).with_context(|| format!("map {}", m.name))?;
    let mut n: usize = 4096;
    let (mut keys, mut values) = (vec![0u8; n * m.key_size], vec![0u8; n * m.value_size]);
    // The batch token of a hash map is a bucket index (u32); room for a u64 anyway.
    let (mut token, mut next) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut a: Attr = [0; 10];
        a[0] = if first {
            0
        } else {
            &token as *const u64 as u64
        };
        a[1] = &mut next as *mut u64 as u64;
        a[2] = keys.as_mut_ptr() as u64;
        a[3] = values.as_mut_ptr() as u64;
        a[4] = n as u64 | ((fd.as_raw_fd() as u64) << 32);
        let r = bpf(MAP_LOOKUP_BATCH, &mut a);
        let got = (a[4] & 0xffff_ffff) as usize;
        let done = match r {
            Ok(_) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && got == 0 => {
                // One bucket holds more entries than the buffers: grow and retry.
                n *= 2;
                keys.resize(n * m.key_size, 0);
                values.resize(n * m.value_size, 0);
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading map {}", m.name)),
        };
        for i in 0..got.min(n) {
            each(
                &keys[i * m.key_size..(i + 1) * m.key_size],
                &values[i * m.value_size..(i + 1) * m.value_size],
            );
        }
        if done {
            return Ok(());
        }
        token = next;
        first = false;
    }
}

/// True once no program with this id exists any more.
pub fn prog_gone(id: u32) -> bool {
    matches!(fd_by_id(PROG_GET_FD_BY_ID, id), Err(e) if e.raw_os_error() == Some(libc::ENOENT))
}
