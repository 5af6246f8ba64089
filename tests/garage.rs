//! Real Garage servers (an S3-compatible distributed object store) for the
//! suite to run against.
//!
//! With `CAIRN_TEST_BACKEND=garage` the whole suite runs on one cluster per
//! test process ([`shared`]), started on loopback on first use, of one node
//! or, with `CAIRN_TEST_GARAGE_NODES=3`, of three nodes replicating every
//! object three times. Each test gets its own prefix in the bucket. Tests
//! of faults (a node stopped, the store gone mid-backup) start a
//! [`Cluster`] of their own. Servers die with the test process
//! (`PR_SET_PDEATHSIG`) or when their cluster is dropped.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cairn_core::backend::S3Settings;

/// The S3 region the test clusters answer to.
pub const REGION: &str = "garage";

/// The bucket every cluster has, made at start.
pub const BUCKET: &str = "cairn";

/// How to reach a running cluster: its S3 endpoint and a key that may read
/// and write its bucket.
#[derive(Clone)]
pub struct Garage {
    /// `http://127.0.0.1:PORT`, the S3 API of the cluster's first node.
    pub endpoint: String,
    /// The access key id.
    pub key_id: String,
    /// Its secret.
    pub secret: String,
}

impl Garage {
    /// The settings that reach the bucket.
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            region: Some(REGION.into()),
            access_key_id: Some(self.key_id.clone()),
            secret_access_key: Some(self.secret.clone()),
            session_token: None,
        }
    }

    /// The environment a `cairn` process needs to reach the bucket.
    pub fn environment(&self) -> [(&'static str, String); 3] {
        [
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_DEFAULT_REGION", REGION.into()),
        ]
    }

    /// The location of `prefix` in the bucket.
    pub fn location(&self, prefix: &str) -> String {
        format!("s3:{}/{BUCKET}/{prefix}", self.endpoint)
    }
}

/// The test process's cluster, started on first use: one node, or as
/// many as `CAIRN_TEST_GARAGE_NODES` says.
pub fn shared() -> &'static Garage {
    static GARAGE: OnceLock<Garage> = OnceLock::new();
    GARAGE.get_or_init(|| {
        let nodes = match std::env::var("CAIRN_TEST_GARAGE_NODES") {
            Ok(n) => n
                .parse()
                .unwrap_or_else(|_| panic!("CAIRN_TEST_GARAGE_NODES={n:?}: expected 1 or 3")),
            Err(_) => 1,
        };
        let (sender, receiver) = std::sync::mpsc::channel();
        // The servers are children of a thread that never ends: the death
        // signal is sent when the thread that spawned a process exits.
        std::thread::spawn(move || {
            let cluster = Cluster::start(nodes);
            sender
                .send(cluster.garage.clone())
                .expect("the suite waits for Garage");
            let _kept = cluster;
            loop {
                std::thread::park();
            }
        });
        receiver
            .recv_timeout(Duration::from_secs(180))
            .expect("Garage started within three minutes")
    })
}

/// The Garage binary: `GARAGE_BIN`, or in cargo's bin folder, or `garage`
/// on the path.
fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("GARAGE_BIN") {
        return bin.into();
    }
    let cargo_bin = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".cargo/bin/garage"))
        .filter(|p| p.exists());
    cargo_bin.unwrap_or_else(|| "garage".into())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One server of a cluster.
struct Node {
    config: PathBuf,
    log: PathBuf,
    /// `None` while stopped.
    child: Option<Child>,
}

