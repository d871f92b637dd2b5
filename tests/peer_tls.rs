//! Peers that verify each other: a three-member cluster on `https://` peer URLs with a CA,
//! client-certificate authentication between members and a revocation list, as a
//! production etcd cluster runs. A member's peer certificate is rotated on disk and the
//! old one revoked: once its peers restart, the member reaches them only if it presents
//! the new certificate on its new connections (etcd reads the files at every handshake).
//! Runs against cairn, or real etcd with `CAIRN_TEST_TARGET=etcd`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{etcdctl_command, free_addr, target_kind, wait_for, Kind, RawServer};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SerialNumber,
};

/// A CA that signs the members' peer certificates and the revocation list.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "cairn test peer CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { issuer: Issuer::new(params, key), pem }
    }

    /// A peer certificate for `ip` (server and client use, as etcd's peer certificates),
    /// with `serial`; (certificate PEM, key PEM). It names 127.0.0.1 too: etcd checks a peer
    /// client certificate's addresses against the connection's source, which on loopback is
    /// 127.0.0.1.
    fn peer_cert(&self, ip: &str, serial: u64) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![ip.to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("peer {ip}"));
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        (params.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }

    /// A revocation list naming `serials`.
    fn crl(&self, serials: &[u64]) -> String {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2999, 1, 1),
            crl_number: SerialNumber::from(serials.len() as u64 + 1),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }
}

/// Writes `contents` to `path` as tools replace files: aside, then renamed over.
fn replace(path: &Path, contents: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn etcdctl(endpoint: &str, args: &[&str]) -> Result<String, String> {
    let out = etcdctl_command(endpoint, args).arg("--command-timeout=3s").output().expect("run etcdctl");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() { Ok(text(&out.stdout)) } else { Err(text(&out.stderr)) }
}

struct Cluster {
    kind: Kind,
    dir: PathBuf,
    clients: Vec<SocketAddr>,
    args: Vec<Vec<String>>,
    members: Vec<Option<RawServer>>,
}

impl Cluster {
    /// Three members with verified peer TLS; member `i`'s files are `dir/m{i}-*.pem`.
    fn start(kind: Kind, ca: &Ca, dir: &Path) -> Cluster {
        let clients: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        let peers: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        replace(&dir.join("ca.pem"), &ca.pem);
        replace(&dir.join("crl.pem"), &ca.crl(&[]));
        let initial: Vec<String> = (0..3).map(|i| format!("m{i}=https://{}", peers[i])).collect();
        let args: Vec<Vec<String>> = (0..3)
            .map(|i| {
                let (cert, key) = ca.peer_cert(&peers[i].ip().to_string(), 100 + i as u64);
                replace(&dir.join(format!("m{i}-cert.pem")), &cert);
                replace(&dir.join(format!("m{i}-key.pem")), &key);
                let client = format!("http://{}", clients[i]);
                let file = |name: &str| dir.join(name).display().to_string();
                vec![
                    format!("--name=m{i}"),
                    format!("--data-dir={}", file(&format!("m{i}"))),
                    format!("--listen-client-urls={client}"),
                    format!("--advertise-client-urls={client}"),
                    format!("--listen-peer-urls=https://{}", peers[i]),
                    format!("--initial-advertise-peer-urls=https://{}", peers[i]),
                    format!("--initial-cluster={}", initial.join(",")),
                    "--initial-cluster-token=peer-tls".to_owned(),
                    format!("--peer-cert-file={}", file(&format!("m{i}-cert.pem"))),
                    format!("--peer-key-file={}", file(&format!("m{i}-key.pem"))),
                    format!("--peer-trusted-ca-file={}", file("ca.pem")),
                    "--peer-client-cert-auth".to_owned(),
                    format!("--peer-crl-file={}", file("crl.pem")),
                ]
            })
            .collect();
        let mut members: Vec<Option<RawServer>> = args.iter().map(|a| Some(RawServer::spawn(kind, a))).collect();
        for m in members.iter_mut().flatten() {
            m.wait_ready();
        }
        Cluster { kind, dir: dir.to_owned(), clients, args, members }
    }

    fn endpoint(&self, i: usize) -> String {
        format!("http://{}", self.clients[i])
    }

    /// SIGKILLs member `i` and starts it again on its data.
    fn restart(&mut self, i: usize) {
        drop(self.members[i].take());
        let mut m = RawServer::spawn(self.kind, &self.args[i]);
        m.wait_ready();
        self.members[i] = Some(m);
    }

    fn logs(&self) -> String {
        self.members.iter().flatten().map(RawServer::log).collect::<Vec<_>>().join("\n----\n")
    }
}

#[test]
fn a_rotated_peer_certificate_is_presented_on_new_connections() {
    let ca = Ca::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(target_kind(), &ca, tmp.path());
    etcdctl(&c.endpoint(0), &["put", "/peer-tls/k", "v1"]).expect("put");
    let got = etcdctl(&c.endpoint(2), &["get", "/peer-tls/k", "--print-value-only"]).expect("get through another member");
    assert_eq!(got.trim(), "v1");

    // member 0's certificate (serial 100) is replaced on disk by one with serial 200, and
    // 100 is revoked
    let peer0 = c.args[0].iter().find_map(|a| a.strip_prefix("--listen-peer-urls=https://")).unwrap().to_owned();
    let ip0 = peer0.rsplit_once(':').unwrap().0.to_owned();
    let (cert, key) = ca.peer_cert(&ip0, 200);
    replace(&c.dir.join("m0-key.pem"), &key);
    replace(&c.dir.join("m0-cert.pem"), &cert);
    replace(&c.dir.join("crl.pem"), &ca.crl(&[100]));
    // the peers restart: member 0 must dial them again, and they refuse certificate 100 now
    // (member 0 looks at its files at most once a second: a handshake in between may still
    // present the old one and be refused, and its next attempt succeeds)
    c.restart(1);
    c.restart(2);

    // member 0 takes part: a write through it and a linearizable read through it (both
    // need its own connections to the leader, or the leader is member 0 itself and needs
    // its followers' answers over theirs to it)
    let ep0 = c.endpoint(0);
    wait_for("a write through member 0 after the rotation", Duration::from_secs(30), || {
        etcdctl(&ep0, &["put", "/peer-tls/k", "v2"]).ok()
    });
    let read = wait_for("a linearizable read through member 0", Duration::from_secs(30), || {
        etcdctl(&ep0, &["get", "/peer-tls/k", "--print-value-only"]).ok()
    });
    assert_eq!(read.trim(), "v2", "{}", c.logs());
    let status = etcdctl(&c.endpoint(1), &["endpoint", "status", "--cluster", "-w", "json"]).expect("status of every member");
    assert_eq!(status.matches("\"leader\"").count(), 3, "all three members answer: {status}");
}
