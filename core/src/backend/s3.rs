//! S3-compatible object storage (SPEC.md §1), through Apache OpenDAL.
//!
//! OpenDAL brings what a store needs and cairn should not write by hand:
//! AWS SigV4 signing with the usual credential sources (environment,
//! profiles and the shared credentials file), retries with backoff on
//! transient errors, multipart uploads, paginated listings and range
//! reads. Its blocking operator runs on a small runtime of cairn's own, so
//! the rest of cairn stays synchronous; the packer's threads upload
//! concurrently.
//!
//! Objects are laid out exactly as in a directory (`config`,
//! `keys/<id>`, `data/<xx>/<id>`, …) under the location's prefix.

use std::io::{self, Read, Seek, Write};
use std::time::Duration;

use opendal::blocking;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::options::{ListOptions, WriteOptions};
use opendal::{services, Buffer, ErrorKind, HttpBody, HttpTransport, HttpTransporter, Operator};

use super::{object_name, Backend, ObjectKind, ObjectWriter};

/// Parts of an upload sent at once: a pack is sent in parts of this size
/// from its spilled file, so memory per connection stays bounded.
const PART_BYTES: usize = 5 << 20;

/// A range read reserves room for at most this much before bytes arrive:
/// its length comes from an index or a pack's size, which storage could
/// have inflated; past it the buffer grows as the bytes come.
const MAX_PREALLOCATED: u64 = 64 << 20;

/// Where an S3 repository lives: `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// Folder inside the bucket, without leading or trailing `/`; may be
    /// empty.
    pub prefix: String,
}

impl S3Location {
    /// Parses what follows `s3:`. `None` if it is not a URL with a host and
    /// a bucket.
    pub fn parse(rest: &str) -> Option<S3Location> {
        let (scheme, after) = rest.split_once("://")?;
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let (host, path) = after.split_once('/')?;
        if host.is_empty() {
            return None;
        }
        let path = path.trim_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return None;
        }
        Some(S3Location {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }
}

/// How to reach a bucket: region and credentials. What is `None` is left
/// to OpenDAL's loader, which reads `AWS_PROFILE` and the shared
/// credentials and config files as the AWS tools do.
#[derive(Clone, Default)]
pub struct S3Settings {
    /// The region requests are signed for.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// A session token, with temporary credentials.
    pub session_token: Option<String>,
}

impl S3Settings {
    /// The settings the environment gives: `AWS_REGION` (or
    /// `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`.
    pub fn from_env() -> S3Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        S3Settings {
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
        }
    }
}

/// A repository in an S3 bucket.
pub struct S3Backend {
    location: String,
    /// The bucket, for messages.
    bucket: String,
    operator: blocking::Operator,
    /// Kept for the operator's lifetime: its calls run on it.
    _runtime: tokio::runtime::Runtime,
}

impl S3Backend {
    /// Connects (lazily: nothing is sent yet) to the bucket `parsed` names.
    /// Credentials and region come from the environment and the AWS
    /// configuration files, as the AWS tools read them; the region
    /// defaults to `us-east-1`, which most non-AWS stores ignore.
    pub fn new(
        location: &str,
        parsed: &S3Location,
        settings: &S3Settings,
    ) -> io::Result<S3Backend> {
        // The HTTP client OpenDAL sends requests with (reqwest, rustls);
        // installing it twice keeps the first.
        opendal::install_default();
        let region = settings.region.as_deref().unwrap_or("us-east-1");
        let mut builder = services::S3::default()
            .endpoint(&parsed.endpoint)
            .bucket(&parsed.bucket)
            .root(&format!("/{}", parsed.prefix))
            .region(region);
        if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            builder = builder.access_key_id(id).secret_access_key(secret);
            if let Some(token) = &settings.session_token {
                builder = builder.session_token(token);
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let operator = Operator::new(builder).map_err(|e| to_io(&parsed.bucket, e))?;
        let context = operator.context().clone();
        let transport = CertificateRefusalIsFinal(context.http_transport().clone());
        let operator = operator
            .with_context(context.with_http_transport(HttpTransporter::new(transport)))
            .layer(
                RetryLayer::new()
                    .with_max_times(5)
                    .with_jitter()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(10)),
            )
            .layer(
                TimeoutLayer::new()
                    .with_timeout(Duration::from_secs(60))
                    .with_io_timeout(Duration::from_secs(60)),
            );
        let operator = {
            let _entered = runtime.enter();
            blocking::Operator::new(operator).map_err(|e| to_io(&parsed.bucket, e))?
        };
        Ok(S3Backend {
            location: location.to_string(),
            bucket: parsed.bucket.clone(),
            operator,
            _runtime: runtime,
        })
    }

    /// The key of an object: its path in the layout of SPEC.md §1.
    fn key(kind: ObjectKind, name: &str) -> String {
        object_name(kind, name)
    }
}

/// The HTTP transport, except that a TLS certificate this host does not
/// trust fails at once: OpenDAL counts every failure to send a request as
/// temporary, so without this its retry layer would spend five attempts
/// and several seconds of backoff on a refusal no retry can change.
struct CertificateRefusalIsFinal(HttpTransporter);

