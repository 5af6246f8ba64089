//! A real Garage server (an S3-compatible object store) for the suite to run
//! against, with `CAIRN_TEST_BACKEND=garage`: one single-node cluster per
//! test process, started on loopback on first use, with a bucket and a key
//! made through its CLI. Each test gets its own prefix in the bucket. The
//! server dies with the test process (`PR_SET_PDEATHSIG`).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cairn_core::backend::S3Settings;

/// The S3 region the test cluster answers to.
pub const REGION: &str = "garage";

/// A running test cluster: where it listens, its bucket, and a key that may
/// read and write it.
pub struct Garage {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket every test's prefix lives in.
    pub bucket: String,
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
}

/// The test process's cluster, started on first use.
pub fn shared() -> &'static Garage {
    static GARAGE: OnceLock<Garage> = OnceLock::new();
    GARAGE.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        // The server is the child of a thread that never ends: the death
        // signal is sent when the thread that spawned a process exits.
        std::thread::spawn(move || {
            let (garage, _dir, _child) = start();
            sender.send(garage).expect("the suite waits for Garage");
            loop {
                std::thread::park();
            }
        });
        receiver
            .recv_timeout(Duration::from_secs(120))
            .expect("Garage started within two minutes")
    })
}

/// The Garage binary: `GARAGE_BIN`, or `garage` on the path, or in cargo's
/// bin folder.
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

/// Runs `garage -c CONFIG ARGS`, insisting on success; returns its output.
fn admin(config: &Path, args: &[&str]) -> String {
    let out = Command::new(binary())
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .expect("run garage");
    assert!(
        out.status.success(),
        "garage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn start() -> (Garage, tempfile::TempDir, std::process::Child) {
    let dir = tempfile::tempdir().expect("a folder for Garage");
    let (s3, rpc, admin_port) = (free_port(), free_port(), free_port());
    let secret: String = (0..32).map(|_| format!("{:02x}", rand_byte())).collect();
    let config = dir.path().join("garage.toml");
    std::fs::write(
        &config,
        format!(
            "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
             [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
             root_domain = \".s3.garage.localhost\"\n\
             [admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\n",
            meta = dir.path().join("meta").display(),
            data = dir.path().join("data").display(),
        ),
    )
    .expect("write Garage's config");
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("a private config");
    let log = std::fs::File::create(dir.path().join("server.log")).expect("a log file");
    let mut server = Command::new(binary());
    server
        .arg("-c")
        .arg(&config)
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
    let child = server.spawn().unwrap_or_else(|e| {
        panic!(
            "start {}: {e} (install it with `cargo install garage --locked`)",
            binary().display()
        )
    });
    let started = Instant::now();
    let node = loop {
        let out = Command::new(binary())
            .arg("-c")
            .arg(&config)
            .args(["node", "id", "-q"])
            .output()
            .expect("run garage");
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "Garage did not answer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let node = node.split('@').next().unwrap_or(&node).to_string();
    admin(
        &config,
        &["layout", "assign", "-z", "dc1", "-c", "10G", &node],
    );
    admin(&config, &["layout", "apply", "--version", "1"]);
    admin(&config, &["bucket", "create", "cairn"]);
    let key = admin(&config, &["key", "create", "cairn-tests"]);
    let field = |label: &str| {
        key.lines()
            .find_map(|line| line.strip_prefix(label))
            .map(|value| value.trim().to_string())
            .unwrap_or_else(|| panic!("no {label} in: {key}"))
    };
    let (key_id, secret) = (field("Key ID:"), field("Secret key:"));
    admin(
        &config,
        &[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "cairn",
            "--key",
            "cairn-tests",
        ],
    );
    let garage = Garage {
        endpoint: format!("http://127.0.0.1:{s3}"),
        bucket: "cairn".into(),
        key_id,
        secret,
    };
    (garage, dir, child)
}

/// A random byte, for the cluster's RPC secret.
fn rand_byte() -> u8 {
    let mut byte = [0u8; 1];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut byte))
        .expect("random bytes");
    byte[0]
}
