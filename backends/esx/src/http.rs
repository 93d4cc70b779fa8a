//! A minimal HTTP/1.1 client for SOAP: `POST` one request per connection, read one reply.
//!
//! Why not a keep-alive pool: a request on a reused connection that the server closed at
//! the same moment fails without telling whether the server acted on it, and the only safe
//! answer would be to not retry — so the pool would buy nothing but that failure mode. A
//! vSphere task must never be submitted twice. One connection per request costs a TCP (and
//! TLS) handshake per call; a step makes a handful of calls, each far cheaper than the
//! snapshot work itself.
//!
//! `https://` goes through the system's OpenSSL (native-tls, the `tls` feature); vcsim and
//! lab setups can serve plain `http://`.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::xml::MAX_REPLY_BYTES;

/// How long to wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one read or write may block. vSphere answers every call at once (long work is
/// a task, polled), so a silent server for this long is a dead one.
const IO_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest status line or header line accepted.
const MAX_LINE: usize = 16 << 10;
/// The most header lines accepted.
const MAX_HEADERS: usize = 128;

/// Where the SOAP service is: `http[s]://host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https`.
    pub secure: bool,
    /// The host name or address, without IPv6 brackets.
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// The path, starting with `/` (vSphere's is `/sdk`).
    pub path: String,
}

impl Endpoint {
    /// Parses an endpoint URL. User information (`user:password@`) is refused, so that a
    /// password never sits in domain XML that is shown and stored.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (secure, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            // The URL is not repeated: a malformed one may still hold a password.
            return Err("the URL does not start with https:// or http://".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/sdk"),
        };
        if authority.contains('@') {
            return Err("the URL holds user information: give the user and password through credentials='FILE' or the environment instead".into());
        }
        let default_port = if secure { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or("the URL has an unclosed '[' in its host")?;
            match after.strip_prefix(':') {
                Some(p) => (host, parse_port(p)?),
                None if after.is_empty() => (host, default_port),
                None => return Err("the URL has garbage after its IPv6 host".into()),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, p)) => (host, parse_port(p)?),
                None => (authority, default_port),
            }
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !host_ok {
            return Err(format!(
                "the URL's host '{}' is not a host name or address",
                host.escape_default()
            ));
        }
        if path.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err("the URL's path has spaces or control characters".into());
        }
        Ok(Endpoint {
            secure,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// `host:port` as the `Host` header wants it.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
        format!(
            "the URL's port '{}' is not a number from 1 to 65535",
            text.escape_default()
        )
    })
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            if self.secure { "https" } else { "http" },
            self.authority(),
            self.path
        )
    }
}

/// How to check the server's certificate on `https://`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// A PEM file of certificates to trust besides the system's (an ESX host's self-signed
    /// certificate, or a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// True: accept any certificate and host name (`verify='no'`, libvirt's `no_verify=1`).
    pub insecure: bool,
}

/// A server's HTTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `name=value` part of every `Set-Cookie` header.
    pub cookies: Vec<String>,
    /// The body, as text.
    pub body: String,
}

/// Posts requests to one endpoint.
pub struct Client {
    endpoint: Endpoint,
    #[cfg(feature = "tls")]
    tls: Option<native_tls::TlsConnector>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint.to_string())
            .finish()
    }
}

