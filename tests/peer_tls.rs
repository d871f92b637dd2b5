//! Peers that verify each other: a three-member cluster on `https://` peer URLs with a CA,
//! client-certificate authentication between members and a revocation list, as a
//! production etcd cluster runs. A member's peer certificate is rotated on disk and the
//! old one revoked: once its peers restart, the member reaches them only if it presents
//! the new certificate on its new connections (etcd reads the files at every handshake).
//!
//! A peer's client certificate must also name the address the peer connects from (etcd's
//! `checkCertSAN`): a certificate for 127.0.0.9 presented from 127.0.0.1 is refused, the
//! same one from 127.0.0.9 is taken, and `--experimental-peer-skip-client-san-verification`
//! takes it from anywhere. Those connections are made by the test itself (a TLS client
//! bound to the source address it needs) to a one-member cluster's peer listener.
//! Runs against cairn, or real etcd with `CAIRN_TEST_TARGET=etcd`.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
    der: Vec<u8>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "cairn test peer CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        let (pem, der) = (cert.pem(), cert.der().to_vec());
        Ca { issuer: Issuer::new(params, key), pem, der }
    }

    /// The CA certificate (DER).
    fn issuer_der(&self) -> Vec<u8> {
        self.der.clone()
    }

    /// A peer certificate for `ip` (server and client use, as etcd's peer certificates),
    /// with `serial`; (certificate PEM, key PEM). It names 127.0.0.1 too: etcd checks a peer
    /// client certificate's addresses against the connection's source, which on loopback is
    /// 127.0.0.1.
    fn peer_cert(&self, ip: &str, serial: u64) -> (String, String) {
        let (cert, key) = self.cert_for(&[ip, "127.0.0.1"], serial);
        (cert.pem(), key.serialize_pem())
    }

    /// A peer certificate naming `sans` (IP addresses or DNS names; none: no SAN at all).
    fn cert_for(&self, sans: &[&str], serial: u64) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("peer {}", sans.join(",")));
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        (params.signed_by(&key, &self.issuer).unwrap(), key)
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

/// What a member's peer listener did with a connection after the TLS handshake.
#[derive(Debug, PartialEq, Eq)]
enum Peer {
    /// It answered a request of its peer protocol: the connection is served.
    Served,
    /// It closed the connection (why, as the client saw it).
    Closed(String),
}

/// Connects to the peer listener `server` from `source`, presenting `cert` signed by `ca`,
/// and sends a request of the peer protocol of `kind`: cairn's peers speak gRPC, so an
/// HTTP/2 preface, answered with SETTINGS; etcd's speak rafthttp, so HTTP/1.1
/// `GET /version` (etcd hands HTTP/2 on its peer port to a gRPC server that expects a
/// second TLS handshake and closes). Whether the member serves the connection. With
/// TLS 1.3 the client's handshake completes before the server has looked at its
/// certificate, so a refusal shows as the connection closing.
fn dial_peer(kind: Kind, server: SocketAddr, source: IpAddr, ca: &Ca, cert: &(rcgen::Certificate, KeyPair)) -> Peer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.issuer_der())).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.1.serialize_der()));
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert.0.der().clone()], key)
        .unwrap();
    if kind == Kind::Cairn {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let tcp = socket.connect(server).await.expect("connect to the peer listener");
        let mut tls = match connector.connect(ServerName::IpAddress(server.ip().into()), tcp).await {
            Ok(tls) => tls,
            Err(e) => return Peer::Closed(format!("handshake: {e}")),
        };
        let (request, answer): (Vec<u8>, &[u8]) = match kind {
            // the client preface and an empty SETTINGS frame; the server's SETTINGS frame
            // header has type 4 in its fourth byte
            Kind::Cairn => ([&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], &[0, 0, 0, 4, 0, 0, 0, 0, 0]].concat(), &[4]),
            Kind::Etcd => (b"GET /version HTTP/1.1\r\nHost: peer\r\n\r\n".to_vec(), b"HTTP/1.1 200"),
        };
        if let Err(e) = tls.write_all(&request).await {
            return Peer::Closed(format!("write: {e}"));
        }
        let mut head = [0u8; 12];
        match tokio::time::timeout(Duration::from_secs(20), tls.read_exact(&mut head)).await {
            Ok(Ok(_)) => {
                let got = if kind == Kind::Cairn { &head[3..4] } else { &head[..] };
                assert_eq!(got, answer, "the peer listener answered {:?}", String::from_utf8_lossy(&head));
                Peer::Served
            }
            Ok(Err(e)) => Peer::Closed(format!("read: {e}")),
            Err(_) => panic!("the peer listener neither answered nor closed the connection in 20s"),
        }
    })
}

