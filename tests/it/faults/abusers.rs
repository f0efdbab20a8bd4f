//! Clients that misbehave beside the workload: streams that are never
//! read, streams read one byte a second, and a churner that opens and drops
//! streams as fast as it can. Each is bounded in count and time.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::user_token;

/// Opens a stream over a raw socket, checks that it was accepted (`200`),
/// and returns it with nothing read past the response head.
async fn open_raw(node: SocketAddr, user: &str) -> TcpStream {
    // A small receive buffer, as a phone on a bad link has: loopback would
    // otherwise let the kernel buffer tens of megabytes for a client that
    // never reads (tcp_rmem's maximum), and the node would see no stall.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut socket = socket.connect(node).await.unwrap();
    let request = format!(
        "GET /v1/events HTTP/1.1\r\nHost: {node}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
        user_token(user)
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    // Byte by byte, so no byte of the body is taken.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(socket.read(&mut byte).await.unwrap(), 1, "the node closed before its response head");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    socket
}

/// Streams for `users` (`per_user` each) that are never read: held until
/// dropped.
pub async fn never_read(node: SocketAddr, users: &[String], per_user: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::new();
    for user in users {
        for _ in 0..per_user {
            sockets.push(open_raw(node, user).await);
        }
    }
    sockets
}

/// Streams for `users` read one byte a second until `until`; returns the
/// tasks (abort them to stop early).
pub async fn one_byte_a_second(node: SocketAddr, users: &[String], until: Instant) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for user in users {
        let mut socket = open_raw(node, user).await;
        tasks.push(tokio::spawn(async move {
            let mut byte = [0u8; 1];
            while Instant::now() < until {
                if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    tasks
}

/// Opens streams and drops each as soon as its head arrives, `parallel` at
/// a time, until `count` have opened or `until`. Returns how many opened.
pub async fn churn(node: SocketAddr, users: Vec<String>, count: u64, parallel: usize, until: Instant) -> u64 {
    let opened = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::new();
    let workers = (0..parallel).map(|i| {
        let (opened, http, users) = (opened.clone(), http.clone(), users.clone());
        tokio::spawn(async move {
            let mut n = i;
            while opened.load(Ordering::Relaxed) < count && Instant::now() < until {
                // Every user in turn: per-user state is made and must go.
                let token = user_token(&users[n % users.len()]);
                n += parallel;
                let response = http.get(format!("http://{node}/v1/events")).bearer_auth(&token).send().await;
                if response.is_ok_and(|r| r.status().is_success()) {
                    opened.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    });
    futures_util::future::join_all(workers).await;
    opened.load(Ordering::Relaxed)
}