impl HttpTransport for CertificateRefusalIsFinal {
    async fn fetch(
        &self,
        request: http::Request<Buffer>,
    ) -> opendal::Result<http::Response<HttpBody>> {
        self.0.fetch(request).await.map_err(|error| {
            if innermost_cause(&error).contains("certificate") {
                error.set_permanent()
            } else {
                error
            }
        })
    }
}

/// An OpenDAL error as an I/O error, keeping "not found" recognisable and
/// saying plainly what refused credentials or a missing bucket mean.
fn to_io(bucket: &str, error: opendal::Error) -> io::Error {
    let text = error.to_string();
    if text.contains("NoSuchBucket") {
        // Not NotFound: that would read as a missing object.
        return io::Error::other(format!("the bucket {bucket:?} does not exist"));
    }
    let unanswered = error.kind() == ErrorKind::Unexpected && text.contains("send http request");
    // What the connection itself said; OpenDAL's message stops at "error
    // sending request".
    let cause = unanswered.then(|| innermost_cause(&error));
    if let Some(cause) = cause.as_ref().filter(|c| c.contains("certificate")) {
        // The store answered, with a certificate this host does not
        // trust: not a store that is away, and no retry will help.
        return io::Error::other(format!(
            "the store's TLS certificate is not trusted ({cause}); for a private CA, set SSL_CERT_FILE to a PEM bundle that includes it"
        ));
    }
    let kind = match error.kind() {
        ErrorKind::NotFound => io::ErrorKind::NotFound,
        ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
        ErrorKind::AlreadyExists | ErrorKind::ConditionNotMatch => io::ErrorKind::AlreadyExists,
        // No answer at all: refused, reset, timed out or no such host.
        ErrorKind::Unexpected if unanswered => io::ErrorKind::NotConnected,
        _ => io::ErrorKind::Other,
    };
    let message = match error.kind() {
        _ if text.contains("failed to load signing credential") => {
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a shared credentials file".to_string()
        }
        ErrorKind::PermissionDenied => format!(
            "access denied by the store: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the region ({})",
            error.message()
        ),
        _ => match cause {
            Some(cause) => format!("{text}: {cause}"),
            None => text,
        },
    };
    io::Error::new(kind, message)
}

