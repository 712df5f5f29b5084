//! Deadlines on slow and stalled clients, so that they cannot hold the server's connections (hyper under
//! poem has none on this path; poem's `Server::idle_timeout` counts the time spent answering a request as
//! idle):
//!
//! - a request's head must arrive within `server.read_timeout` of its first byte, or, for a connection's
//!   first request, of the connection's opening;
//! - its body must arrive within `server.read_timeout` of its head: the edge reads it under that bound
//!   (`limit_body`) and answers `408` with `Connection: close`;
//! - between requests, a connection may stay idle for `server.idle_timeout`.
//!
//! [`Deadlines::accept`] wraps each accepted stream so that a read past the head or idle deadline fails,
//! which closes the connection. A stream cannot tell where a head ends without parsing HTTP, but the
//! server can: a request that reaches [`Deadlines::track`] has its whole head, so its connection (found by
//! its peer address) is under no deadline until it is answered; it is then idle until the next bytes,
//! which start the next head.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use poem::{
    Endpoint, Request,
    http::uri::Scheme,
    listener::Acceptor,
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

use crate::config::ServerSettings;

/// Each open connection, by its peer address.
type Connections = Arc<Mutex<HashMap<SocketAddr, Arc<Connection>>>>;

/// What the stream and the routes know of one connection.
struct Connection {
    /// Whether a head is being received, so that its deadline applies.
    receiving: AtomicBool,
    /// Requests being answered.
    answering: AtomicUsize,
}

#[derive(Clone)]
pub struct Deadlines {
    read: Duration,
    idle: Duration,
    connections: Connections,
}

impl Deadlines {
    pub fn new(settings: &ServerSettings) -> Self {
        Self {
            read: settings.read_timeout(),
            idle: settings.idle_timeout(),
            connections: Connections::default(),
        }
    }

    /// Puts every connection `acceptor` accepts under the head and idle deadlines.
    pub fn accept<A: Acceptor>(&self, acceptor: A) -> DeadlineAcceptor<A> {
        DeadlineAcceptor {
            inner: acceptor,
            deadlines: self.clone(),
        }
    }

    /// Wraps the routes, so that a connection is known to be busy while a request on it is answered.
    pub fn track<E: Endpoint>(&self, routes: E) -> Tracked<E> {
        Tracked {
            inner: routes,
            connections: self.connections.clone(),
        }
    }
}

pub struct DeadlineAcceptor<A> {
    inner: A,
    deadlines: Deadlines,
}

impl<A: Acceptor> Acceptor for DeadlineAcceptor<A> {
    type Io = Deadlined<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        // The first head is due from the connection's opening.
        let connection = Arc::new(Connection {
            receiving: AtomicBool::new(true),
            answering: AtomicUsize::new(0),
        });
        let peer = remote.as_socket_addr().copied();
        if let Some(peer) = peer {
            let mut map = self.deadlines.connections.lock().expect("deadlines lock");
            map.insert(peer, connection.clone());
        }
        let io = Deadlined {
            inner: io,
            read_timeout: self.deadlines.read,
            idle_timeout: self.deadlines.idle,
            deadline: Box::pin(tokio::time::sleep(self.deadlines.read)),
            phase: Phase::Head,
            connection,
            registry: peer.map(|peer| (peer, self.deadlines.connections.clone())),
        };
        Ok((io, local, remote, scheme))
    }
}

/// An accepted stream whose reads fail once a request head is overdue or the connection idle too long.
pub struct Deadlined<T> {
    inner: T,
    read_timeout: Duration,
    idle_timeout: Duration,
    /// When the current phase's time is up, if it has a limit.
    deadline: Pin<Box<Sleep>>,
    phase: Phase,
    connection: Arc<Connection>,
    registry: Option<(SocketAddr, Connections)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Answering,
    Idle,
}

impl<T> Deadlined<T> {
    /// The connection's phase now, restarting the idle time on entering it.
    fn phase(&mut self) -> Phase {
        let phase = if self.connection.answering.load(Ordering::Acquire) > 0 {
            Phase::Answering
        } else if self.connection.receiving.load(Ordering::Acquire) {
            Phase::Head
        } else {
            Phase::Idle
        };
        if phase == Phase::Idle && self.phase != Phase::Idle {
            self.restart(self.idle_timeout);
        }
        self.phase = phase;
        phase
    }

    fn restart(&mut self, limit: Duration) {
        self.deadline.as_mut().reset(Instant::now() + limit);
    }

    /// A client still taking in its answer is not idle.
    fn wrote(&mut self, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) && self.phase() == Phase::Idle {
            self.restart(self.idle_timeout);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadlined<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.phase();
        if phase != Phase::Answering && this.deadline.as_mut().poll(cx).is_ready() {
            let why = match phase {
                Phase::Head => "the request head did not arrive within server.read_timeout",
                _ => "the connection was idle for server.idle_timeout",
            };
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
        }
        let filled = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if phase == Phase::Idle && buf.filled().len() > filled {
            // The first bytes of the next request: its head is due from now.
            this.connection.receiving.store(true, Ordering::Release);
            this.phase = Phase::Head;
            this.restart(this.read_timeout);
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadlined<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(&written);
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T> Drop for Deadlined<T> {
    fn drop(&mut self) {
        if let Some((peer, registry)) = &self.registry {
            let mut map = registry.lock().expect("deadlines lock");
            // A new connection from the same address and port may have replaced this one already.
            if map
                .get(peer)
                .is_some_and(|c| Arc::ptr_eq(c, &self.connection))
            {
                map.remove(peer);
            }
        }
    }
}

pub struct Tracked<E> {
    inner: E,
    connections: Connections,
}

impl<E: Endpoint> Endpoint for Tracked<E> {
    type Output = E::Output;

    async fn call(&self, req: Request) -> poem::Result<Self::Output> {
        let connection = req.remote_addr().as_socket_addr().and_then(|peer| {
            let map = self.connections.lock().expect("deadlines lock");
            map.get(peer).cloned()
        });
        let _answering = connection.map(Answering::new);
        self.inner.call(req).await
    }
}

/// Marks a connection's head received and a request on it being answered, until dropped however the
/// request ends.
struct Answering(Arc<Connection>);

impl Answering {
    fn new(connection: Arc<Connection>) -> Self {
        connection.receiving.store(false, Ordering::Release);
        connection.answering.fetch_add(1, Ordering::AcqRel);
        Self(connection)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::AcqRel);
    }
}
