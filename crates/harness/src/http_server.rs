//! A small HTTP/1.1 server on 127.0.0.1 for tests of outbound HTTP: it
//! records every request it receives (so a test can tell that a replay did
//! not send one again) and answers
//!
//! - `/bytes/N`: N bytes of `a`;
//! - anything else: JSON `{"method", "path", "authorization", "body"}`,
//!   with the header `x-served-by: cerebelum-test`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: String,
}

pub struct TestServer {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &log);
                });
            }
        });
        Self { port, seen }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The allow-list entry of this server.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let (mut length, mut authorization) = (0_usize, None);
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "authorization" => authorization = Some(value.trim().to_owned()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let body = String::from_utf8_lossy(&body).into_owned();
        log.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            authorization: authorization.clone(),
            body: body.clone(),
        });
        let (content_type, payload) = match path.strip_prefix("/bytes/") {
            Some(n) => (
                "text/plain",
                "a".repeat(n.parse().unwrap_or(0)).into_bytes(),
            ),
            None => (
                "application/json",
                serde_json::json!({
                    "method": method, "path": path, "authorization": authorization, "body": body,
                })
                .to_string()
                .into_bytes(),
            ),
        };
        write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
             x-served-by: cerebelum-test\r\n\r\n",
            payload.len()
        )?;
        writer.write_all(&payload)?;
        writer.flush()?;
    }
}