/// The last error in `error`'s chain of sources.
fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn get(&self, kind: ObjectKind, name: &str) -> io::Result<Vec<u8>> {
        let bytes = self
            .operator
            .read(&S3Backend::key(kind, name))
            .map_err(|e| to_io(&self.bucket, e))?;
        Ok(bytes.to_vec())
    }

    fn get_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> io::Result<Vec<u8>> {
        let end = offset.checked_add(len).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "range beyond any object")
        })?;
        let key = S3Backend::key(kind, name);
        let beyond_end = || {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("range {offset}+{len} beyond the object's end"),
            )
        };
        // Streamed into one buffer of the final size: collecting the
        // response's chunks first and copying them out would hold the
        // range twice (a restore reads whole packs this way).
        let mut bytes = Vec::with_capacity(len.min(MAX_PREALLOCATED) as usize);
        let read = self
            .operator
            .reader(&key)
            .and_then(|reader| reader.read_into(&mut bytes, offset..end));
        match read {
            Ok(_) => {}
            // A range that starts past the end is refused (416); one that
            // ends past it comes back short, which OpenDAL reports as an
            // unexpected error: the object's length tells them apart from
            // a failing store.
            Err(e) if e.kind() == ErrorKind::RangeNotSatisfied => return Err(beyond_end()),
            Err(e) => {
                return match self.operator.stat(&key) {
                    Ok(meta) if meta.content_length() < end => Err(beyond_end()),
                    _ => Err(to_io(&self.bucket, e)),
                }
            }
        };
        if bytes.len() as u64 != len {
            return Err(beyond_end());
        }
        Ok(bytes)
    }

    fn size(&self, kind: ObjectKind, name: &str) -> io::Result<u64> {
        match self.operator.stat(&S3Backend::key(kind, name)) {
            Ok(meta) => Ok(meta.content_length()),
            // A HEAD request's 404 says nothing of why: for the config
            // (asked first of a repository), a listing tells a missing
            // bucket from a missing repository.
            Err(e) if e.kind() == ErrorKind::NotFound && kind == ObjectKind::Config => {
                let probe = ListOptions {
                    limit: Some(1),
                    ..Default::default()
                };
                // The first entry only: one request, however much is there.
                let first = self
                    .operator
                    .lister_options("", probe)
                    .and_then(|mut lister| lister.next().transpose());
                match first {
                    Err(listing) => Err(to_io(&self.bucket, listing)),
                    Ok(_) => Err(to_io(&self.bucket, e)),
                }
            }
            Err(e) => Err(to_io(&self.bucket, e)),
        }
    }

    fn put(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> io::Result<()> {
        let key = S3Backend::key(kind, name);
        if kind == ObjectKind::Config {
            // Never replace a repository's config: a conditional put where
            // the store has one, otherwise a check first (which two inits
            // at the same instant can both pass).
            if self.operator.info().capability().write_with_if_not_exists {
                let written = self.operator.write_options(
                    &key,
                    bytes.to_vec(),
                    WriteOptions {
                        if_not_exists: true,
                        ..Default::default()
                    },
                );
                return written.map(|_| ()).map_err(|e| to_io(&self.bucket, e));
            }
            if self
                .operator
                .exists(&key)
                .map_err(|e| to_io(&self.bucket, e))?
            {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "config exists",
                ));
            }
        }
        // Other names are hashes of their bytes (or random, for locks):
        // writing one again stores the same thing.
        self.operator
            .write(&key, bytes.to_vec())
            .map(|_| ())
            .map_err(|e| to_io(&self.bucket, e))
    }

    fn create_writer(&self, kind: ObjectKind) -> io::Result<Box<dyn ObjectWriter>> {
        if kind == ObjectKind::Config {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "config is only ever put whole",
            ));
        }
        Ok(Box::new(S3ObjectWriter {
            spill: tempfile::tempfile()?,
            bucket: self.bucket.clone(),
            operator: self.operator.clone(),
            kind,
        }))
    }

    fn list(&self, kind: ObjectKind) -> io::Result<Vec<String>> {
        let prefix = format!("{}/", kind.dir_name());
        let entries = self
            .operator
            .list_options(
                &prefix,
                ListOptions {
                    recursive: true,
                    ..Default::default()
                },
            )
            .map_err(|e| to_io(&self.bucket, e))?;
        let mut names: Vec<String> = entries
            .iter()
            .filter(|entry| !entry.path().ends_with('/'))
            .filter_map(|entry| entry.path().rsplit('/').next().map(str::to_string))
            .filter(|name| !name.is_empty() && !name.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> io::Result<()> {
        let key = S3Backend::key(kind, name);
        // S3 deletes whatever is there without saying: ask first, so that
        // deleting a missing object is NotFound, as on a disk.
        if !self
            .operator
            .exists(&key)
            .map_err(|e| to_io(&self.bucket, e))?
        {
            return Err(io::Error::new(io::ErrorKind::NotFound, key));
        }
        self.operator
            .delete(&key)
            .map_err(|e| to_io(&self.bucket, e))
    }

    fn create(&self) -> io::Result<()> {
        if self
            .operator
            .exists("config")
            .map_err(|e| to_io(&self.bucket, e))?
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "config exists",
            ));
        }
        let entries = self
            .operator
            .list_options(
                "",
                ListOptions {
                    recursive: true,
                    limit: Some(64),
                    ..Default::default()
                },
            )
            .map_err(|e| to_io(&self.bucket, e))?;
        let expected = |path: &str| {
            ObjectKind::FOLDERS
                .iter()
                .any(|kind| path.starts_with(&format!("{}/", kind.dir_name())))
                || path.is_empty()
                || path == "/"
        };
        if entries.iter().any(|entry| !expected(entry.path())) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                super::StrayEntries,
            ));
        }
        // A bucket has no folders to make: each object's key makes its own.
        Ok(())
    }
}

/// A pack being written: spilled to an unnamed temporary file, then sent
/// in parts once its name is known.
struct S3ObjectWriter {
    spill: std::fs::File,
    bucket: String,
    operator: blocking::Operator,
    kind: ObjectKind,
}

impl Write for S3ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.spill.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.spill.flush()
    }
}

impl ObjectWriter for S3ObjectWriter {
    fn finish(mut self: Box<Self>, name: &str) -> io::Result<()> {
        self.spill.flush()?;
        self.spill.rewind()?;
        let key = S3Backend::key(self.kind, name);
        let mut writer = self
            .operator
            .writer_options(
                &key,
                WriteOptions {
                    chunk: Some(PART_BYTES),
                    ..Default::default()
                },
            )
            .map_err(|e| to_io(&self.bucket, e))?;
        loop {
            // Each part's buffer is handed over, not copied.
            let mut part = vec![0u8; PART_BYTES];
            let read = read_full(&mut self.spill, &mut part)?;
            if read == 0 {
                break;
            }
            part.truncate(read);
            writer.write(part).map_err(|e| to_io(&self.bucket, e))?;
        }
        // Stored only once the store confirmed the whole object.
        writer
            .close()
            .map(|_| ())
            .map_err(|e| to_io(&self.bucket, e))
    }
}

/// Reads until `buf` is full or the file ends; returns how much was read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_name_an_endpoint_a_bucket_and_a_prefix() {
        assert_eq!(
            S3Location::parse("https://s3.example.com/bucket/some/prefix/"),
            Some(S3Location {
                endpoint: "https://s3.example.com".into(),
                bucket: "bucket".into(),
                prefix: "some/prefix".into(),
            })
        );
        assert_eq!(
            S3Location::parse("http://127.0.0.1:3900/b"),
            Some(S3Location {
                endpoint: "http://127.0.0.1:3900".into(),
                bucket: "b".into(),
                prefix: String::new(),
            })
        );
        for bad in [
            "s3.example.com/bucket",
            "ftp://h/b",
            "https://h",
            "https://h/",
            "https:///b",
        ] {
            assert_eq!(S3Location::parse(bad), None, "{bad}");
        }
    }
}
