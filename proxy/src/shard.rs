//! Thread per core for the data path: further threads, each with its own current-thread
//! runtime and its own listening socket per proxy address, so that a client connection,
//! its upstream connection and every wake-up of either stay on one thread.
//!
//! **What runs where.** The caller's runtime (the CLI's is a current-thread runtime too)
//! runs everything it always did: the refresher (lease renewal, warm-up, the control
//! channel), the admin listener, store-and-forward replay, and the accept loops of the
//! first data-path thread. Each further thread (`Config::threads` − 1 of them) runs only
//! accept loops for the proxy listeners and the connections they accept. What they
//! share is already built for sharing: the credential snapshot (`ArcSwap`), the metrics
//! (atomics), the upstream settings (`Arc`), the shutdown token and the task tracker.
//!
//! **Why `SO_REUSEPORT`.** Each thread accepts from its own socket bound to the same
//! address, and the kernel spreads new connections over them by a hash of the peer's
//! address, so no thread is woken for a connection another takes. A listener that was
//! bound without the option (a library caller's own) cannot be joined; its threads then
//! accept from duplicates of that one socket instead, which still keeps each connection
//! on the thread that accepted it.
//!
//! **Limits and shutdown stay process-wide.** The connection limit is one semaphore for
//! all threads (a permit is taken once per connection, not per request), so
//! `--max-connections` means what it says however the kernel spreads connections. The
//! lobby (`lobby.rs`) belongs to an accept loop as before; each thread's loop gets an
//! equal share of the seats, so a flood of silent connections, spread evenly by the
//! kernel, is held to the same total as on one thread. One shutdown token stops every
//! accept loop, connections drain on their own thread, and the caller's task tracker
//! counts each thread as one task until its last connection has ended, so the caller's
//! drain (grace period, then the deadline) covers them exactly as it covers its own.
//!
//! Nothing on the data path needs a multi-thread runtime: no `block_in_place`; timers,
//! `spawn` and `spawn_blocking` (a DNS lookup for a named upstream, store and forward's
//! file work) use the runtime of the thread they are called on, which has its own.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::server::Server;

/// Pending connections per listening socket (what `TcpListener::bind` uses).
const BACKLOG: u32 = 1024;

/// How long a finished thread waits for blocking work it started (a DNS lookup) before
/// it ends anyway.
const BLOCKING_WAIT: Duration = Duration::from_secs(1);

/// Binds `addr` so that further threads of this process can bind it too
/// (`SO_REUSEPORT`), after checking that nothing holds it yet: a socket bound with the
/// option would otherwise share the address with another process that set it as well
/// (say a second sidecar by mistake) instead of failing with "address in use".
pub(crate) fn bind_shared(addr: SocketAddr) -> io::Result<TcpListener> {
    let probe = socket_for(addr)?;
    probe.bind(addr)?;
    // The port the system chose, for port 0.
    let addr = probe.local_addr()?;
    drop(probe);
    let socket = socket_for(addr)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A listening socket on `listener`'s address for another thread; must be called
/// within the runtime that will serve it.
pub(crate) fn join(listener: &TcpListener) -> io::Result<TcpListener> {
    let addr = listener.local_addr()?;
    let socket = socket_for(addr)?;
    socket.set_reuseport(true)?;
    match socket.bind(addr) {
        Ok(()) => socket.listen(BACKLOG),
        // Bound without `SO_REUSEPORT` (by a library caller): share that one socket.
        Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
            debug!(%addr, "the listener does not allow SO_REUSEPORT; threads share its socket");
            let shared = std::net::TcpListener::from(listener.as_fd().try_clone_to_owned()?);
            TcpListener::from_std(shared)
        }
        Err(error) => Err(error),
    }
}

fn socket_for(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restart must not wait for old connections'
    // TIME_WAIT.
    socket.set_reuseaddr(true)?;
    Ok(socket)
}

/// One further data-path thread before it starts: its runtime, and the accept loops
/// (their sockets registered with that runtime) it will run.
pub(crate) struct Shard<F> {
    runtime: Runtime,
    servers: Vec<Server<F>>,
}

impl<F> Shard<F> {
    /// A current-thread runtime, and `servers` made within it by `make` (which must
    /// create their sockets there, see [`join`]).
    pub(crate) fn new(make: impl FnOnce() -> io::Result<Vec<Server<F>>>) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let servers = {
            let _entered = runtime.enter();
            make()?
        };
        Ok(Self { runtime, servers })
    }
}

impl<F> Shard<F>
where
    Server<F>: Serve,
    F: Send + 'static,
{
    /// Starts the thread. It accepts until `shutdown`, then runs until its last
    /// connection has ended (drained, or closed at `deadline`); `tracker` counts it as
    /// one task meanwhile.
    pub(crate) fn start(
        self,
        index: usize,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
        deadline: CancellationToken,
    ) -> io::Result<JoinHandle<()>> {
        let token = tracker.token();
        let Self { runtime, servers } = self;
        std::thread::Builder::new()
            // Short: Linux keeps 15 bytes of a thread's name.
            .name(format!("proxy-data-{index}"))
            .spawn(move || {
                // Released last, once the runtime is gone.
                let _token = token;
                runtime.block_on(async move {
                    let local = TaskTracker::new();
                    for server in servers {
                        local.spawn(server.serve(
                            local.clone(),
                            shutdown.clone(),
                            deadline.clone(),
                        ));
                    }
                    local.close();
                    local.wait().await;
                });
                runtime.shutdown_timeout(BLOCKING_WAIT);
            })
    }
}

/// An accept loop that can be moved to another thread and run there.
pub(crate) trait Serve: Send + 'static {
    /// [`Server::run`].
    fn serve(
        self,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        deadline: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static;
}
