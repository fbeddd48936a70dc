//! A real deployment for tests: `signet server` and `signet agent` as separate processes on
//! loopback and temporary Unix sockets.

#![allow(dead_code, reason = "each test binary uses a subset")]
#![expect(clippy::unwrap_used, reason = "test harness fails loudly")]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const TD: &str = "example.org";

pub fn signet_bin() -> &'static str {
    env!("CARGO_BIN_EXE_signet")
}

pub use signet_test_support::{free_port, wait_for};

pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub health_port: u16,
    pub server: Option<Child>,
    pub agent: Option<Child>,
    pub agent_id: String,
    pub agent_health_port: u16,
    /// Extra environment of the agent process (its flags' `SIGNET_*` variables).
    pub agent_env: Vec<(&'static str, String)>,
    /// Extra environment of the server process.
    pub server_env: Vec<(&'static str, String)>,
    /// The trust domain of server and agent.
    pub trust_domain: &'static str,
    /// A command the server runs under (e.g. `ip netns exec <ns>`); empty: none.
    pub server_prefix: Vec<String>,
    /// The address the server binds its agent API and health endpoint to.
    pub server_host: String,
    /// Where the agent reaches the server (`host:port`), when not directly (a proxy).
    pub agent_server_address: Option<String>,
}

impl Deployment {
    pub fn server_dir(&self) -> PathBuf {
        self.dir.path().join("server")
    }
    pub fn admin_socket(&self) -> PathBuf {
        self.server_dir().join("admin.sock")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sockets/api.sock")
    }
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Starts a server and an agent and waits until both are ready.
    pub fn start() -> Self {
        Self::start_with_agent_env(Vec::new())
    }

    /// As `start`, with extra environment for the agent.
    pub fn start_with_agent_env(agent_env: Vec<(&'static str, String)>) -> Self {
        Self::start_with_env(Vec::new(), agent_env)
    }

    /// As `start`, with extra environment for the server and the agent.
    pub fn start_with_env(
        server_env: Vec<(&'static str, String)>,
        agent_env: Vec<(&'static str, String)>,
    ) -> Self {
        Self::start_in(TD, server_env, agent_env)
    }

    /// As `start_with_env`, in another trust domain.
    pub fn start_in(
        trust_domain: &'static str,
        server_env: Vec<(&'static str, String)>,
        agent_env: Vec<(&'static str, String)>,
    ) -> Self {
        Self::start_custom(trust_domain, server_env, agent_env, |_| {})
    }

    /// As `start_in`, with the deployment adjusted by `setup` before anything starts.
    pub fn start_custom(
        trust_domain: &'static str,
        server_env: Vec<(&'static str, String)>,
        agent_env: Vec<(&'static str, String)>,
        setup: impl FnOnce(&mut Self),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Let other users traverse to the socket (the socket dir itself is the agent's).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut d = Self {
            dir,
            port: free_port(),
            health_port: free_port(),
            server: None,
            agent: None,
            agent_id: String::new(),
            agent_health_port: free_port(),
            agent_env,
            server_env,
            trust_domain,
            server_prefix: Vec::new(),
            server_host: "127.0.0.1".to_owned(),
            agent_server_address: None,
        };
        setup(&mut d);
        d.start_server();
        let token = d.token();
        d.start_agent(Some(&token));
        d
    }

    pub fn start_server(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let mut command = match self.server_prefix.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(signet_bin());
                command
            }
            None => Command::new(signet_bin()),
        };
        let child = command
            .args(["server", "--trust-domain", self.trust_domain])
            .arg("--data-dir")
            .arg(self.server_dir())
            .args([
                "--bind-address",
                &format!("{}:{}", self.server_host, self.port),
            ])
            .args([
                "--health-address",
                &format!("{}:{}", self.server_host, self.health_port),
            ])
            .envs(self.server_env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(child);
        let admin = self.admin_socket();
        wait_for("the server", Duration::from_secs(60), || {
            admin.exists() && self.admin(&["bundle", "show"]).status.success()
        });
    }

    pub fn start_agent(&mut self, token: Option<&str>) {
        self.spawn_agent(token);
        let list = self.admin(&["agent", "list", "-o", "json"]);
        let agents: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
        self.agent_id = agents[0]["spiffe_id"].as_str().unwrap().to_owned();
    }

    /// Starts the agent and waits for its socket only (the server may be down).
    pub fn spawn_agent(&mut self, token: Option<&str>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        let mut cmd = Command::new(signet_bin());
        let server_address = self
            .agent_server_address
            .clone()
            .unwrap_or_else(|| format!("{}:{}", self.server_host, self.port));
        cmd.args(["agent", "--trust-domain", self.trust_domain])
            .args(["--server-address", &server_address])
            .arg("--trust-bundle")
            .arg(self.server_dir().join("bundle.pem"))
            .arg("--data-dir")
            .arg(self.dir.path().join("agent"))
            .arg("--socket-path")
            .arg(self.socket())
            .args([
                "--health-address",
                &format!("127.0.0.1:{}", self.agent_health_port),
            ])
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(token) = token {
            cmd.args(["--join-token", token]);
        }
        cmd.envs(self.agent_env.iter().map(|(k, v)| (*k, v.as_str())));
        let _ = std::fs::remove_file(self.socket());
        self.agent = Some(cmd.spawn().unwrap());
        let socket = self.socket();
        wait_for("the agent socket", Duration::from_secs(60), || {
            socket.exists()
        });
    }

    pub fn token(&self) -> String {
        let out = self.admin(&["token", "create", "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["token"].as_str().unwrap().to_owned()
    }

    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(signet_bin())
            .args(args)
            .arg("--admin-socket")
            .arg(self.admin_socket())
            .output()
            .unwrap()
    }

    pub fn workload(&self, args: &[&str]) -> Output {
        Command::new(signet_bin())
            .args(args)
            .arg("--socket")
            .arg(self.endpoint())
            .output()
            .unwrap()
    }

    /// Creates an entry for this process's uid; returns its id.
    pub fn create_entry(&self, spiffe_id: &str, selector: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "entry",
            "create",
            "--spiffe-id",
            spiffe_id,
            "--parent-id",
            &self.agent_id,
            "--selector",
            selector,
            "-o",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = self.admin(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    pub fn kill_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!(
            "--- server.log\n{}\n--- agent.log\n{}",
            read("server.log"),
            read("agent.log")
        )
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.kill_agent();
        self.kill_server();
    }
}

/// A plain HTTP/1.1 GET on loopback: (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_request(port, "GET", path)
}

pub use signet_test_support::apps::http_request;

pub fn my_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

pub fn socket_exists(p: &Path) -> bool {
    p.exists()
}

/// TCP connections that never send a byte (a slowloris flood), from loopback source addresses,
/// with the runtime that owns them.
#[allow(dead_code, reason = "not every test binary floods")]
pub struct SilentConnections {
    runtime: tokio::runtime::Runtime,
    streams: Vec<tokio::net::TcpStream>,
}

#[allow(dead_code, reason = "not every test binary floods")]
impl SilentConnections {
    /// `per_source` connections to `to` from each of `sources` (e.g. `127.0.0.2`).
    pub fn open(sources: &[String], per_source: usize, to: std::net::SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let streams = runtime.block_on(async {
            let mut held = Vec::new();
            for source in sources {
                for _ in 0..per_source {
                    let socket = tokio::net::TcpSocket::new_v4().unwrap();
                    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
                    held.push(socket.connect(to).await.unwrap());
                }
            }
            held
        });
        Self { runtime, streams }
    }

    /// How many the peer has not closed (a read that neither ends nor fails within 20 ms).
    pub fn still_open(&mut self) -> usize {
        let streams = &mut self.streams;
        self.runtime.block_on(async {
            let mut open = 0;
            for stream in streams {
                let mut byte = [0u8; 1];
                let read = tokio::time::timeout(Duration::from_millis(20), async {
                    use tokio::io::AsyncReadExt;
                    stream.read(&mut byte).await
                })
                .await;
                if read.is_err() {
                    open += 1;
                }
            }
            open
        })
    }
}

/// A child process killed and reaped when dropped.
#[allow(dead_code, reason = "not every test binary spawns children this way")]
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Processes killed on drop.
pub struct Proxies(pub Vec<(Child, PathBuf)>);

impl Drop for Proxies {
    fn drop(&mut self) {
        for (child, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Proxies {
    pub fn log(&self, index: usize) -> String {
        std::fs::read_to_string(&self.0[index].1).unwrap_or_default()
    }
}

/// Starts `signet proxy` as root with `gid` (its workload identity) and waits for `ready_port`.
pub fn proxy(
    d: &Deployment,
    name: &str,
    gid: u32,
    args: &[String],
    ready_port: u16,
) -> (Child, PathBuf) {
    let log_path = d.dir.path().join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(signet_bin())
        .arg("proxy")
        .args(["--workload-api", &d.endpoint()])
        .args(args)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for(&format!("proxy {name}"), Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", ready_port)).is_ok()
    });
    (child, log_path)
}

impl Deployment {
    /// The CA's authorities, as `signet ca show -o json` lists them.
    pub fn authorities(&self) -> Vec<serde_json::Value> {
        let out = self.admin(&["ca", "show", "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        shown["authorities"].as_array().cloned().unwrap_or_default()
    }

    /// The live SVIDs the agents report for an authority.
    pub fn svids_of(&self, id: &str) -> Option<u64> {
        self.authorities()
            .into_iter()
            .find(|a| a["id"] == id)
            .and_then(|a| a["svids"].as_u64())
    }
}