/// A one-member cluster on an `https://` peer URL with client-certificate authentication
/// (plus `extra` flags); (the member, its peer address). Its own certificate names its
/// peer address and 127.0.0.1.
fn one_member(kind: Kind, ca: &Ca, dir: &Path, extra: &[&str]) -> (RawServer, SocketAddr) {
    let (client, peer) = (free_addr(), free_addr());
    replace(&dir.join("ca.pem"), &ca.pem);
    let (cert, key) = ca.peer_cert(&peer.ip().to_string(), 1);
    replace(&dir.join("m-cert.pem"), &cert);
    replace(&dir.join("m-key.pem"), &key);
    let file = |name: &str| dir.join(name).display().to_string();
    let mut args = vec![
        "--name=m".to_owned(),
        format!("--data-dir={}", file("m")),
        format!("--listen-client-urls=http://{client}"),
        format!("--advertise-client-urls=http://{client}"),
        format!("--listen-peer-urls=https://{peer}"),
        format!("--initial-advertise-peer-urls=https://{peer}"),
        format!("--initial-cluster=m=https://{peer}"),
        format!("--peer-cert-file={}", file("m-cert.pem")),
        format!("--peer-key-file={}", file("m-key.pem")),
        format!("--peer-trusted-ca-file={}", file("ca.pem")),
        "--peer-client-cert-auth".to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let mut member = RawServer::spawn(kind, &args);
    member.wait_ready();
    (member, peer)
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const NINE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));

#[test]
fn a_peer_certificate_must_name_the_address_the_peer_connects_from() {
    let ca = Ca::new();
    let tmp = tempfile::tempdir().unwrap();
    let kind = target_kind();
    let (member, peer) = one_member(kind, &ca, tmp.path(), &[]);
    let for_nine = ca.cert_for(&["127.0.0.9"], 10);

    let refused = dial_peer(kind, peer, LOCAL, &ca, &for_nine);
    assert!(matches!(refused, Peer::Closed(_)), "a certificate for 127.0.0.9 from 127.0.0.1: {refused:?}\n{}", member.log());
    wait_for("the member to log the refusal", Duration::from_secs(10), || member.log().contains("rejected connection").then_some(()));
    // the same certificate from the address it names, a DNS name that resolves to the
    // source (localhost, from /etc/hosts) and a certificate naming nothing are served
    assert_eq!(dial_peer(kind, peer, NINE, &ca, &for_nine), Peer::Served, "{}", member.log());
    assert_eq!(dial_peer(kind, peer, LOCAL, &ca, &ca.cert_for(&["localhost"], 11)), Peer::Served, "{}", member.log());
    assert_eq!(dial_peer(kind, peer, LOCAL, &ca, &ca.cert_for(&[], 12)), Peer::Served, "{}", member.log());
}

#[test]
fn the_skip_flag_lets_a_peer_in_from_any_address() {
    let ca = Ca::new();
    let tmp = tempfile::tempdir().unwrap();
    let kind = target_kind();
    let (member, peer) = one_member(kind, &ca, tmp.path(), &["--experimental-peer-skip-client-san-verification"]);
    let for_nine = ca.cert_for(&["127.0.0.9"], 10);
    assert_eq!(dial_peer(kind, peer, LOCAL, &ca, &for_nine), Peer::Served, "{}", member.log());
    // a certificate the CA did not sign is still refused: only the address check is skipped
    let stranger = Ca::new().cert_for(&["127.0.0.1"], 13);
    assert!(matches!(dial_peer(kind, peer, LOCAL, &ca, &stranger), Peer::Closed(_)), "{}", member.log());
}
