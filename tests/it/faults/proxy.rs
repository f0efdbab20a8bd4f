//! A fault-injecting TCP proxy for the link between the nodes and Redis.
//!
//! Every byte passes through one of two pumps per connection (node → Redis,
//! Redis → node), and each chunk asks the current [`Fault`] what to do with
//! it. Switching the fault affects connections already open as well as new
//! ones, which is what a real network does.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes pass as they come.
    None,
    /// Every chunk waits this long before it is passed on (order is kept).
    Latency(Duration),
    /// Nothing passes until the fault changes; then everything held does.
    Stall,
    /// The next reply from Redis on each connection is cut in half: the
    /// first half is passed, then both sides are reset (RST, not FIN).
    ResetMidReply,
    /// Connections are accepted and bytes are read, but nothing is ever
    /// passed again on a connection that saw the hole, even after it ends:
    /// only new connections work then (a peer that vanished).
    BlackHole,
}

/// The proxy: listens on a free loopback port, forwards to `upstream`.
pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (fault, _) = watch::channel(Fault::None);
        let faults = fault.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let faults = faults.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    relay(client, server, faults).await;
                });
            }
        });
        Self { addr, fault, task }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs both pumps of one connection until either side ends, then drops
/// both sockets. Linger is zero, so the drop resets (RST) the side that
/// is still open: a cut mid-reply looks to the node like a reset link.
async fn relay(client: TcpStream, server: TcpStream, faults: watch::Receiver<Fault>) {
    // Zero linger never blocks: the close is an immediate RST.
    let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
    let _ = socket2::SockRef::from(&server).set_linger(Some(Duration::ZERO));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Set by whichever pump saw the black hole: the connection is dead for
    // good in both directions.
    let doomed = Arc::new(AtomicBool::new(false));
    tokio::select! {
        () = pump(client_read, server_write, faults.clone(), doomed.clone(), Direction::ToRedis) => {}
        () = pump(server_read, client_write, faults, doomed, Direction::ToNode) => {}
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToRedis,
    ToNode,
}

/// Passes chunks from one side to the other as the current fault says;
/// returns when the connection is to end.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut faults: watch::Receiver<Fault>,
    doomed: Arc<AtomicBool>,
    direction: Direction,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        loop {
            if doomed.load(Ordering::Relaxed) {
                break; // read and dropped: the peer never hears of it
            }
            let fault = *faults.borrow_and_update();
            let pass = match fault {
                Fault::None => chunk,
                Fault::Latency(delay) => {
                    tokio::time::sleep(delay).await;
                    chunk
                }
                Fault::Stall => {
                    if faults.changed().await.is_err() {
                        return;
                    }
                    continue; // ask again: the stall may have become anything
                }
                Fault::ResetMidReply if direction == Direction::ToNode => {
                    let _ = to.write_all(&chunk[..n.div_ceil(2)]).await;
                    return;
                }
                Fault::ResetMidReply => chunk,
                Fault::BlackHole => {
                    doomed.store(true, Ordering::Relaxed);
                    break;
                }
            };
            if to.write_all(pass).await.is_err() {
                return;
            }
            break;
        }
    }
}
