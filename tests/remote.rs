//! Object storage itself: a cluster with a node down, a store that goes
//! away mid-backup, refused credentials, a missing bucket, listings longer
//! than a page, and many hosts backing up into one bucket at once. These
//! run with the suite on Garage (`CAIRN_TEST_BACKEND=garage`), and skip
//! themselves on other backends.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cairn_core::backend::ObjectKind;

use crate::garage::Cluster;
use crate::util::{
    file_contents, noise, restored, stderr, test_backend, Env, KilledOnDrop, TestBackend,
};

/// Whether the suite runs on Garage; if not, says that the test skips.
fn on_garage(what: &str) -> bool {
    if test_backend() == TestBackend::Garage {
        return true;
    }
    eprintln!("{what}: needs Garage, skipped on {}", test_backend().name());
    false
}

/// A source folder `name` of `files` files of `size` bytes of noise.
fn source(env: &Env, name: &str, files: u64, size: usize, seed: u64) -> std::path::PathBuf {
    let src = env.path(name);
    fs::create_dir_all(&src).unwrap();
    for i in 0..files {
        fs::write(src.join(format!("f{i}")), noise(size, seed * 1000 + i * 2)).unwrap();
    }
    src
}

/// Restores `snapshot` and asserts it holds exactly what `src` holds.
fn assert_restores(env: &Env, snapshot: &str, src: &Path, target: &str) {
    let target = env.restore(snapshot, target, &[]);
    // Compared without printing contents: a mismatch names the files.
    let (got, want) = (file_contents(&restored(&target, src)), file_contents(src));
    let differing: Vec<&String> = want
        .keys()
        .chain(got.keys())
        .filter(|name| got.get(*name) != want.get(*name))
        .collect();
    assert!(differing.is_empty(), "{snapshot}: {differing:?} differ");
}

