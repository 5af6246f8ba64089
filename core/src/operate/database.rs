//! Database dumps of a profile: each a ready command for a database
//! server's own dump tool, whose output becomes a file of the snapshot
//! (through `backup --command`).

use std::path::PathBuf;

use serde::Deserialize;

/// The kinds of database a profile can dump.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseKind {
    /// One PostgreSQL database, with `pg_dump`.
    Postgresql,
    /// A whole PostgreSQL cluster (roles too), with `pg_dumpall`.
    PostgresqlCluster,
    /// A MySQL or MariaDB database (or all), `mysqldump --single-transaction`.
    Mysql,
    /// An SQLite file, copied with `.backup` (or written out with `.dump`).
    Sqlite,
    /// A Redis server's RDB snapshot, with `redis-cli --rdb -`.
    Redis,
}

/// How a dump is written, where the tool offers a choice.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DumpFormat {
    /// PostgreSQL's custom archive (`pg_restore` reads it): the default.
    Custom,
    /// SQL text.
    Plain,
    /// SQLite: a consistent copy of the database file: the default.
    Backup,
    /// SQLite: SQL text, with `.dump`.
    Dump,
}

/// One database to dump.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    try_from = "RawDatabase"
)]
pub struct Database {
    /// What kind of server or file.
    pub kind: DatabaseKind,
    /// The database's name (PostgreSQL: required; MySQL: none for all).
    pub database: Option<String>,
    /// The SQLite file.
    pub path: Option<PathBuf>,
    /// The server's host (or socket directory).
    pub host: Option<String>,
    /// The server's port.
    pub port: Option<u16>,
    /// The user to connect as.
    pub user: Option<String>,
    /// How the dump is written.
    pub format: Option<DumpFormat>,
    /// The dump's file name in the snapshot, instead of the default.
    pub name: Option<String>,
    /// More arguments for the dump tool.
    pub options: Vec<String>,
}

/// A database entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDatabase {
    #[serde(rename = "type")]
    kind: DatabaseKind,
    database: Option<String>,
    path: Option<PathBuf>,
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    format: Option<DumpFormat>,
    name: Option<String>,
    #[serde(default)]
    options: Vec<String>,
}

impl TryFrom<RawDatabase> for Database {
    type Error = String;

    fn try_from(raw: RawDatabase) -> Result<Self, String> {
        use DatabaseKind::*;
        let kind = raw.kind;
        let what = kind.label();
        match kind {
            Postgresql if raw.database.is_none() => {
                return Err(format!(
                    "a {what} dump needs `database` (or use type = \"postgresql-cluster\")"
                ))
            }
            Sqlite if raw.path.is_none() => return Err(format!("a {what} dump needs `path`")),
            PostgresqlCluster | Redis | Sqlite if raw.database.is_some() => {
                return Err(format!("a {what} dump takes no `database`"))
            }
            _ => {}
        }
        if kind != Sqlite && raw.path.is_some() {
            return Err(format!("a {what} dump takes no `path`"));
        }
        if kind == Sqlite && (raw.host.is_some() || raw.port.is_some() || raw.user.is_some()) {
            return Err(format!("a {what} file has no `host`, `port` or `user`"));
        }
        let formats: &[DumpFormat] = match kind {
            Postgresql => &[DumpFormat::Custom, DumpFormat::Plain],
            Sqlite => &[DumpFormat::Backup, DumpFormat::Dump],
            _ => &[],
        };
        if let Some(format) = raw.format {
            if !formats.contains(&format) {
                return Err(format!("a {what} dump cannot be written as {format:?}"));
            }
        }
        Ok(Database {
            kind,
            database: raw.database,
            path: raw.path,
            host: raw.host,
            port: raw.port,
            user: raw.user,
            format: raw.format,
            name: raw.name,
            options: raw.options,
        })
    }
}

impl DatabaseKind {
    fn label(self) -> &'static str {
        match self {
            DatabaseKind::Postgresql => "postgresql",
            DatabaseKind::PostgresqlCluster => "postgresql-cluster",
            DatabaseKind::Mysql => "mysql",
            DatabaseKind::Sqlite => "sqlite",
            DatabaseKind::Redis => "redis",
        }
    }
}

