//! The agent's /metrics and /healthz: an HTTP GET, the Prometheus text format read
//! sample by sample, and promtool's verdict on it.
use std::{
    io::{self, Read, Write},
    process::{Command, Stdio},
    time::Duration,
};

use crate::wait_for;

/// GET `path` from `addr`: the body. An error when nothing answered within `timeout`
/// (connection refused, closed without an answer, or too slow).
pub fn try_http_get(addr: &str, path: &str, timeout: Duration) -> io::Result<String> {
    try_http_get_status(addr, path, timeout).map(|(_, body)| body)
}

/// GET `path` from `addr`: the status code and the body.
pub fn try_http_get_status(addr: &str, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let out = String::from_utf8_lossy(&out).into_owned();
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no HTTP response: {out:?}"),
        )
    };
    let (head, body) = out.split_once("\r\n\r\n").ok_or_else(bad)?;
    // "HTTP/1.1 200 OK"
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

/// `promtool check metrics` (Debian package prometheus) on `body`: Err with what it
/// printed when it finds a fault (bad names, units, types, label sets, lint).
pub fn promtool_check(body: &str) -> Result<(), String> {
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool (Debian package prometheus): {e}"))?;
    check
        .stdin
        .take()
        .expect("piped")
        .write_all(body.as_bytes())
        .map_err(|e| format!("writing to promtool: {e}"))?;
    let out = check
        .wait_with_output()
        .map_err(|e| format!("promtool: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// GET `path` from `addr`; None when nothing answered (connection refused, closed
/// without an answer, or no answer within 5 s).
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    try_http_get(addr, path, Duration::from_secs(5)).ok()
}

/// Scrapes /metrics at `addr` until `done` holds for the body (up to `timeout`):
/// whether it did, and the last body (empty when nothing answered).
pub fn scrape_until(addr: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> (bool, String) {
    let mut body = String::new();
    let ok = wait_for(timeout, || {
        body = http_get(addr, "/metrics").unwrap_or_default();
        done(&body)
    });
    (ok, body)
}

/// The same with the body read into samples.
pub fn samples_until(
    addr: &str,
    timeout: Duration,
    done: impl Fn(&[Sample]) -> bool,
) -> (bool, Vec<Sample>) {
    let mut samples = Vec::new();
    let ok = wait_for(timeout, || {
        samples = scrape(addr);
        done(&samples)
    });
    (ok, samples)
}

/// The value of the first sample line of a scrape that starts with `prefix`.
pub fn metric(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// One sample of the Prometheus text format: name, labels in order, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of /metrics at `addr` (none when nothing answered).
pub fn scrape(addr: &str) -> Vec<Sample> {
    parse_samples(&http_get(addr, "/metrics").unwrap_or_default())
}

/// Every sample line of an exposition (comments skipped); panics on a line it cannot
/// read, so a malformed line fails the test that scraped it.
pub fn parse_samples(body: &str) -> Vec<Sample> {
    try_parse_samples(body).unwrap_or_else(|e| panic!("{e}"))
}

/// The same; an error names the first line it cannot read.
pub fn try_parse_samples(body: &str) -> Result<Vec<Sample>, String> {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(parse_sample)
        .collect()
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let (head, value) = line
        .rsplit_once(' ')
        .ok_or_else(|| format!("no value: {line}"))?;
    let value: f64 = value.parse().map_err(|_| format!("bad value: {line}"))?;
    let (name, labels) = match head.split_once('{') {
        None => (head.to_string(), Vec::new()),
        Some((name, rest)) => {
            let body = rest
                .strip_suffix('}')
                .ok_or_else(|| format!("unclosed labels: {line}"))?;
            (name.to_string(), parse_labels(body, line)?)
        }
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// `k="v",k2="v2"` (values escaped with \\, \" and \n).
fn parse_labels(body: &str, line: &str) -> Result<Vec<(String, String)>, String> {
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if chars.next() != Some('"') {
            return Err(format!("label {key} unquoted: {line}"));
        }
        let mut v = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => v.push('\n'),
                    Some(c) => v.push(c),
                    None => return Err(format!("dangling escape: {line}")),
                },
                Some('"') => break,
                Some(c) => v.push(c),
                None => return Err(format!("unterminated label value: {line}")),
            }
        }
        labels.push((key, v));
        match chars.next() {
            Some(',') | None => {}
            Some(c) => return Err(format!("unexpected {c:?} after a label: {line}")),
        }
    }
    Ok(labels)
}
