//! The little HTTP the live page needs, by hand and bounded: a request
//! head read with `httparse` within a deadline, an answer with its status
//! and security headers, chunks of an event stream, and the checks of
//! `Host` and of the teacher's token. No threads and no state: the
//! server (`server.rs`) decides what to answer.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Instant;

use super::server::{MAX_CONTROL, REQUEST_TIME, TOKEN_HEADER};

/// The longest request head read.
pub(super) const MAX_HEAD: usize = 8192;

/// One parsed request.
pub(super) struct Request {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) host: Option<String>,
    pub(super) origin: Option<String>,
    pub(super) fetch_site: Option<String>,
    pub(super) token: Option<String>,
    pub(super) body: Vec<u8>,
}

/// An answer that is not a stream.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) content_type: &'static str,
    pub(super) body: String,
    /// The page's script nonce, for its content security policy.
    pub(super) nonce: Option<String>,
}

impl Answer {
    pub(super) fn text(status: u16, body: &str) -> Answer {
        Answer {
            status,
            content_type: if body.starts_with('{') {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            },
            body: body.to_owned(),
            nonce: None,
        }
    }
}

pub(super) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The headers every answer carries: no framing, no script but the
/// page's own, nothing loaded from elsewhere, no referrer (a teacher's URL
/// holds the token).
pub(super) fn security_headers(nonce: Option<&str>) -> String {
    let script = match nonce {
        Some(nonce) => format!(
            "script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; "
        ),
        None => String::new(),
    };
    format!(
        "Content-Security-Policy: default-src 'none'; {script}base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n\
         X-Frame-Options: DENY\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\n\
         Cache-Control: no-store\r\n"
    )
}

/// A 503 written without waiting (what does not fit the socket's buffer
/// now is lost) and the connection closed: a refusal must not hold a
/// thread for a peer that does not read.
pub(super) fn refuse_now(mut stream: TcpStream, body: &str) {
    let _ = stream.set_nonblocking(true);
    let _ = write!(
        stream,
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 2\r\nConnection: close\r\n{}\r\n{body}",
        body.len(),
        security_headers(None)
    );
}

/// Reads one request within [`REQUEST_TIME`]; on failure the status to
/// answer (0: none, the peer is gone).
pub(super) fn read_request(stream: &mut TcpStream) -> Result<Request, u16> {
    let deadline = Instant::now() + REQUEST_TIME;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (head_len, request) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let header = |name: &str| {
                    parsed
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .map(|v| v.trim().to_owned())
                };
                let target = parsed.path.unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let token = header(TOKEN_HEADER).or_else(|| {
                    query
                        .split('&')
                        .find_map(|pair| pair.strip_prefix("token="))
                        .map(str::to_owned)
                });
                let length = match header("content-length") {
                    Some(n) => Some(n.parse::<usize>().map_err(|_| 400u16)?),
                    None => None,
                };
                let request = Request {
                    method: parsed.method.unwrap_or("").to_owned(),
                    path: path.to_owned(),
                    host: header("host"),
                    origin: header("origin"),
                    fetch_site: header("sec-fetch-site"),
                    token,
                    body: Vec::new(),
                };
                break (len, (request, length));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(431),
            Err(httparse::Error::TooManyHeaders) => return Err(431),
            Err(_) => return Err(400),
        }
        let n = read_by(stream, &mut chunk, deadline)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let (mut request, length) = request;
    if request.method == "POST" {
        let Some(length) = length else {
            return Err(411);
        };
        if length > MAX_CONTROL {
            return Err(413);
        }
        let mut body = buf[head_len..].to_vec();
        while body.len() < length {
            let n = read_by(stream, &mut chunk, deadline)?;
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(length);
        request.body = body;
    }
    Ok(request)
}

/// One read that must end by `deadline`: 408 past it, 0 when the peer
/// closed or broke.
pub(super) fn read_by(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, u16> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(408);
    }
    stream.set_read_timeout(Some(left)).map_err(|_| 0u16)?;
    match stream.read(buf) {
        Ok(0) => Err(0),
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(408)
        }
        Err(_) => Err(0),
    }
}

pub(super) fn respond(stream: &mut TcpStream, answer: &Answer) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        answer.status,
        reason(answer.status),
        answer.content_type,
        answer.body.len(),
        security_headers(answer.nonce.as_deref()),
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(answer.body.as_bytes());
    stream.write_all(&bytes)?;
    stream.flush()
}

/// Whether `host` (a `Host` header) names `bound`: see
/// [`Context::check_host`].
pub(super) fn host_matches(host: &str, bound: SocketAddr) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((name, port)) => (name, port.strip_prefix(':')),
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    let port = match port {
        Some(port) => port.parse::<u16>().ok(),
        None => Some(80),
    };
    if port != Some(bound.port()) {
        return false;
    }
    let ip = bound.ip();
    match name.parse::<IpAddr>() {
        Ok(named) => ip.is_unspecified() || named == ip,
        Err(_) => {
            name.eq_ignore_ascii_case("localhost") && (ip.is_loopback() || ip.is_unspecified())
        }
    }
}

/// Compares secrets in time that does not depend on where they differ.
pub(super) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub(super) fn chunk(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    write!(out, "{:x}\r\n{text}\r\n", text.len())?;
    out.flush()
}
