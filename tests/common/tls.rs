//! TLS for the tests: a private CA and certificates made with rcgen, a redis-server listening
//! only on a TLS port, and a PostgreSQL cluster that refuses clear text over TCP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use super::{PrivatePostgres, free_port, unique, wait_until};

/// A directory of PEM files: `ca.pem` (the test CA), `server.pem`/`server.key` (signed by it,
/// for `localhost` and `127.0.0.1`), `client.pem`/`client.key` (a client certificate signed by
/// it), and `other-ca.pem` with what it signed: `other-server.pem`/`.key` (for the same names)
/// and `other-client.pem`/`.key`. Removed on drop.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(unique("ss-pki"));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let pki = Pki { dir };
        let ca = pki.ca("streamsink test CA", "ca.pem");
        pki.leaf(&ca, &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth, "server");
        pki.leaf(&ca, &[], ExtendedKeyUsagePurpose::ClientAuth, "client");
        let other = pki.ca("another CA", "other-ca.pem");
        pki.leaf(&other, &[], ExtendedKeyUsagePurpose::ClientAuth, "other-client");
        pki.leaf(&other, &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth, "other-server");
        // A cluster node is a server to clients and a client to the other nodes' buses.
        let both = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        pki.leaf_with(&ca, &["localhost", "127.0.0.1"], both, "node");
        pki
    }

    fn ca(&self, name: &str, file: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        std::fs::write(self.dir.join(file), ca.pem()).expect("write CA");
        ca
    }

    fn leaf(
        &self,
        ca: &CertifiedIssuer<'static, KeyPair>,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        stem: &str,
    ) {
        self.leaf_with(ca, names, vec![usage], stem)
    }

    fn leaf_with(
        &self,
        ca: &CertifiedIssuer<'static, KeyPair>,
        names: &[&str],
        usages: Vec<ExtendedKeyUsagePurpose>,
        stem: &str,
    ) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = usages;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, ca).expect("sign leaf");
        std::fs::write(self.dir.join(format!("{stem}.pem")), cert.pem()).expect("write cert");
        std::fs::write(self.dir.join(format!("{stem}.key")), key.serialize_pem()).expect("write key");
    }

    /// The path of one of the files, as a setting takes it.
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(file)).expect("pki file")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A connection to a rediss:// server for the test itself, trusting the test CA and showing
/// the client certificate when `client` is set.
pub fn tls_redis_at(url: &str, pki: &Pki, client: bool) -> redis::RedisResult<redis::Connection> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client_tls = client.then(|| redis::ClientTlsConfig {
        client_cert: pki.read("client.pem"),
        client_key: pki.read("client.key"),
    });
    let certificates = redis::TlsCertificates { client_tls, root_cert: Some(pki.read("ca.pem")) };
    redis::Client::build_with_tls(url, certificates)?.get_connection_with_timeout(Duration::from_secs(5))
}

/// A redis-server with its TCP port closed and a TLS port open, serving the test CA's server
/// certificate; `--tls-auth-clients yes` when `mutual` (a client must show a certificate the
/// CA signed). Killed on drop.
pub struct TlsRedis {
    pub port: u16,
    dir: PathBuf,
    child: Child,
    mutual: bool,
}

impl TlsRedis {
    pub fn start(pki: &Pki, mutual: bool) -> TlsRedis {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("ss-tls-redis"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let child = spawn_tls_redis(pki, port, &dir, mutual, "server");
        let r = TlsRedis { port, dir, child, mutual };
        r.wait_ready(pki);
        r
    }

    fn wait_ready(&self, pki: &Pki) {
        wait_until(Duration::from_secs(10), "the TLS redis-server to answer", || {
            let mut con = tls_redis_at(&self.url(), pki, self.mutual).ok()?;
            redis::cmd("PING").query::<String>(&mut con).ok()
        });
    }

    /// Restarts it on the same port serving `<stem>.pem` (`other-server` is signed by the other
    /// CA); waits for it only when that certificate is the test CA's.
    pub fn restart_serving(&mut self, pki: &Pki, stem: &str) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_tls_redis(pki, self.port, &self.dir, self.mutual, stem);
        if stem == "server" {
            self.wait_ready(pki);
        }
    }

    /// `rediss://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// A connection for the test (with the client certificate when the server asks for one).
    pub fn con(&self, pki: &Pki) -> redis::Connection {
        tls_redis_at(&self.url(), pki, self.mutual).expect("connect to the TLS redis-server")
    }
}

fn spawn_tls_redis(pki: &Pki, port: u16, dir: &Path, mutual: bool, stem: &str) -> Child {
    Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args([
            "--tls-cert-file",
            &pki.path(&format!("{stem}.pem")),
            "--tls-key-file",
            &pki.path(&format!("{stem}.key")),
        ])
        .args(["--tls-ca-cert-file", &pki.path("ca.pem")])
        .args(["--tls-auth-clients", if mutual { "yes" } else { "no" }])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/services.sh installs it)")
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private PostgreSQL cluster with `ssl = on` (the test CA's server certificate) whose
/// `pg_hba.conf` admits TCP connections over TLS only (`hostssl`; `hostnossl` is rejected), and
/// the unix socket for the test's own administration.
pub fn tls_postgres(pki: &Pki) -> PrivatePostgres {
    PrivatePostgres::start_configured(|pg| {
        let data = pg.data_dir();
        serve_certificate(pg, pki, "server");
        append(
            &data.join("postgresql.conf"),
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n\
             hostnossl all all all reject\n",
        )
        .expect("write pg_hba.conf");
    })
}

/// Puts `<stem>.pem` and `<stem>.key` in place as the cluster's server certificate (read when
/// the server starts).
pub fn serve_certificate(pg: &PrivatePostgres, pki: &Pki, stem: &str) {
    let data = pg.data_dir();
    for (from, to) in [(format!("{stem}.pem"), "server.crt"), (format!("{stem}.key"), "server.key")] {
        std::fs::copy(pki.dir.join(from), data.join(to)).expect("copy server certificate");
        PrivatePostgres::give_to_postgres(&data.join(to));
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).expect("open to append");
    f.write_all(text.as_bytes()).expect("append");
}
