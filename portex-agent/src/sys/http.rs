//! A minimal HTTP/1.1 server for the Prometheus scrape and the liveness probe: GET
//! /metrics, GET /healthz (also /-/healthy, Prometheus's own spelling): 200 while the
//! pipeline's threads come round, 503 once one has stalled (logic::health). Nothing else.
//!
//! Anyone on the host can connect to it, so it must not let a local user stall the
//! agent: at most `MAX_CLIENTS` connections are served at once (more are closed at once
//! and counted), a client has `HEAD_TIMEOUT` to send its request, and a failing accept()
//! (EMFILE when the open-file limit is reached) backs off instead of spinning a core.
use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use crate::pipeline::metrics::Metrics;

/// Connections served at once. A scraper needs one; the rest is slack for curl.
pub(crate) const MAX_CLIENTS: usize = 64;
/// Time a client has to send its request head, and to read the answer.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read; a GET needs a few hundred bytes.
const MAX_HEAD: usize = 4096;

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Health,
    Root,
    NotFound,
    /// Not an HTTP request line at all.
    BadRequest,
}

/// Parses the request line of `head` (bytes from the socket, possibly cut short).
pub fn route(head: &[u8]) -> Route {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Route::BadRequest;
    };
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Route::BadRequest;
    };
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/")) {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        ("GET", "/healthz" | "/-/healthy") => Route::Health,
        ("GET", "/") => Route::Root,
        _ => Route::NotFound,
    }
}

pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut backoff = Duration::from_millis(10);
    let mut reported = false;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => {
                backoff = Duration::from_millis(10);
                s
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS/ENOMEM stay until something is closed: waiting
                // is the only thing that helps, and retrying at once pins a core.
                if !reported {
                    tracing::warn!("metrics server cannot accept connections ({e}); backing off");
                    reported = true;
                }
                metrics.http_accept_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.http_rejected.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let _ = handle(stream, m).await;
            drop(permit);
        });
    }
}

async fn handle(mut s: TcpStream, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_HEAD];
    let n = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut s, &mut buf)).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    let (status, ctype, body) = match route(&buf[..n]) {
        Route::Metrics => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        Route::Health => {
            let h = metrics.health();
            let status = if h.is_alive() {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, "text/plain; charset=utf-8", h.line())
        }
        Route::Root => (
            "200 OK",
            "text/plain; charset=utf-8",
            "portex: see /metrics and /healthz\n".to_string(),
        ),
        Route::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".to_string(),
        ),
        Route::BadRequest => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n".to_string(),
        ),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A client that does not read its answer must not hold a slot forever either.
    match tokio::time::timeout(HEAD_TIMEOUT, async {
        s.write_all(resp.as_bytes()).await?;
        s.shutdown().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

/// Reads until the end of the request head, the buffer is full, or the peer stops.
async fn read_head(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = s.read(&mut buf[n..]).await?;
        if k == 0 {
            break;
        }
        n += k;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_requests_and_refuses_garbage() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n"), Route::Root);
        assert_eq!(route(b"GET /healthz HTTP/1.1\r\n\r\n"), Route::Health);
        assert_eq!(route(b"GET /-/healthy HTTP/1.1\r\n\r\n"), Route::Health);
        assert_eq!(route(b"GET /healthz/x HTTP/1.1\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /healthz HTTP/1.1\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metrics"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe GET"), Route::BadRequest);
    }

    #[test]
    fn the_packaged_probes_ask_the_health_check() {
        let ds = include_str!("../../../packaging/kubernetes/daemonset.yaml");
        let paths: Vec<&str> = ds
            .lines()
            .filter(|l| l.contains("httpGet"))
            .filter_map(|l| l.split("path: ").nth(1)?.split([',', ' ']).next())
            .collect();
        assert_eq!(
            paths,
            ["/healthz", "/healthz"],
            "startup and liveness probes"
        );
        for p in paths {
            let req = format!("GET {p} HTTP/1.1\r\nUser-Agent: kube-probe/1.31\r\n\r\n");
            assert_eq!(route(req.as_bytes()), Route::Health);
        }
    }
}