/// What a connection needs: a byte stream both ways.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl Client {
    /// A client for `endpoint`; for `https://` the TLS settings are checked here.
    pub fn new(endpoint: Endpoint, tls: &TlsOptions) -> Result<Client, String> {
        #[cfg(feature = "tls")]
        {
            let connector = if endpoint.secure {
                Some(tls_connector(tls)?)
            } else {
                None
            };
            Ok(Client {
                endpoint,
                tls: connector,
            })
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = tls;
            if endpoint.secure {
                return Err(format!(
                    "{endpoint}: this build of the esx backend has no TLS support (built without the 'tls' feature); use an http:// endpoint or rebuild it with TLS"
                ));
            }
            Ok(Client { endpoint })
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one `POST` with these extra headers and reads the reply, whatever its status.
    /// Errors are sentences naming the endpoint; they never contain the request.
    pub fn post(&self, headers: &[(&str, &str)], body: &str) -> Result<Reply, String> {
        let mut stream = self.connect()?;
        let mut request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: snaptree-esx/{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.endpoint.path,
            self.endpoint.authority(),
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        for (name, value) in headers {
            request.push_str(name);
            request.push_str(": ");
            request.push_str(value);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        let io = |e: std::io::Error| format!("lost the connection to {}: {e}", self.endpoint);
        stream.write_all(request.as_bytes()).map_err(io)?;
        stream.write_all(body.as_bytes()).map_err(io)?;
        stream.flush().map_err(io)?;
        read_reply(&mut BufReader::new(stream))
            .map_err(|e| format!("bad reply from {}: {e}", self.endpoint))
    }

    fn connect(&self) -> Result<Box<dyn Stream>, String> {
        let ep = &self.endpoint;
        let addrs = (ep.host.as_str(), ep.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve the host of {ep}: {e}"))?;
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| match last {
            Some(e) => format!("cannot connect to {ep}: {e}"),
            None => format!("the host of {ep} has no address"),
        })?;
        let setup = |e: std::io::Error| format!("cannot set up the connection to {ep}: {e}");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).map_err(setup)?;
        tcp.set_write_timeout(Some(IO_TIMEOUT)).map_err(setup)?;
        tcp.set_nodelay(true).map_err(setup)?;
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let stream = tls.connect(&ep.host, tcp).map_err(|e| {
                let hint = if e.to_string().contains("certificate") {
                    "; for a self-signed certificate name it with <esx cacert='PEM file'>, or turn checks off with verify='no'"
                } else {
                    ""
                };
                format!("TLS with {ep} failed: {e}{hint}")
            })?;
            return Ok(Box::new(stream));
        }
        Ok(Box::new(tcp))
    }
}

#[cfg(feature = "tls")]
fn tls_connector(options: &TlsOptions) -> Result<native_tls::TlsConnector, String> {
    let mut builder = native_tls::TlsConnector::builder();
    builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    if let Some(path) = &options.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
        let certs = native_tls::Certificate::stack_from_pem(&pem).map_err(|e| {
            format!(
                "the CA file {} is not PEM certificates: {e}",
                path.display()
            )
        })?;
        if certs.is_empty() {
            return Err(format!(
                "the CA file {} holds no certificate",
                path.display()
            ));
        }
        for cert in certs {
            builder.add_root_certificate(cert);
        }
    }
    if options.insecure {
        builder
            .danger_accept_invalid_certs(true)
            .danger_accept_invalid_hostnames(true);
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up TLS: {e}"))
}

/// Reads a status line, headers and a body framed by `Content-Length`, chunked encoding,
/// or the end of the connection.
fn read_reply(reader: &mut impl BufRead) -> Result<Reply, String> {
    let status_line = read_line(reader)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let status = match status {
        Some(s) if version.starts_with("HTTP/1.") => s,
        _ => {
            return Err(format!(
                "'{}' is not an HTTP/1.x status line",
                status_line.escape_default()
            ));
        }
    };
    let mut cookies = Vec::new();
    let mut length = None;
    let mut chunked = false;
    for n in 0.. {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        if n == MAX_HEADERS {
            return Err(format!("more than {MAX_HEADERS} header lines"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("'{}' is not a header line", line.escape_default()));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| format!("bad Content-Length '{}'", value.escape_default()))?,
                );
            }
            "transfer-encoding" => {
                chunked = value
                    .to_ascii_lowercase()
                    .split(',')
                    .any(|t| t.trim() == "chunked")
            }
            "set-cookie" => cookies.push(
                value
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            ),
            _ => {}
        }
    }
    let body = if chunked {
        read_chunked(reader)?
    } else if let Some(n) = length {
        if n > MAX_REPLY_BYTES {
            return Err(format!(
                "the body is {n} bytes, more than the limit of {MAX_REPLY_BYTES}"
            ));
        }
        let mut body = vec![0; n];
        reader
            .read_exact(&mut body)
            .map_err(|e| format!("the body ended early: {e}"))?;
        body
    } else {
        let mut body = Vec::new();
        reader
            .take(MAX_REPLY_BYTES as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("cannot read the body: {e}"))?;
        if body.len() > MAX_REPLY_BYTES {
            return Err(format!(
                "the body is more than the limit of {MAX_REPLY_BYTES} bytes"
            ));
        }
        body
    };
    let body = String::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    Ok(Reply {
        status,
        cookies,
        body,
    })
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size '{}'", size_text.escape_default()))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_REPLY_BYTES {
            return Err(format!(
                "the body is more than the limit of {MAX_REPLY_BYTES} bytes"
            ));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .map_err(|e| format!("a chunk ended early: {e}"))?;
        if !read_line(reader)?.is_empty() {
            return Err("a chunk is longer than its size".into());
        }
    }
}