impl Database {
    /// The dump's file name in the snapshot: `name`, or by default
    /// `postgresql-DB.pgdump`, `postgresql-cluster.sql`, `mysql-DB.sql`,
    /// `sqlite-FILE`, `redis-dump.rdb` (at the snapshot's root).
    pub fn file_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let database = self.database.as_deref().unwrap_or("all");
        match self.kind {
            DatabaseKind::Postgresql if self.format == Some(DumpFormat::Plain) => {
                format!("postgresql-{database}.sql")
            }
            DatabaseKind::Postgresql => format!("postgresql-{database}.pgdump"),
            DatabaseKind::PostgresqlCluster => "postgresql-cluster.sql".into(),
            DatabaseKind::Mysql => format!("mysql-{database}.sql"),
            DatabaseKind::Sqlite => {
                let file = self
                    .path
                    .as_ref()
                    .and_then(|p| p.file_name())
                    .map_or("database".into(), |f| f.to_string_lossy().into_owned());
                if self.format == Some(DumpFormat::Dump) {
                    format!("sqlite-{file}.sql")
                } else {
                    format!("sqlite-{file}")
                }
            }
            DatabaseKind::Redis => "redis-dump.rdb".into(),
        }
    }

    /// The command that writes the dump to standard output.
    pub fn command(&self) -> Vec<String> {
        let mut argv: Vec<String> = Vec::new();
        fn push(argv: &mut Vec<String>, words: &[&str]) {
            argv.extend(words.iter().map(|w| w.to_string()));
        }
        match self.kind {
            DatabaseKind::Postgresql | DatabaseKind::PostgresqlCluster => {
                if self.kind == DatabaseKind::Postgresql {
                    push(&mut argv, &["pg_dump"]);
                    if self.format != Some(DumpFormat::Plain) {
                        push(&mut argv, &["--format=custom"]);
                    }
                } else {
                    push(&mut argv, &["pg_dumpall"]);
                }
                self.connection(&mut argv, "--host", "--port", "--username");
            }
            DatabaseKind::Mysql => {
                push(
                    &mut argv,
                    &[
                        "mysqldump",
                        "--single-transaction",
                        "--routines",
                        "--events",
                        "--triggers",
                    ],
                );
                self.connection(&mut argv, "--host", "--port", "--user");
            }
            DatabaseKind::Sqlite => {
                let path = self
                    .path
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if self.format == Some(DumpFormat::Dump) {
                    argv.extend(["sqlite3".into(), "-readonly".into(), path, ".dump".into()]);
                } else {
                    // `.backup` writes a consistent copy only to a file: to a
                    // temporary one, then out, and the copy is removed.
                    argv.extend([
                        "sh".into(),
                        "-c".into(),
                        SQLITE_BACKUP.into(),
                        "sqlite-backup".into(),
                        path,
                    ]);
                }
            }
            DatabaseKind::Redis => {
                push(&mut argv, &["redis-cli"]);
                self.connection(&mut argv, "-h", "-p", "--user");
                push(&mut argv, &["--rdb", "-"]);
            }
        }
        argv.extend(self.options.iter().cloned());
        if let Some(database) = &self.database {
            match self.kind {
                DatabaseKind::Mysql => argv.extend(["--databases".into(), database.clone()]),
                _ => argv.push(database.clone()),
            }
        } else if self.kind == DatabaseKind::Mysql {
            argv.push("--all-databases".into());
        }
        argv
    }

    fn connection(&self, argv: &mut Vec<String>, host: &str, port: &str, user: &str) {
        if let Some(value) = &self.host {
            argv.extend([host.to_string(), value.clone()]);
        }
        if let Some(value) = self.port {
            argv.extend([port.to_string(), value.to_string()]);
        }
        if let Some(value) = &self.user {
            argv.extend([user.to_string(), value.clone()]);
        }
    }
}

/// The shell script behind an SQLite `.backup`: `$1` is the database.
const SQLITE_BACKUP: &str = r#"set -e
copy=$(mktemp "${TMPDIR:-/tmp}/cairn-sqlite.XXXXXX")
trap 'rm -f "$copy"' EXIT
sqlite3 -readonly "$1" ".backup '$copy'"
cat "$copy""#;

#[cfg(test)]
mod tests {
    use super::*;

    fn database(toml_text: &str) -> Result<Database, String> {
        toml::from_str::<Database>(toml_text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn each_kind_runs_its_own_tool() {
        let pg = database("type = \"postgresql\"\ndatabase = \"app\"\nport = 5433").unwrap();
        assert_eq!(
            pg.command(),
            ["pg_dump", "--format=custom", "--port", "5433", "app"]
        );
        assert_eq!(pg.file_name(), "postgresql-app.pgdump");
        let cluster = database("type = \"postgresql-cluster\"\nuser = \"postgres\"").unwrap();
        assert_eq!(cluster.command(), ["pg_dumpall", "--username", "postgres"]);
        let mysql = database("type = \"mysql\"").unwrap();
        assert_eq!(mysql.command().last().unwrap(), "--all-databases");
        assert!(mysql
            .command()
            .contains(&"--single-transaction".to_string()));
        let redis = database("type = \"redis\"\nport = 6380").unwrap();
        assert_eq!(redis.command(), ["redis-cli", "-p", "6380", "--rdb", "-"]);
        let sqlite =
            database("type = \"sqlite\"\npath = \"/var/a.db\"\nformat = \"dump\"").unwrap();
        assert_eq!(
            sqlite.command(),
            ["sqlite3", "-readonly", "/var/a.db", ".dump"]
        );
        assert_eq!(sqlite.file_name(), "sqlite-a.db.sql");
    }

    #[test]
    fn entries_that_cannot_dump_are_refused() {
        assert!(database("type = \"postgresql\"")
            .unwrap_err()
            .contains("needs `database`"));
        assert!(database("type = \"sqlite\"")
            .unwrap_err()
            .contains("needs `path`"));
        assert!(database("type = \"redis\"\nformat = \"plain\"")
            .unwrap_err()
            .contains("cannot be written"));
        assert!(database("type = \"oracle\"").is_err());
    }
}
