//! A TCP fault proxy for partition tests: forwards a loopback port to another,
//! and on [`FaultProxy::cut`] drops every connection and refuses new ones for a
//! while, as a network partition between workers and Redis would.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

/// The proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    /// Connections are refused until this instant.
    cut_until: Mutex<Option<Instant>>,
    /// Every live stream (both sides), to shut down on a cut.
    live: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

impl FaultProxy {
    /// Forwards a new loopback port to `127.0.0.1:target`.
    pub fn start(target: u16) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let state = Arc::new(State {
            cut_until: Mutex::new(None),
            live: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        thread::spawn(move || {
            while !st.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let cut = st
                            .cut_until
                            .lock()
                            .map(|c| c.is_some_and(|t| Instant::now() < t))
                            .unwrap_or(false);
                        if cut {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        };
                        pipe(&st, client, server);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(FaultProxy { port, state })
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every connection and refuses new ones for `d`.
    pub fn cut(&self, d: Duration) {
        if let Ok(mut c) = self.state.cut_until.lock() {
            *c = Some(Instant::now() + d);
        }
        if let Ok(mut live) = self.state.live.lock() {
            for s in live.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.cut(Duration::from_secs(3600));
    }
}

fn pipe(st: &Arc<State>, client: TcpStream, server: TcpStream) {
    let clones = (client.try_clone(), server.try_clone());
    let (Ok(client2), Ok(server2)) = clones else {
        return;
    };
    if let Ok(mut live) = st.live.lock() {
        live.retain(|s| s.peer_addr().is_ok());
        for s in [&client, &server] {
            if let Ok(c) = s.try_clone() {
                live.push(c);
            }
        }
    }
    thread::spawn(move || copy(client, server));
    thread::spawn(move || copy(server2, client2));
}

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
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