/// One line without its CRLF, at most [`MAX_LINE`] bytes.
fn read_line(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = Vec::new();
    let n = reader
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read: {e}"))?;
    if n == 0 {
        return Err("the connection closed before the reply was complete".into());
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > MAX_LINE {
            format!("a line longer than {MAX_LINE} bytes")
        } else {
            "the connection closed in the middle of a line".into()
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| "a header line is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("https://esx.example/sdk").unwrap();
        assert_eq!(
            (e.secure, e.host.as_str(), e.port, e.path.as_str()),
            (true, "esx.example", 443, "/sdk")
        );
        let e = Endpoint::parse("http://127.0.0.1:8989").unwrap();
        assert_eq!((e.secure, e.port, e.path.as_str()), (false, 8989, "/sdk"));
        let e = Endpoint::parse("https://[::1]:4443/sdk").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 4443));
        assert_eq!(e.to_string(), "https://[::1]:4443/sdk");
        assert!(Endpoint::parse("ftp://x/").is_err());
        assert!(Endpoint::parse("http://x:0/").is_err());
        assert!(Endpoint::parse("http://x:99999/").is_err());
        assert!(Endpoint::parse("http:///sdk").is_err());
        assert!(Endpoint::parse("http://x y/sdk").is_err());
        let e = Endpoint::parse("https://root:secret@esx/sdk").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    fn reply(raw: &str) -> Result<Reply, String> {
        read_reply(&mut raw.as_bytes())
    }

    #[test]
    fn reads_content_length_chunked_and_eof_bodies() {
        let r = reply("HTTP/1.1 200 OK\r\nSet-Cookie: vmware_soap_session=\"abc\"; Path=/; HttpOnly\r\nContent-Length: 5\r\n\r\nhelloEXTRA").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "hello"));
        assert_eq!(r.cookies, ["vmware_soap_session=\"abc\""]);
        let r = reply("HTTP/1.1 500 Internal\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (500, "abcde"));
        let r = reply("HTTP/1.0 200 OK\r\n\r\nto the end").unwrap();
        assert_eq!(r.body, "to the end");
    }

    #[test]
    fn refuses_broken_replies() {
        assert!(reply("").unwrap_err().contains("closed before"));
        assert!(
            reply("SSH-2.0-OpenSSH\r\n\r\n")
                .unwrap_err()
                .contains("status line")
        );
        assert!(
            reply("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
                .unwrap_err()
                .contains("ended early")
        );
        assert!(
            reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .unwrap_err()
                .contains("chunk size")
        );
        assert!(
            reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n")
                .is_err()
        );
        let long = format!(
            "HTTP/1.1 200 OK\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_LINE + 10)
        );
        assert!(reply(&long).unwrap_err().contains("longer than"));
    }
}
