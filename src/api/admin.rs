//! The admin HTTP port: `/metrics` (Prometheus), `/health`, `/info` (JSON), and the blocking
//! client behind `starling status`.
//!
//! Why hand-written: no maintained HTTP server runs on glommio's io_uring sockets without
//! hyper plus compatibility glue (hyper wants a tokio-style executor and IO traits), and the
//! admin port needs only `GET <path>` with one request per connection. The server is therefore a
//! small HTTP/1.1 subset: the request head is bounded ([`REQUEST_HEAD_BYTES_MAX`]), the body is
//! ignored, the response carries `Content-Length` and `Connection: close`.

use std::future::Future;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use glommio::net::{TcpListener, TcpStream};

/// Largest request head (request line and headers) accepted, in bytes.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// How long a client may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP response to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type` value.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Response {
    /// A `200 OK` response.
    pub fn ok(content_type: &'static str, body: String) -> Self {
        Response {
            status: 200,
            content_type,
            body,
        }
    }

    /// A plain-text response with the given status.
    pub fn text(status: u16, body: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
        }
    }

    /// The full HTTP/1.1 response bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

/// What a request head asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET <path>` (query string removed).
    Get(String),
    /// `POST <target>` (query string kept; used by `/faults`).
    Post(String),
    /// Any other method.
    OtherMethod,
}

/// Parses a request head: `Ok(None)` while the blank line that ends it has not arrived.
pub fn parse_request(head: &[u8]) -> Result<Option<Request>, Response> {
    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
        if head.len() >= REQUEST_HEAD_BYTES_MAX {
            return Err(Response::text(431, "request head too large"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&head[..end])
        .map_err(|_| Response::text(400, "request head is not UTF-8"))?;
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::text(400, "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Response::text(400, "only HTTP/1.x is spoken here"));
    }
    if method == "POST" {
        return Ok(Some(Request::Post(target.to_string())));
    }
    if method != "GET" && method != "HEAD" {
        return Ok(Some(Request::OtherMethod));
    }
    let path = target.split('?').next().unwrap_or_default().to_string();
    Ok(Some(Request::Get(path)))
}

/// Accepts admin connections until `stop` resolves; each request is answered by `handler(path)`.
pub async fn serve<H, F, S>(listener: TcpListener, handler: H, stop: S)
where
    H: Fn(String) -> F + 'static,
    F: Future<Output = Response> + 'static,
    S: Future<Output = ()>,
{
    let handler = Rc::new(handler);
    let accept_loop = async {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    let handler = handler.clone();
                    glommio::spawn_local(async move {
                        if let Err(error) = serve_one(stream, &*handler).await {
                            tracing::debug!(%error, "admin connection failed");
                        }
                    })
                    .detach();
                }
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };
    futures_lite::future::or(accept_loop, stop).await;
}

async fn serve_one<H, F>(mut stream: TcpStream, handler: &H) -> std::io::Result<()>
where
    H: Fn(String) -> F,
    F: Future<Output = Response>,
{
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let response = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        match parse_request(&head) {
            Ok(None) => continue,
            Ok(Some(Request::Get(path))) => break handler(path).await,
            // POST reaches the handler as "POST <target>" so GET paths can never match it.
            Ok(Some(Request::Post(target))) => break handler(format!("POST {target}")).await,
            Ok(Some(Request::OtherMethod)) => break Response::text(405, "only GET is supported"),
            Err(response) => break response,
        }
    };
    stream.write_all(&response.to_bytes()).await?;
    stream.close().await
}

/// Fetches `path` from a node's admin port (blocking; used by `starling status`).
pub fn get(admin_addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    request(admin_addr, "GET", path)
}

/// Sends `method path` to a node's admin port (blocking) and returns status and body.
pub fn request(admin_addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = StdTcpStream::connect_timeout(&admin_addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {admin_addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP response head")
    })?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status code")
        })?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_get_and_waits_for_the_full_head() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Ok(None)
        );
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Some(Request::Get("/metrics".into())))
        );
        assert_eq!(
            parse_request(b"PUT / HTTP/1.1\r\n\r\n"),
            Ok(Some(Request::OtherMethod))
        );
        assert_eq!(
            parse_request(b"POST /faults?drop=1 HTTP/1.1\r\n\r\n"),
            Ok(Some(Request::Post("/faults?drop=1".into())))
        );
    }

    #[test]
    fn refuses_oversized_and_malformed_heads() {
        let big = vec![b'a'; REQUEST_HEAD_BYTES_MAX];
        assert_eq!(parse_request(&big).map_err(|r| r.status), Err(431));
        assert_eq!(
            parse_request(b"GET\r\n\r\n").map_err(|r| r.status),
            Err(400)
        );
        assert_eq!(
            parse_request(b"GET / SPDY\r\n\r\n").map_err(|r| r.status),
            Err(400)
        );
    }

    #[test]
    fn response_has_length_and_closes() {
        let bytes = Response::ok("text/plain", "hi".into()).to_bytes();
        let text = String::from_utf8(bytes).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 2\r\n") && text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nhi"));
    }
}
