//! TLS for tests: a private CA and a server certificate made with `openssl`,
//! and a TLS-only server.

use crate::*;

/// A CA and a server certificate for 127.0.0.1, made with the `openssl` CLI.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate (PEM) clients trust.
    pub ca: PathBuf,
    /// The server certificate (PEM), signed by the CA.
    pub cert: PathBuf,
    /// The server key (PEM).
    pub key: PathBuf,
}

/// Makes a fresh CA and a server certificate under `dir`.
pub fn make_tls(dir: &Path) -> Result<TlsFiles> {
    let run = |args: &[&str]| {
        run_tool(
            Command::new("openssl").args(args).current_dir(dir),
            "apt-get install openssl",
        )
    };
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .map_err(|e| err(e.to_string()))?;
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=spool test CA",
    ])?;
    run(&[
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
    ])?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
    ])?;
    Ok(TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    })
}

impl RedisServer {
    /// Starts a server that speaks only TLS, with `files`' certificate.
    pub fn start_tls(files: &TlsFiles) -> Result<Self> {
        let s = |p: &Path| p.display().to_string();
        RedisServer::start_with(ServerOptions {
            tls: true,
            extra_args: vec![
                "--tls-cert-file".into(),
                s(&files.cert),
                "--tls-key-file".into(),
                s(&files.key),
                "--tls-ca-cert-file".into(),
                s(&files.ca),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            ..ServerOptions::default()
        })
    }
}