impl Node {
    /// Starts the server with its config (its folders and ports are kept,
    /// so a restarted node is the same node).
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("a log file");
        let mut server = Command::new(binary());
        server
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe, and only sets a flag on the child.
        unsafe {
            server.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(server.spawn().unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (install it with `cargo install garage --locked`)",
                binary().display()
            )
        }));
    }

    /// Kills the server, as a crash or a pulled cable would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `garage -c CONFIG ARGS`; returns its output if it succeeded.
    fn try_admin(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run garage");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// [`Node::try_admin`], retried for up to a minute while the cluster
    /// settles.
    fn admin(&self, args: &[&str]) -> String {
        let started = Instant::now();
        loop {
            match self.try_admin(args) {
                Ok(out) => return out,
                Err(e) if started.elapsed() > Duration::from_secs(60) => {
                    panic!("garage {args:?}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

/// A cluster of Garage nodes on loopback with a bucket and a key, killed
/// when dropped.
pub struct Cluster {
    /// How to reach it.
    pub garage: Garage,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `count` nodes (1, or 3 replicating each object on all of
    /// them), lays them out, and makes the bucket and a key.
    pub fn start(count: usize) -> Cluster {
        assert!(
            count == 1 || count == 3,
            "{count} nodes: a cluster has 1 or 3"
        );
        let dir = tempfile::tempdir().expect("a folder for Garage");
        let secret: String = random_bytes(32)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut s3_ports = Vec::new();
        let mut rpc_ports = Vec::new();
        let mut nodes: Vec<Node> = (0..count)
            .map(|i| {
                let folder = dir.path().join(format!("node{i}"));
                std::fs::create_dir(&folder).expect("a node folder");
                let (s3, rpc, admin_port) = (free_port(), free_port(), free_port());
                s3_ports.push(s3);
                rpc_ports.push(rpc);
                let config = folder.join("garage.toml");
                write_config(&config, &folder, count, &secret, s3, rpc, admin_port);
                Node {
                    config,
                    log: folder.join("server.log"),
                    child: None,
                }
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        let ids: Vec<String> = nodes
            .iter()
            .map(|node| {
                let id = node.admin(&["node", "id", "-q"]);
                let id = id.trim();
                id.split('@').next().unwrap_or(id).to_string()
            })
            .collect();
        for (id, rpc) in ids.iter().zip(&rpc_ports).skip(1) {
            nodes[0].admin(&["node", "connect", &format!("{id}@127.0.0.1:{rpc}")]);
        }
        for (i, id) in ids.iter().enumerate() {
            let zone = format!("dc{}", i + 1);
            nodes[0].admin(&["layout", "assign", "-z", &zone, "-c", "1G", id]);
        }
        nodes[0].admin(&["layout", "apply", "--version", "1"]);
        // Bucket and key are made once every node knows the layout.
        nodes[0].admin(&["bucket", "create", BUCKET]);
        let key = nodes[0].admin(&["key", "create", "cairn-tests"]);
        let field = |label: &str| {
            key.lines()
                .find_map(|line| line.strip_prefix(label))
                .map(|value| value.trim().to_string())
                .unwrap_or_else(|| panic!("no {label} in: {key}"))
        };
        let (key_id, secret) = (field("Key ID:"), field("Secret key:"));
        nodes[0].admin(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            BUCKET,
            "--key",
            "cairn-tests",
        ]);
        let cluster = Cluster {
            garage: Garage {
                endpoint: format!("http://127.0.0.1:{}", s3_ports[0]),
                key_id,
                secret,
            },
            nodes,
            _dir: dir,
        };
        cluster.wait_until_writable();
        cluster
    }

    /// Waits until the bucket takes a write on every node's behalf (a new
    /// layout takes a moment to reach all nodes).
    fn wait_until_writable(&self) {
        let store = cairn_core::backend::S3Backend::new(
            &self.garage.location("ready"),
            &cairn_core::backend::S3Location::parse(&self.garage.location("ready")[3..])
                .expect("a location"),
            &self.garage.settings(),
        )
        .expect("an S3 store");
        let started = Instant::now();
        loop {
            use cairn_core::backend::{Backend, ObjectKind};
            match store.put(ObjectKind::Lock, "probe", b"probe") {
                Ok(()) => {
                    let _ = store.delete(ObjectKind::Lock, "probe");
                    return;
                }
                Err(e) if started.elapsed() > Duration::from_secs(60) => {
                    panic!("the Garage cluster takes no write: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Kills node `i` (not the first, whose S3 API the clients use).
    pub fn stop_node(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again, where it was.
    pub fn start_node(&mut self, i: usize) {
        self.nodes[i].spawn();
    }

    /// Kills every node: the store is gone.
    pub fn stop_all(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Starts every node again, and waits until the bucket takes writes.
    pub fn start_all(&mut self) {
        for node in &mut self.nodes {
            node.spawn();
        }
        self.wait_until_writable();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Writes node config `path`, whose data lives in `folder`.
fn write_config(
    path: &Path,
    folder: &Path,
    replication: usize,
    secret: &str,
    s3: u16,
    rpc: u16,
    admin_port: u16,
) {
    std::fs::write(
        path,
        format!(
            "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
             replication_factor = {replication}\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
             [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
             root_domain = \".s3.garage.localhost\"\n\
             [admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\n",
            meta = folder.join("meta").display(),
            data = folder.join("data").display(),
        ),
    )
    .expect("write Garage's config");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("a private config");
}

/// Random bytes, for the cluster's RPC secret.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("random bytes");
    bytes
}
