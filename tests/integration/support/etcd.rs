//! A real etcd cluster on loopback for the fleet tests (Debian's `etcd-server`), and a TCP
//! proxy a test can cut to take one coordinator off etcd while the cluster stays up.

use std::fs;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::PATIENCE;

/// Whether `etcd` and `etcdctl` are there; installs Debian's packages if not (as CI does).
/// `false` only when they cannot be installed, and then loudly (and under CI, which installs
/// them, not at all: the test fails).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let found = || {
            [("etcd", "--version"), ("etcdctl", "version")].iter().all(|(tool, version)| {
                Command::new(tool)
                    .arg(version)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
        };
        if found() {
            return true;
        }
        let _ = Command::new("apt-get")
            .args(["install", "-y", "etcd-server", "etcd-client"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if found() {
            return true;
        }
        let message = "etcd (Debian's etcd-server, etcd-client) is not installed and cannot be: the fleet tests did NOT run";
        // CI installs it (.ci/run): there, a missing etcd is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("\n!!!!! SKIPPED: {message} !!!!!\n");
        false
    })
}

/// A free loopback port (taken by the kernel, then let go for the member to bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A cluster of members on loopback, each with its data in the cluster's temp directory.
/// Stopped (SIGKILL) when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

impl Cluster {
    pub fn start(size: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = Cluster { dir, members };
        for i in 0..size {
            cluster.start_member(i);
        }
        cluster.wait_healthy();
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` (again: its data directory says which cluster it belongs to).
    pub fn start_member(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let data = self.dir.path().join(&self.members[i].name);
        let log = self
            .dir
            .path()
            .join(format!("{}.log", self.members[i].name));
        let m = &mut self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        m.child = Some(
            Command::new("etcd")
                .args(["--name", &m.name, "--data-dir"])
                .arg(&data)
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args([
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-state",
                    "new",
                ])
                .args(["--initial-cluster-token", "update-coordinator-test"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start etcd"),
        );
    }

    /// SIGKILLs member `i`.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The client URLs of every member, as `fleet.endpoints` lists them.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }

    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// `fleet.endpoints = [...]` for a config.
    pub fn endpoints_toml(&self) -> String {
        let quoted: Vec<String> = self.endpoints().iter().map(|e| format!("{e:?}")).collect();
        format!("[{}]", quoted.join(", "))
    }

    fn etcdctl(&self) -> Command {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect();
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(live.join(","))
            .arg("--command-timeout=5s");
        cmd
    }

    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ok = self
                .etcdctl()
                .args(["endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A key's value, if it has one.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self
            .etcdctl()
            .args(["get", "--print-value-only", key])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "etcdctl get: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
        (!text.is_empty()).then_some(text)
    }

    pub fn put(&self, key: &str, value: &str) {
        let out = self.etcdctl().args(["put", key, value]).output().unwrap();
        assert!(
            out.status.success(),
            "etcdctl put: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The holders of a group's semaphore (airlock's key and JSON).
    pub fn holders(&self, group: &str) -> Vec<String> {
        let key = format!("com.coreos.airlock/groups/{group}/v1/semaphore");
        let Some(value) = self.get(&key) else {
            return Vec::new();
        };
        let sem: serde_json::Value = serde_json::from_str(&value).unwrap();
        sem["holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().to_owned())
            .collect()
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        for m in &self.members {
            let path = self.dir.path().join(format!("{}.log", m.name));
            let log = fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            text.push_str(&format!("--- {} ---\n", m.name));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- etcd logs -----\n{}", self.logs());
        }
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
}

/// A TCP proxy on loopback in front of one etcd member. [`Proxy::cut`] closes every
/// connection and refuses new ones (the host is cut off); [`Proxy::restore`] lets them in.
pub struct Proxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (gate, held) = (Arc::clone(&open), Arc::clone(&connections));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !gate.load(Ordering::SeqCst) {
                    drop(client); // cut off: closed at once
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let mut held = held.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        });
        Proxy {
            port,
            open,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread until either end closes.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}