/// Asserts that `check --read-data` finds nothing wrong.
fn assert_clean(env: &Env) {
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn backups_and_restores_go_on_while_one_of_three_nodes_is_down() {
    if !on_garage("three nodes") {
        return;
    }
    let mut cluster = Cluster::start(3);
    let env = Env::on_garage(&cluster.garage);
    env.init();
    let first = source(&env, "first", 4, 300_000, 1);
    env.backup(&[&first], &[]);
    cluster.stop_node(2);
    // Every object is on all three nodes, and two of them answer.
    let second = source(&env, "second", 4, 300_000, 2);
    env.backup(&[&second], &[]);
    let snapshots = env.snapshots();
    assert_eq!(snapshots.len(), 2);
    assert_restores(&env, snapshots[0]["id"].as_str().unwrap(), &first, "t1");
    assert_restores(&env, snapshots[1]["id"].as_str().unwrap(), &second, "t2");
    assert_clean(&env);
    cluster.start_node(2);
}

#[test]
fn a_backup_outlives_a_short_outage_and_the_next_reuses_what_a_long_one_left() {
    if !on_garage("outage") {
        return;
    }
    let mut cluster = Cluster::start(1);
    let env = Env::on_garage(&cluster.garage);
    // Small packs, so that a backup stores many, one after another.
    env.ok(&["init", "--pack-size", "1"]);
    let src = source(&env, "src", 24, 1 << 20, 3);
    let store = env.store();
    let packs = || store.list(ObjectKind::Pack).map_or(0, |names| names.len());

    // Short: the store is gone for a moment while packs are being stored.
    let backup = env
        .process()
        .args(["backup", "-q", src.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(|| packs() >= 2);
    cluster.stop_all();
    std::thread::sleep(Duration::from_millis(500));
    cluster.start_all();
    let out = backup.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_restores(&env, "latest", &src, "short");

    // Long: the backup gives up with one clear error, and nothing of what
    // it stored is wasted.
    // Large enough that the backup is still storing packs when the store
    // goes.
    let more = source(&env, "more", 64, 1 << 20, 4);
    let before = packs();
    let backup = env
        .process()
        .args(["backup", "-q", more.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(|| packs() >= before + 4);
    cluster.stop_all();
    let out = backup.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let error = stderr(&out);
    assert!(!error.contains("panicked"), "{error}");
    assert!(
        error
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("cairn: error: "),
        "{error}"
    );
    cluster.start_all();
    let summary = env.backup(&[&more], &[]);
    // At least four packs of about 1 MiB each were stored before the
    // outage.
    let added = summary["bytes_added"].as_u64().unwrap();
    assert!(
        added < 62 << 20,
        "{added} bytes added for 64 MiB: the packs stored before the outage were not reused"
    );
    assert_eq!(env.snapshots().len(), 2);
    assert_restores(&env, "latest", &more, "long");
    assert_clean(&env);
}

/// Waits (up to two minutes) until `done` holds.
fn wait_for(done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "waited in vain"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn refused_credentials_fail_at_once_in_one_line() {
    if !on_garage("credentials") {
        return;
    }
    let env = Env::new();
    env.init();
    let started = Instant::now();
    let out = env
        .cairn()
        .env("AWS_SECRET_ACCESS_KEY", "not the secret")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let error = stderr(&out);
    assert_eq!(error.trim_end().lines().count(), 1, "{error}");
    assert!(error.contains("access denied"), "{error}");
    // Refused is refused: no round of retries with backoff.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_missing_bucket_is_named_in_one_line() {
    if !on_garage("missing bucket") {
        return;
    }
    let env = Env::new();
    let location = env.location().replace("/cairn/", "/no-such-bucket/");
    for args in [&["init"][..], &["snapshots"]] {
        let out = env
            .cairn()
            .env("CAIRN_REPO", &location)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let error = stderr(&out);
        assert_eq!(error.trim_end().lines().count(), 1, "{error}");
        assert!(error.contains("no-such-bucket"), "{error}");
    }
}

#[test]
fn listings_longer_than_a_page_are_complete() {
    if !on_garage("pagination") {
        return;
    }
    let env = Env::new();
    env.init();
    let one = source(&env, "one", 1, 1000, 5);
    env.backup(&[&one], &[]);
    // S3 lists at most 1000 names a page: store 2500 more objects, from
    // several threads at once.
    let names: Vec<String> = (0..2500).map(|i| format!("{i:064x}")).collect();
    std::thread::scope(|scope| {
        for chunk in names.chunks(250) {
            let store = env.store();
            scope.spawn(move || {
                for name in chunk {
                    store.put(ObjectKind::Pack, name, b"not a pack").unwrap();
                }
            });
        }
    });
    let listed = env.objects(ObjectKind::Pack);
    assert_eq!(listed.len(), 2501);
    assert!(names.iter().all(|name| listed.binary_search(name).is_ok()));
    // cairn sees every one of them: each is a pack no index lists.
    let out = env.run(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&names[2499]), "{}", stderr(&out));
}

#[test]
fn hosts_backing_up_into_one_bucket_at_once_each_get_a_whole_snapshot() {
    if !on_garage("many hosts") {
        return;
    }
    let env = Env::new();
    env.init();
    // Each host has files of its own and a file all of them share.
    let shared = noise(3 << 20, 99);
    let hosts: Vec<(String, std::path::PathBuf)> = (0..4)
        .map(|i| {
            let src = source(&env, &format!("host{i}"), 3, 400_000, 10 + i);
            fs::write(src.join("shared"), &shared).unwrap();
            (format!("host{i}"), src)
        })
        .collect();
    let running: Vec<_> = hosts
        .iter()
        .map(|(host, src)| {
            env.process()
                .args(["backup", "-q", "--host", host, src.to_str().unwrap()])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in running {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let snapshots = env.snapshots();
    assert_eq!(snapshots.len(), hosts.len());
    for (host, src) in &hosts {
        let snapshot = snapshots
            .iter()
            .find(|s| s["host"] == host.as_str())
            .unwrap_or_else(|| panic!("no snapshot of {host}"));
        let target = format!("restored-{host}");
        assert_restores(&env, snapshot["id"].as_str().unwrap(), src, &target);
    }
    assert_clean(&env);
}

/// Runs a setup command that must succeed.
fn run_tool(dir: &Path, program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", stderr(&out));
}

#[test]
fn an_https_store_behind_a_private_ca_is_trusted_through_ssl_cert_file() {
    if !on_garage("private CA") {
        return;
    }
    let env = Env::new();
    let tls = env.path("tls");
    fs::create_dir_all(&tls).unwrap();
    // A CA of our own, and a certificate for 127.0.0.1 that it signed.
    run_tool(
        &tls,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=cairn test CA",
        ],
    );
    run_tool(
        &tls,
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    fs::write(
        tls.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run_tool(
        &tls,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    // socat answers TLS on a port of its own and passes the requests on to
    // Garage's plain HTTP endpoint.
    let garage = env.location();
    let plain = garage
        .strip_prefix("s3:http://")
        .and_then(|rest| rest.split('/').next())
        .expect("a Garage location")
        .to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _front = KilledOnDrop(
        std::process::Command::new("socat")
            .current_dir(&tls)
            .args(["-d", "-d"])
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert=server.pem,key=server.key,verify=0"
            ))
            .arg(format!("TCP:{plain}"))
            .stderr(fs::File::create(tls.join("socat.log")).unwrap())
            .spawn()
            .expect("socat"),
    );
    wait_for(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    // socat logs each connection it accepts, so the log counts attempts.
    let connections = || {
        fs::read_to_string(tls.join("socat.log"))
            .unwrap_or_default()
            .matches("accepting connection from")
            .count()
    };
    let https = garage.replacen(
        &format!("http://{plain}"),
        &format!("https://127.0.0.1:{port}"),
        1,
    );
    let cairn = |ca: Option<&Path>, args: &[&str]| {
        let mut cmd = env.cairn();
        cmd.env("CAIRN_REPO", &https).env_remove("SSL_CERT_FILE");
        if let Some(ca) = ca {
            cmd.env("SSL_CERT_FILE", ca);
        }
        cmd.args(args).output().unwrap()
    };

    // Without the CA, the certificate is refused in one line, on the first
    // attempt: no retry can change the answer.
    wait_for(|| connections() == 1);
    let out = cairn(None, &["init", "--kdf-memory", "1", "--kdf-time", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let error = stderr(&out);
    assert_eq!(error.trim_end().lines().count(), 1, "{error}");
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(connections(), 2, "one probe and one attempt");

    // With it, the repository works over TLS.
    let ca = tls.join("ca.pem");
    let out = cairn(Some(&ca), &["init", "--kdf-memory", "1", "--kdf-time", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let src = source(&env, "src", 5, 300_000, 41);
    let out = cairn(Some(&ca), &["backup", "--json", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let target = env.path("restored");
    let out = cairn(
        Some(&ca),
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(file_contents(&restored(&target, &src)), file_contents(&src));
}
