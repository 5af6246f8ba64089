//! Database dumps through profiles, against real servers started here on
//! loopback: a PostgreSQL cluster (`initdb`, `pg_ctl`) and `redis-server`,
//! each filled, backed up by `cairn run`, restored into a fresh server and
//! compared. Debian's packages provide them (`.ci/run` installs them).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::operate::{repository_lines, with_config, write_config};
use crate::util::{is_root, skip_unless_local, stderr, Env, KilledOnDrop};

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory others may enter: a server run as `nobody` (root
/// may not run PostgreSQL) must reach its data below it.
fn open_scratch() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Where PostgreSQL's programs are: Debian's versioned directory (the
/// newest), or else the directory on the PATH that has them all.
fn postgres_bin() -> PathBuf {
    let programs = ["initdb", "pg_ctl", "postgres", "psql", "pg_restore"];
    let complete = |dir: &Path| programs.iter().all(|p| dir.join(p).is_file());
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|d| complete(d));
    versions.sort();
    versions
        .pop()
        .or_else(|| {
            std::env::var_os("PATH")
                .and_then(|paths| std::env::split_paths(&paths).find(|d| complete(d)))
        })
        .expect("PostgreSQL is not installed: apt-get install postgresql")
}

/// A PostgreSQL cluster of its own, on a free port, stopped when dropped.
struct Postgres {
    _dir: TempDir,
    /// The superuser initdb made.
    superuser: &'static str,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl Postgres {
    fn start() -> Postgres {
        Postgres::start_as("postgres")
    }

    /// A cluster whose superuser is `superuser`.
    fn start_as(superuser: &'static str) -> Postgres {
        let dir = open_scratch();
        let data = dir.path().join("data");
        let bin = postgres_bin();
        fs::create_dir(&data).unwrap();
        if is_root() {
            nix::unistd::chown(
                &data,
                Some(nix::unistd::Uid::from_raw(65534)),
                Some(nix::unistd::Gid::from_raw(65534)),
            )
            .unwrap();
        }
        let port = free_port();
        let server = Postgres {
            _dir: dir,
            superuser,
            data,
            bin,
            port,
        };
        server.as_owner(
            "initdb",
            &[
                "-D",
                server.data.to_str().unwrap(),
                "-U",
                superuser,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
        );
        let log = server.data.join("server.log");
        server.as_owner(
            "pg_ctl",
            &[
                "-D",
                server.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        server
    }

    /// Runs the server program `program` as the cluster's owner.
    fn as_owner(&self, program: &str, args: &[&str]) {
        let out = as_nobody(&self.bin.join(program))
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Runs `psql` on `database` with `sql`; returns what it printed.
    fn sql(&self, database: &str, sql: &str) -> String {
        let out = self
            .client("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                database,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A client program of this cluster's version, aimed at it.
    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            self.superuser,
        ]);
        command
    }
}

/// `program`, run as `nobody` when the tests run as root (PostgreSQL
/// refuses to run as root).
fn as_nobody(program: &Path) -> Command {
    if !is_root() {
        return Command::new(program);
    }
    let mut command = Command::new("setpriv");
    command.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ]);
    command.arg(program);
    command
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_nobody(&self.bin.join("pg_ctl"))
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The rows a test compares, from every table the fill made.
fn postgres_content(server: &Postgres, database: &str) -> String {
    [
        "select string_agg(format('%s|%s|%s', id, name, encode(payload, 'hex')), ';' order by id) from items",
        "select count(*) from items where note is null",
        "select string_agg(rolname, ',' order by rolname) from pg_roles where rolname like 'app%'",
        "select string_agg(grantee || ':' || privilege_type, ',') from information_schema.role_table_grants where table_name = 'items' and grantee like 'app%'",
    ]
    .iter()
    .map(|sql| server.sql(database, sql))
    .collect::<Vec<_>>()
    .join("\n")
}

#[test]
fn postgresql_dumps_restore_into_a_fresh_cluster_with_the_same_data() {
    if skip_unless_local("PostgreSQL dumps") {
        return;
    }
    let env = Env::new();
    env.init();
    let server = Postgres::start();
    server.sql("postgres", "create role app_reader login");
    server.sql("postgres", "create database shop");
    server.sql(
        "shop",
        "create table items(id int primary key, name text not null, payload bytea, note text); \
         insert into items select g, 'item ' || g || ' ünïcödé', sha256(g::text::bytea), \
                case when g % 3 = 0 then null else 'n' end from generate_series(1, 500) g; \
         grant select on items to app_reader;",
    );
    let before = postgres_content(&server, "shop");
    assert!(before.contains("500|item 500 ünïcödé|"), "{before}");
    assert!(before.contains("app_reader:SELECT"), "{before}");
    let config = write_config(
        &env,
        &format!(
            r#"
[profile.db]
{repo}
[[profile.db.database]]
type = "postgresql"
database = "shop"
host = "127.0.0.1"
port = {port}
user = "postgres"
[[profile.db.database]]
type = "postgresql-cluster"
host = "127.0.0.1"
port = {port}
user = "postgres"
[profile.db.verify]
paths = ["/postgresql-shop.pgdump"]
command = "{pg_restore} --list postgresql-shop.pgdump | grep -q 'TABLE DATA public items'"
"#,
            repo = repository_lines(&env),
            port = server.port,
            pg_restore = server.bin.join("pg_restore").display(),
        ),
    );
    let out = with_config(&config, &["run"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("db: verify: ok"));
    // A change after the backup is not in it.
    server.sql("shop", "delete from items where id > 10;");
    drop(server);

    let target = env.restore("latest", "t", &[]);
    // The one database, into a fresh cluster with pg_restore.
    let fresh = Postgres::start();
    fresh.sql("postgres", "create role app_reader login");
    fresh.sql("postgres", "create database shop");
    let restored = fresh
        .client("pg_restore")
        .args(["--exit-on-error", "-d", "shop"])
        .arg(target.join("postgresql-shop.pgdump"))
        .output()
        .unwrap();
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert_eq!(postgres_content(&fresh, "shop"), before);
    drop(fresh);

    // The whole cluster, roles too, into another with psql (made by
    // another superuser, as the dump creates the role postgres).
    let cluster = Postgres::start_as("loader");
    let loaded = cluster
        .client("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-f"])
        .arg(target.join("postgresql-cluster.sql"))
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", stderr(&loaded));
    assert_eq!(postgres_content(&cluster, "shop"), before);
}

/// A `redis-server` of its own on a free port, in `dir`; killed when
/// dropped.
struct Redis {
    _child: KilledOnDrop,
    port: u16,
}

impl Redis {
    fn start(dir: &Path, dump: &str) -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
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
            .args(["--dbfilename", dump])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: apt-get install redis-server");
        let redis = Redis {
            _child: KilledOnDrop(child),
            port,
        };
        let started = Instant::now();
        while redis.cli(&["ping"]).trim() != "PONG" {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "redis-server never answered"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key with its value, in one text to compare.
    fn content(&self) -> String {
        let mut keys: Vec<String> = self.cli(&["--scan"]).lines().map(str::to_string).collect();
        keys.sort();
        keys.iter()
            .map(|key| {
                let value = match self.cli(&["type", key]).trim() {
                    "string" => self.cli(&["get", key]),
                    "list" => self.cli(&["lrange", key, "0", "-1"]),
                    "hash" => {
                        let fields: Vec<String> = self
                            .cli(&["hgetall", key])
                            .lines()
                            .map(str::to_string)
                            .collect();
                        let mut pairs: Vec<String> =
                            fields.chunks(2).map(|p| p.join("=")).collect();
                        pairs.sort();
                        pairs.join(",")
                    }
                    other => panic!("unexpected type {other} of {key}"),
                };
                format!("{key}: {value}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[test]
fn a_redis_snapshot_loads_into_a_fresh_server_with_the_same_keys() {
    if skip_unless_local("Redis dumps") {
        return;
    }
    let env = Env::new();
    env.init();
    let data = tempfile::tempdir().unwrap();
    let server = Redis::start(data.path(), "dump.rdb");
    for i in 0..200 {
        server.cli(&["set", &format!("key:{i}"), &format!("value {i}")]);
    }
    server.cli(&["rpush", "queue", "first", "second", "third"]);
    server.cli(&["hset", "user:1", "name", "Ada", "lang", "en"]);
    let before = server.content();
    assert!(before.contains("key:199: value 199"));
    let config = write_config(
        &env,
        &format!(
            r#"
[profile.cache]
{repo}
[[profile.cache.database]]
type = "redis"
host = "127.0.0.1"
port = {port}
"#,
            repo = repository_lines(&env),
            port = server.port,
        ),
    );
    let out = with_config(&config, &["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    server.cli(&["flushall"]);
    drop(server);

    let target = env.restore("latest", "t", &[]);
    let fresh = Redis::start(&target, "redis-dump.rdb");
    assert_eq!(fresh.content(), before);
}

#[test]
fn sqlite_copies_and_dumps_restore_to_the_same_rows() {
    if skip_unless_local("SQLite dumps") {
        return;
    }
    let env = Env::new();
    env.init();
    let db = env.path("app.db");
    let sqlite = |db: &Path, sql: &str| {
        let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    sqlite(
        &db,
        "pragma journal_mode=wal; create table t(id integer primary key, name text); \
         with recursive n(i) as (select 1 union all select i + 1 from n where i < 1000) \
         insert into t select i, 'row ' || i from n;",
    );
    let rows = "select count(*), sum(id), group_concat(name) from t";
    let before = sqlite(&db, rows);
    let config = write_config(
        &env,
        &format!(
            r#"
[profile.app]
{repo}
[[profile.app.database]]
type = "sqlite"
path = {db:?}
[[profile.app.database]]
type = "sqlite"
path = {db:?}
format = "dump"
[profile.app.verify]
paths = ["/sqlite-app.db"]
command = "sqlite3 sqlite-app.db 'pragma integrity_check' | grep -qx ok"
"#,
            repo = repository_lines(&env),
            db = db.display().to_string(),
        ),
    );
    let out = with_config(&config, &["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    sqlite(&db, "delete from t");
    let target = env.restore("latest", "t", &[]);
    assert_eq!(sqlite(&target.join("sqlite-app.db"), rows), before);
    let loaded = env.path("loaded.db");
    let load = Command::new("sqlite3")
        .arg(&loaded)
        .stdin(fs::File::open(target.join("sqlite-app.db.sql")).unwrap())
        .status()
        .unwrap();
    assert!(load.success());
    assert_eq!(sqlite(&loaded, rows), before);
    let leftovers: Vec<_> = fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("cairn-sqlite."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A MariaDB (or MySQL) server of its own on a free port, in a scratch
/// data directory; stopped when dropped.
struct Mariadb {
    _child: KilledOnDrop,
    _dir: TempDir,
    port: u16,
}

impl Mariadb {
    fn start() -> Mariadb {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut install = Command::new("mariadb-install-db");
        install
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display()));
        if is_root() {
            install.arg("--user=root");
        }
        let out = install
            .output()
            .expect("MariaDB is not installed: apt-get install mariadb-server");
        assert!(out.status.success(), "mariadb-install-db: {}", stderr(&out));
        let port = free_port();
        let mut server = Command::new("mariadbd");
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", dir.path().join("socket").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"]);
        if is_root() {
            server.arg("--user=root");
        }
        let child = server
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mariadb = Mariadb {
            _child: KilledOnDrop(child),
            _dir: dir,
            port,
        };
        let started = Instant::now();
        while !mariadb
            .client()
            .arg("-e")
            .arg("select 1")
            .output()
            .unwrap()
            .status
            .success()
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "mariadbd never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        mariadb
    }

    fn client(&self) -> Command {
        let mut command = Command::new("mariadb");
        command.args([
            "-h",
            "127.0.0.1",
            "-P",
            &self.port.to_string(),
            "-u",
            "root",
            "-N",
            "-B",
        ]);
        command
    }

    fn sql(&self, sql: &str) -> String {
        let out = self.client().arg("-e").arg(sql).output().unwrap();
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn a_mysql_dump_loads_into_a_fresh_server_with_the_same_rows() {
    if skip_unless_local("MySQL dumps") {
        return;
    }
    let env = Env::new();
    env.init();
    let server = Mariadb::start();
    server.sql(
        "create database shop; use shop; \
         create table shop.items(id int primary key, name varchar(64), price decimal(8,2)) engine=InnoDB; \
         insert into shop.items select seq, concat('item ', seq), seq * 1.25 from seq_1_to_300; \
         create view shop.cheap as select id from shop.items where price < 10;",
    );
    let rows = "select count(*), sum(price), group_concat(name order by id) from shop.items; \
                select count(*) from shop.cheap";
    let before = server.sql(rows);
    assert!(before.starts_with("300\t56437.50\t"), "{before}");
    let config = write_config(
        &env,
        &format!(
            r#"
[profile.shop]
{repo}
[[profile.shop.database]]
type = "mysql"
database = "shop"
host = "127.0.0.1"
port = {port}
user = "root"
"#,
            repo = repository_lines(&env),
            port = server.port,
        ),
    );
    let out = with_config(&config, &["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    drop(server);

    let target = env.restore("latest", "t", &[]);
    let fresh = Mariadb::start();
    let loaded = fresh
        .client()
        .stdin(fs::File::open(target.join("mysql-shop.sql")).unwrap())
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", stderr(&loaded));
    assert_eq!(fresh.sql(rows), before);
}
