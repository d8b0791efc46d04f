//! The sink against real files: rotation, hostile paths, deleted files, partial lines,
//! the byte bound, the null device.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use super::*;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("portex-sink-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("64M"), Ok(64 << 20));
    assert_eq!(parse_size("10k"), Ok(10 << 10));
    assert_eq!(parse_size("123"), Ok(123));
    assert!(parse_size("lots").is_err());
}

#[test]
fn rotates_by_size_and_keeps_n_files() {
    let d = tmpdir("rot");
    let p = d.join("events.ndjson");
    let mut s = Sink::start(SinkOptions {
        target: Target::File(p.clone()),
        rotate_size: 100,
        rotate_keep: 2,
        queue_bytes: 1 << 20,
    })
    .unwrap();
    for _ in 0..10 {
        s.send(Chunk {
            bytes: vec![b'x'; 59].into_iter().chain([b'\n']).collect(),
            lines: 1,
        });
    }
    s.close();
    assert!(p.exists() && d.join("events.ndjson.1").exists() && d.join("events.ndjson.2").exists());
    assert!(!d.join("events.ndjson.3").exists());
    assert_eq!(s.counts.lines_written.load(Ordering::Relaxed), 10);
    // 60-byte lines, 100-byte files: one line a file, so 10 lines rotate 9 times.
    assert_eq!(s.counts.rotations.load(Ordering::Relaxed), 9);
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn one_big_chunk_is_split_at_lines_across_rotations() {
    let d = tmpdir("split");
    let p = d.join("events.ndjson");
    let mut s = Sink::start(SinkOptions {
        target: Target::File(p.clone()),
        rotate_size: 130,
        rotate_keep: 9,
        queue_bytes: 1 << 20,
    })
    .unwrap();
    let line: Vec<u8> = vec![b'y'; 59].into_iter().chain([b'\n']).collect();
    s.send(Chunk {
        bytes: line.repeat(10),
        lines: 10,
    });
    s.close();
    let mut total = 0;
    for f in std::iter::once(p.clone()).chain((1..=9).map(|i| d.join(format!("events.ndjson.{i}"))))
    {
        if let Ok(b) = fs::read(&f) {
            assert!(
                b.len() <= 130 && b.ends_with(b"\n"),
                "{} has {} bytes",
                f.display(),
                b.len()
            );
            total += b.len();
        }
    }
    assert_eq!(total, 600);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn an_unwritable_path_is_refused_at_start() {
    let r = Sink::start(SinkOptions {
        target: Target::File("/nonexistent-dir/x.ndjson".into()),
        rotate_size: 0,
        rotate_keep: 0,
        queue_bytes: 1 << 20,
    });
    assert!(r.is_err());
}

fn file_sink(p: &Path, queue_bytes: u64) -> Sink {
    Sink::start(SinkOptions {
        target: Target::File(p.to_path_buf()),
        rotate_size: 0,
        rotate_keep: 0,
        queue_bytes,
    })
    .unwrap()
}

fn lines(n: usize) -> Chunk {
    Chunk {
        bytes: b"{\"a\":1}\n".repeat(n),
        lines: n as u64,
    }
}

#[test]
fn symlinks_fifos_hard_links_and_foreign_files_are_refused() {
    let d = tmpdir("refuse");
    let secret = d.join("secret");
    fs::write(&secret, "x").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let link = d.join("link.ndjson");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let e = open_output(&link).unwrap_err().to_string();
    assert!(e.contains("symbolic link"), "{e}");
    assert_eq!(fs::read(&secret).unwrap(), b"x");

    let fifo = d.join("fifo.ndjson");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Must return at once (no reader), not block start-up.
    let e = open_output(&fifo).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");

    assert!(
        open_output(Path::new("/dev/null")).is_ok(),
        "discarding is allowed"
    );

    let hard = d.join("hard.ndjson");
    fs::hard_link(&secret, &hard).unwrap();
    let e = open_output(&hard).unwrap_err().to_string();
    assert!(e.contains("hard links"), "{e}");
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_world_writable_file_is_tightened_to_0640() {
    let d = tmpdir("mode");
    let p = d.join("events.ndjson");
    fs::write(&p, "").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
    drop(open_output(&p).unwrap());
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn the_null_device_is_never_rotated() {
    let mut s = Sink::start(SinkOptions {
        target: Target::File("/dev/null".into()),
        rotate_size: 10,
        rotate_keep: 2,
        queue_bytes: 1 << 20,
    })
    .unwrap();
    s.send(lines(100));
    assert!(s.close());
    assert_eq!(s.counts.rotations.load(Ordering::Relaxed), 0);
    assert_eq!(s.counts.lines_written.load(Ordering::Relaxed), 100);
    assert!(!Path::new("/dev/null.1").exists());
}

#[test]
fn a_deleted_file_is_noticed_and_created_again() {
    let d = tmpdir("deleted");
    let p = d.join("events.ndjson");
    let mut s = file_sink(&p, 1 << 20);
    s.send(lines(3));
    // Wait until the writer has the first chunk out.
    let end = Instant::now() + Duration::from_secs(5);
    while s.counts.lines_written.load(Ordering::Relaxed) < 3 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    fs::remove_file(&p).unwrap();
    s.send(lines(2));
    assert!(s.close());
    assert_eq!(fs::read(&p).unwrap(), b"{\"a\":1}\n".repeat(2));
    assert_eq!(s.counts.lines_written.load(Ordering::Relaxed), 5);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn steady_traffic_does_not_postpone_the_retry_after_a_failure() {
    let d = tmpdir("retry");
    let sub = d.join("sub");
    fs::create_dir_all(&sub).unwrap();
    let p = sub.join("events.ndjson");
    let mut s = file_sink(&p, 1 << 20);
    fs::remove_dir_all(&sub).unwrap();
    // The first chunk finds the file gone and cannot create it: a failure.
    s.send(lines(1));
    let end = Instant::now() + Duration::from_secs(5);
    while s.counts.write_errors.load(Ordering::Relaxed) == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    fs::create_dir_all(&sub).unwrap();
    // A chunk every 50 ms for 1.5 s: the retry one second after the failure must
    // happen all the same.
    for _ in 0..30 {
        s.send(lines(1));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.close());
    let written = s.counts.lines_written.load(Ordering::Relaxed);
    assert!(written > 0, "never retried");
    assert_eq!(fs::read(&p).unwrap().len() as u64, written * 8);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_partial_line_left_behind_is_never_glued_to_the_next() {
    let d = tmpdir("dangling");
    let p = d.join("events.ndjson");
    fs::write(&p, "{\"cut\":").unwrap();
    let mut s = file_sink(&p, 1 << 20);
    s.send(lines(1));
    assert!(s.close());
    assert_eq!(fs::read_to_string(&p).unwrap(), "{\"cut\":\n{\"a\":1}\n");
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn the_queue_is_bounded_in_bytes() {
    let d = tmpdir("bytes");
    let p = d.join("events.ndjson");
    let mut s = file_sink(&p, 64);
    // 8 bytes a line: 10 lines do not fit in 64 bytes, 5 do.
    s.send(lines(10));
    s.send(lines(5));
    assert!(s.close());
    assert_eq!(s.counts.lines_dropped.load(Ordering::Relaxed), 10);
    assert_eq!(s.counts.lines_written.load(Ordering::Relaxed), 5);
    assert_eq!(s.counts.queued_bytes.load(Ordering::Relaxed), 0);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn sizes_that_overflow_are_refused() {
    assert!(parse_size("18446744073709551615G").is_err());
    assert!(parse_size("17179869184G").is_err());
    assert_eq!(parse_size("16G"), Ok(16 << 30));
}
