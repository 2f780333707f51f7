//! `citycloud-probe`: the workload of the traffic tests. Every test pod runs `serve`; a test
//! execs `get` in another pod and reads who answered, or that nobody did (exit 1).
//!
//! - `serve <port>`: answers every HTTP request with `<POD_NAMESPACE>/<POD_NAME> <peer>`.
//! - `get <host:port> <timeout_ms>`: prints the body and exits 0 on a 200 within the timeout;
//!   otherwise prints `FAIL <host:port>: <refused|timeout|reset|unreachable|...>: <detail>` on
//!   stderr and exits 1.
//! - `resolve <name>`: prints `<name> -> <ip>...` (getaddrinfo) and exits 0, or 1.
//!
//! Standard library only, on purpose: its static image builds in seconds.
#![forbid(unsafe_code)]
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use std::{env, fmt, thread};

const USAGE: &str = "usage: citycloud-probe serve <port>
       citycloud-probe get <host:port> <timeout_ms>
       citycloud-probe resolve <name>
       citycloud-probe version";

/// How long a client of `serve` may take to send its request and read the answer, so a stuck
/// client costs one thread for a while, not forever.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most `serve` reads of a request head (and `get` of a response): both are tiny.
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Serve { port: u16 },
    Get { target: String, timeout: Duration },
    Resolve { name: String },
    Version,
    Help,
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["serve", port] => {
            let port = port
                .parse()
                .map_err(|e| format!("serve: bad port {port:?}: {e}"))?;
            Ok(Command::Serve { port })
        }
        ["get", target, timeout_ms] => {
            let ms: u64 = timeout_ms
                .parse()
                .map_err(|e| format!("get: bad timeout_ms {timeout_ms:?}: {e}"))?;
            if ms == 0 {
                return Err("get: timeout_ms must be positive".into());
            }
            if !target.contains(':') {
                return Err(format!("get: {target:?} is not host:port"));
            }
            Ok(Command::Get {
                target: (*target).to_owned(),
                timeout: Duration::from_millis(ms),
            })
        }
        ["resolve", name] => Ok(Command::Resolve {
            name: (*name).to_owned(),
        }),
        ["version" | "--version" | "-V"] => Ok(Command::Version),
        [] | ["help" | "--help" | "-h"] => Ok(Command::Help),
        _ => Err(format!("unknown arguments {args:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("citycloud-probe: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("citycloud-probe {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Serve { port } => {
            let identity = identity(env::var("POD_NAMESPACE").ok(), env::var("POD_NAME").ok());
            match TcpListener::bind(("0.0.0.0", port)) {
                Ok(listener) => {
                    eprintln!("citycloud-probe: {identity} serving on 0.0.0.0:{port}");
                    serve(listener, &identity);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("citycloud-probe: bind 0.0.0.0:{port}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Get { target, timeout } => match get(&target, timeout) {
            Ok(body) => {
                print!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("FAIL {target}: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Resolve { name } => match resolve(&name) {
            Ok(ips) if !ips.is_empty() => {
                let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
                println!("{name} -> {}", ips.join(" "));
                ExitCode::SUCCESS
            }
            Ok(_) => {
                eprintln!("FAIL {name}: no address");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("FAIL {name}: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Who answers: `<namespace>/<pod>` from the downward API, `-` for what is not set.
fn identity(namespace: Option<String>, pod: Option<String>) -> String {
    let or_dash = |v: Option<String>| v.filter(|v| !v.is_empty()).unwrap_or_else(|| "-".into());
    format!("{}/{}", or_dash(namespace), or_dash(pod))
}

/// The body of every answer: who answered and whom it saw (the peer address tells a test
/// whether traffic was NATed on its way).
fn body(identity: &str, peer: SocketAddr) -> String {
    format!("{identity} {peer}\n")
}

fn response(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Whether `buf` holds a whole HTTP message head.
fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n")
}

/// Serves until the process is killed, one thread per connection (a test sends a handful).
fn serve(listener: TcpListener, identity: &str) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let identity = identity.to_owned();
                thread::spawn(move || {
                    if let Err(e) = answer(stream, &identity) {
                        eprintln!("citycloud-probe: answering: {e}");
                    }
                });
            }
            Err(e) => {
                // E.g. out of file descriptors: keep serving, without spinning.
                eprintln!("citycloud-probe: accept: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn answer(mut stream: TcpStream, identity: &str) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let peer = stream.peer_addr()?;
    // Read the whole request head first: closing with unread bytes sends a reset, and the
    // client could then lose the answer.
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head_complete(&head) && head.len() < MAX_MESSAGE {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    stream.write_all(response(&body(identity, peer)).as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// Why a `get` failed; the first word of its message is what a test matches on.
#[derive(Debug)]
enum GetError {
    Resolve(io::Error),
    NoAddress,
    Timeout,
    Io(io::Error),
    BadResponse(String),
    Status(String),
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Resolve(e) => write!(f, "resolve: {e}"),
            GetError::NoAddress => write!(f, "resolve: no address"),
            GetError::Timeout => write!(f, "timeout"),
            GetError::Io(e) => write!(f, "{}: {e}", io_kind(e.kind())),
            GetError::BadResponse(why) => write!(f, "bad response: {why}"),
            GetError::Status(line) => write!(f, "status: {line}"),
        }
    }
}

/// One word for what a blocked or failed connection looked like: a REJECT rule gives
/// `refused`, a DROP rule `timeout`.
fn io_kind(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ConnectionRefused => "refused",
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout",
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "reset"
        }
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "unreachable",
        _ => "error",
    }
}

fn from_io(e: io::Error) -> GetError {
    match io_kind(e.kind()) {
        "timeout" => GetError::Timeout,
        _ => GetError::Io(e),
    }
}

/// The time left until `deadline`, or a timeout when none is.
fn remaining(deadline: Instant) -> Result<Duration, GetError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(GetError::Timeout)
    } else {
        Ok(left)
    }
}

/// `GET /` on `target`, everything (resolving included) within `timeout`; the body of a 200.
fn get(target: &str, timeout: Duration) -> Result<String, GetError> {
    let deadline = Instant::now() + timeout;
    let addrs = resolve_within(target, remaining(deadline)?)?;
    let mut last = GetError::NoAddress;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining(deadline)?) {
            Ok(stream) => return exchange(stream, target, deadline),
            Err(e) => last = from_io(e),
        }
    }
    Err(last)
}

/// getaddrinfo cannot be given a timeout: run it on a thread and stop waiting at the deadline.
fn resolve_within(target: &str, timeout: Duration) -> Result<Vec<SocketAddr>, GetError> {
    let (tx, rx) = mpsc::channel();
    let owned = target.to_owned();
    thread::spawn(move || {
        let _ = tx.send(owned.to_socket_addrs().map(Iterator::collect::<Vec<_>>));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) if addrs.is_empty() => Err(GetError::NoAddress),
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(GetError::Resolve(e)),
        Err(_) => Err(GetError::Timeout),
    }
}

fn exchange(mut stream: TcpStream, target: &str, deadline: Instant) -> Result<String, GetError> {
    let host = target.rsplit_once(':').map_or(target, |(host, _)| host);
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(GetError::Io)?;
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(from_io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(GetError::Io)?;
        let n = stream.read(&mut chunk).map_err(from_io)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_MESSAGE {
            return Err(GetError::BadResponse("longer than 64 KiB".into()));
        }
    }
    parse_response(&buf)
}

/// The body of a `200` answer; anything else is an error naming the status line.
fn parse_response(raw: &[u8]) -> Result<String, GetError> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| GetError::BadResponse(format!("no header end in {} bytes", raw.len())))?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some("200")) if version.starts_with("HTTP/1.") => Ok(body.to_owned()),
        (Some(version), Some(_)) if version.starts_with("HTTP/1.") => {
            Err(GetError::Status(status_line.to_owned()))
        }
        _ => Err(GetError::BadResponse(format!(
            "status line {status_line:?}"
        ))),
    }
}

/// getaddrinfo, as every program in the pod would: the addresses, each once, in order.
fn resolve(name: &str) -> io::Result<Vec<IpAddr>> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for addr in (name, 0).to_socket_addrs()? {
        if !ips.contains(&addr.ip()) {
            ips.push(addr.ip());
        }
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(
            parse_args(&args(&["serve", "8080"])),
            Ok(Command::Serve { port: 8080 })
        );
        assert_eq!(
            parse_args(&args(&["get", "web.a.svc:80", "1500"])),
            Ok(Command::Get {
                target: "web.a.svc:80".into(),
                timeout: Duration::from_millis(1500)
            })
        );
        assert_eq!(
            parse_args(&args(&["resolve", "kubernetes.default"])),
            Ok(Command::Resolve {
                name: "kubernetes.default".into()
            })
        );
        assert_eq!(parse_args(&args(&["version"])), Ok(Command::Version));
        assert_eq!(parse_args(&args(&[])), Ok(Command::Help));
    }

    #[test]
    fn rejects_bad_arguments() {
        for bad in [
            &["serve", "70000"][..],
            &["serve"],
            &["get", "10.0.0.1:80", "0"],
            &["get", "10.0.0.1:80", "soon"],
            &["get", "no-port", "100"],
            &["get", "10.0.0.1:80"],
            &["resolve"],
            &["frobnicate", "x"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn identity_comes_from_the_downward_api() {
        assert_eq!(
            identity(Some("agency-a".into()), Some("web-0".into())),
            "agency-a/web-0"
        );
        assert_eq!(identity(None, Some(String::new())), "-/-");
    }

    #[test]
    fn response_declares_the_body_length() {
        let body = body("a/web", "10.244.0.3:40000".parse().unwrap());
        assert_eq!(body, "a/web 10.244.0.3:40000\n");
        let response = response(&body);
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(response.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(response.ends_with(&format!("\r\n\r\n{body}")));
        assert_eq!(parse_response(response.as_bytes()).unwrap(), body);
    }

    #[test]
    fn head_is_complete_only_after_the_blank_line() {
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    }

    #[test]
    fn non_200_and_garbage_are_errors() {
        let forbidden = parse_response(b"HTTP/1.1 403 Forbidden\r\n\r\nno").unwrap_err();
        assert_eq!(forbidden.to_string(), "status: HTTP/1.1 403 Forbidden");
        assert!(matches!(
            parse_response(b"SSH-2.0-OpenSSH\r\n"),
            Err(GetError::BadResponse(_))
        ));
        assert!(matches!(
            parse_response(b"hello\r\n\r\n"),
            Err(GetError::BadResponse(_))
        ));
    }

    #[test]
    fn connection_errors_get_one_word() {
        assert_eq!(io_kind(ErrorKind::ConnectionRefused), "refused");
        assert_eq!(io_kind(ErrorKind::WouldBlock), "timeout");
        assert_eq!(io_kind(ErrorKind::ConnectionReset), "reset");
        assert_eq!(io_kind(ErrorKind::HostUnreachable), "unreachable");
        let refused = from_io(io::Error::from(ErrorKind::ConnectionRefused));
        assert!(refused.to_string().starts_with("refused: "), "{refused}");
        assert!(matches!(
            from_io(io::Error::from(ErrorKind::TimedOut)),
            GetError::Timeout
        ));
    }

    // On loopback: the server names itself and the client's address.
    #[test]
    fn get_reads_who_served() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap().to_string();
        thread::spawn(move || serve(listener, "agency-a/web"));
        let body = get(&target, Duration::from_secs(30)).unwrap();
        assert!(body.starts_with("agency-a/web 127.0.0.1:"), "{body:?}");
    }

    // A listener that never answers: the connection completes in its backlog, the read times out.
    #[test]
    fn silent_server_is_a_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap().to_string();
        let err = get(&target, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, GetError::Timeout), "{err}");
        drop(listener);
    }

    #[test]
    fn closed_port_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = get(&target, Duration::from_secs(30)).unwrap_err();
        assert!(err.to_string().starts_with("refused: "), "{err}");
    }

    #[test]
    fn resolves_a_literal_address() {
        assert_eq!(
            resolve("127.0.0.1").unwrap(),
            vec![IpAddr::from([127, 0, 0, 1])]
        );
    }
}
