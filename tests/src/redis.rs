//! A real `redis-server` for the tests and examples: started on a free loopback port with its
//! own directory, no persistence, stopped (and its directory removed) when dropped. A missing
//! binary is a failure that says how to install it, never a skip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn_with(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    match Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server is not installed: the Redis tests need a real server. \
             Install it (Debian: `apt-get install redis-server`; `.ci/run` does this)."
        ),
        Err(e) => panic!("could not start redis-server: {e}"),
    }
}

/// A running `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    /// Extra `redis-server` arguments, kept for restarts.
    extra: Vec<&'static str>,
}

impl RedisServer {
    /// Starts a server; panics with instructions if `redis-server` is not installed.
    #[allow(clippy::new_without_default)]
    pub fn start() -> Self {
        for _ in 0..5 {
            if let Some(server) = Self::try_start() {
                return server;
            }
        }
        panic!("redis-server did not start on a free port after 5 attempts");
    }

    /// Starts a server that persists every write (append-only file, fsync always): a
    /// [`restart`](Self::restart) keeps its data, as a production Redis would.
    pub fn start_persistent() -> Self {
        for _ in 0..5 {
            if let Some(server) = Self::try_start_with(&["--appendonly", "yes", "--appendfsync", "always"]) {
                return server;
            }
        }
        panic!("redis-server did not start on a free port after 5 attempts");
    }

    fn try_start() -> Option<Self> {
        Self::try_start_with(&[])
    }

    fn try_start_with(extra: &[&'static str]) -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let dir = std::env::temp_dir().join(format!("tokenkit-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let child = spawn_with(port, &dir, extra);
        let mut server = Self {
            child,
            port,
            dir,
            extra: extra.to_vec(),
        };
        server.ready().then_some(server)
    }

    /// Waits until the server answers (`false`: it exited, or 5 s passed).
    fn ready(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if self.pings() {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills the server (an outage).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port (empty, unless started persistent).
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_with(self.port, &self.dir, &self.extra);
        assert!(
            self.ready(),
            "redis-server did not come back on port {}",
            self.port
        );
    }

    fn pings(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A local Redis Cluster of `masters` nodes (no replicas), each a `redis-server` on a free
/// port whose cluster bus port (+10000) is free too; stopped when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes and forms the cluster with `redis-cli --cluster create`; waits until
    /// every node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..masters).map(|_| RedisServer::start_cluster_node()).collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| {
                panic!("redis-cli (package redis-tools, installed with redis-server) did not run: {e}")
            });
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes };
        let start = Instant::now();
        while !cluster.nodes.iter().all(RedisServer::cluster_ok) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the cluster did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

impl RedisServer {
    fn start_cluster_node() -> Self {
        for _ in 0..20 {
            let Some(port) = TcpListener::bind("127.0.0.1:0")
                .ok()
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.port())
                .filter(|p| *p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok())
            else {
                continue;
            };
            let dir =
                std::env::temp_dir().join(format!("tokenkit-redis-cluster-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            if std::fs::create_dir_all(&dir).is_err() {
                continue;
            }
            let child = spawn_with(
                port,
                &dir,
                &["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
            );
            let mut node = Self {
                child,
                port,
                dir,
                extra: Vec::new(),
            };
            if node.ready() {
                return node;
            }
        }
        panic!("no cluster node started after 20 attempts");
    }

    fn cluster_ok(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut reply = [0u8; 512];
        stream.write_all(b"CLUSTER INFO\r\n").is_ok()
            && stream
                .read(&mut reply)
                .is_ok_and(|n| String::from_utf8_lossy(&reply[..n]).contains("cluster_state:ok"))
    }
}

/// Retries `attempt` every 50 ms while a client reconnects after a restart; returns its first
/// success, or panics after 5 s.
pub async fn retry_while_reconnecting<T, E, F, Fut>(mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    for _ in 0..100 {
        if let Ok(value) = attempt().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("still failing 5 s after Redis came back");
}
