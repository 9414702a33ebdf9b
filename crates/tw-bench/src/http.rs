//! A minimal HTTP/1.1 GET client for loopback: enough for /metrics, /readyz and
//! blackbox_exporter's /probe, with keep-alive so the scraper loop reuses connections the way
//! Prometheus does.
//!
//! Bodies are read by `Content-Length`, chunked encoding, or to the end of the connection.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest body accepted; /metrics at 10,000 tenants is a few MiB.
const MAX_BODY: usize = 256 * 1024 * 1024;
/// Longest status or header line accepted.
const MAX_LINE: usize = 16 * 1024;

pub(crate) struct Conn {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    /// False once the server said it closes, or the body ran to the end of the connection.
    pub(crate) reusable: bool,
}

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl Conn {
    pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            addr,
            reader: BufReader::new(stream),
            reusable: true,
        })
    }

    /// One GET of `path` (which must start with `/`).
    pub(crate) async fn get(&mut self, path: &str) -> anyhow::Result<Response> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tw-bench\r\nAccept: */*\r\n\r\n",
            self.addr
        );
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .context("sending the request")?;

        let status_line = self.line().await?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        loop {
            let header = self.line().await?;
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse().context("bad Content-Length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                self.reusable = false;
            }
        }

        let mut body = Vec::new();
        if chunked {
            loop {
                let size_line = self.line().await?;
                let size_hex = size_line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_hex, 16)
                    .with_context(|| format!("bad chunk size {size_line:?}"))?;
                if size == 0 {
                    // Trailers, then the blank line that ends the message.
                    while !self.line().await?.is_empty() {}
                    break;
                }
                if body.len() + size > MAX_BODY {
                    bail!("body over {MAX_BODY} bytes");
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.reader
                    .read_exact(&mut body[start..])
                    .await
                    .context("reading a chunk")?;
                let end = self.line().await?;
                if !end.is_empty() {
                    bail!("chunk not followed by CRLF");
                }
            }
        } else if let Some(length) = length {
            if length > MAX_BODY {
                bail!("body of {length} bytes is over {MAX_BODY}");
            }
            body.resize(length, 0);
            self.reader
                .read_exact(&mut body)
                .await
                .context("reading the body")?;
        } else {
            self.reusable = false;
            (&mut self.reader)
                .take(MAX_BODY as u64)
                .read_to_end(&mut body)
                .await
                .context("reading the body")?;
        }
        Ok(Response { status, body })
    }

    /// One CRLF-terminated line, without the line ending.
    async fn line(&mut self) -> anyhow::Result<String> {
        let mut buffer = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buffer)
            .await
            .context("reading a line")?;
        if read == 0 {
            bail!("connection closed by the server");
        }
        if buffer.last() != Some(&b'\n') {
            bail!("line over {MAX_LINE} bytes");
        }
        let text = String::from_utf8_lossy(&buffer);
        Ok(text.trim_end_matches(['\r', '\n']).to_owned())
    }
}

/// One GET on a fresh connection.
pub(crate) async fn get_once(addr: SocketAddr, path: &str) -> anyhow::Result<Response> {
    let mut conn = Conn::connect(addr).await?;
    conn.get(path).await
}
