//! The host's way into the node's network namespace: the control plane runs inside it (so the API
//! server can advertise the node IP and `default/kubernetes` gets real endpoints), while tests,
//! the Makefile and people run on the host. A relay listens on the host's 127.0.0.1:PORT and
//! connects, from a thread that entered the node's namespace, to 127.0.0.1:PORT there: the same
//! URL (and the same kubeconfig) then works on both sides. Pods do not use it.
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Result, io_err};

/// A running relay; when dropped, stops accepting, closes the connections it relays and
/// releases the namespace.
pub struct Relay {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    open: Open,
}

/// The connections being relayed (both ends), to close them when the relay stops: an API server
/// shutting down gracefully waits for its clients' watches to end.
#[derive(Clone, Default)]
struct Open(Arc<Mutex<HashMap<u64, [TcpStream; 2]>>>);

impl Open {
    fn add(&self, id: u64, a: &TcpStream, b: &TcpStream) {
        if let (Ok(a), Ok(b), Ok(mut open)) = (a.try_clone(), b.try_clone(), self.0.lock()) {
            open.insert(id, [a, b]);
        }
    }

    fn remove(&self, id: u64) {
        if let Ok(mut open) = self.0.lock() {
            open.remove(&id);
        }
    }

    fn close_all(&self) {
        if let Ok(mut open) = self.0.lock() {
            for s in open.drain().flat_map(|(_, pair)| pair) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Relay {
    /// Binds the host's 127.0.0.1:`port` now and relays in a background thread.
    pub fn start(netns: &Path, port: u16) -> Result<Relay> {
        let (listener, ns) = bind(netns, port)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let open = Open::default();
        let tracked = open.clone();
        let thread = std::thread::spawn(move || serve(listener, ns, port, &flag, &tracked));
        Ok(Relay {
            stop,
            thread: Some(thread),
            open,
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.open.close_all();
    }
}

/// Relays until the process is killed (`testbed relay`, for a detached cluster).
pub fn run_forever(netns: &Path, port: u16) -> Result<()> {
    let (listener, ns) = bind(netns, port)?;
    serve(
        listener,
        ns,
        port,
        &AtomicBool::new(false),
        &Open::default(),
    );
    Ok(())
}

fn bind(netns: &Path, port: u16) -> Result<(TcpListener, Arc<File>)> {
    let ns = File::open(netns).map_err(io_err(netns))?;
    let addr = format!("127.0.0.1:{port}");
    let listener = TcpListener::bind(&addr).map_err(io_err(Path::new(&addr)))?;
    // Non-blocking accept, so the stop flag is seen within 100 ms.
    listener
        .set_nonblocking(true)
        .map_err(io_err(Path::new(&addr)))?;
    Ok((listener, Arc::new(ns)))
}

fn serve(listener: TcpListener, ns: Arc<File>, port: u16, stop: &AtomicBool, open: &Open) {
    static IDS: AtomicU64 = AtomicU64::new(0);
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                let ns = ns.clone();
                let open = open.clone();
                std::thread::spawn(move || {
                    let _ = client.set_nonblocking(false);
                    if let Some(upstream) = dial_inside(&ns, port) {
                        let id = IDS.fetch_add(1, Ordering::Relaxed);
                        open.add(id, &client, &upstream);
                        pump(client, upstream);
                        open.remove(id);
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Connects to 127.0.0.1:`port` inside the namespace. setns(CLONE_NEWNET) changes only the
/// calling thread (this connection's own), and the socket stays in the namespace it was made in.
#[allow(unsafe_code)] // libc: setns into the node's network namespace, this thread only
fn dial_inside(ns: &File, port: u16) -> Option<TcpStream> {
    // SAFETY: setns on an open namespace file descriptor; affects this thread only.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return None;
    }
    TcpStream::connect(("127.0.0.1", port)).ok()
}

fn pump(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || copy(a, b));
    copy(b2, a2);
    let _ = up.join();
}

/// Copies until EOF or an error, then half-closes the writer so the other side sees EOF too.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
