//! Secrets never logged: three nodes at `RUST_LOG=trace`, presignature pool
//! on, run aux info and keygen, sign once from the pool and once by the full
//! protocol. Then every secret each node holds is read back from its sealed
//! store, opened with the node's own passphrase by the project's store code,
//! and searched for in every node's log.
//!
//! Secrets searched, per node:
//! - the store passphrase (its text, and the 24 random bytes it is the hex of);
//! - the storage key: Argon2id of the passphrase, derived here from the
//!   store's KDF record independently of tss-core (which never exposes it)
//!   and checked by opening the store's sealed check record with it;
//! - the Ed25519 identity secret key; the TLS private key (its P-256 scalar);
//! - the key share's secret scalar x_i;
//! - the Paillier primes p, q of the aux info, with phi(N) and
//!   lambda = lcm(p-1, q-1) (either one decrypts);
//! - all four primes of each prime set the node was given (the TEST-ONLY
//!   fixtures) or still holds;
//! - the secrets of every presignature (k̃_i, χ̃_i), read after the pools
//!   filled and again at the end, so the one consumed by the pool signature
//!   is included (checked against the node's `presignature_used` log).
//!
//! Scalars and big integers are searched big- and little-endian.
//!
//! How a log is searched ([`Detector`]): as raw bytes, and after decoding
//! every run of hex digits (any case, both nibble alignments), of base64
//! (standard or URL-safe, all four alignments), of decimal digits (the
//! `Debug`/`Display` of a big integer), of comma-separated small integers
//! (`Debug` of a byte array or slice, `[12, 34, ..]`, also `0x0c` and
//! pretty-printed), and of Rust byte-string escapes (`b"\x0c.."`). A secret
//! counts as found if any 8-byte window of it appears in one of these byte
//! streams (16 bytes for the passphrase text, whose characters are hex
//! digits: 64 bits either way). Windows catch a partial print (a prefix, a
//! struct field of a larger record). The secrets are random, so a window
//! matches a given position by chance with probability 2^-64: for about
//! 10^4 windows and 4·10^8 positions (100 MB of trace logs, decoded several
//! ways) a false alarm has a chance below 10^-6.
//!
//! The test proves its detector before trusting it: it plants each kind of
//! secret in each encoding into a copy of a real log and requires the
//! detector to report it; it also requires the logs to hold trace lines.
//!
//! Not covered: values that are never stored cannot be read back (nonces
//! of a full-protocol signing, DKG shares in flight, a presignature made
//! and used between the two reads, which the test prevents by signing once
//! from the pool); stdout (the harness discards it; the daemon logs to
//! stderr).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use cggmp24::backend::Integer;
use cggmp24::generic_ec::{Scalar, SecretScalar};
use proto::v1 as pb;
use sha2::Digest;
use tss_core::ecdsa::{self, Curve};
use tss_core::store::{RecordKind, Store};
use tss_node::config::NodeConfig;

use crate::harness::{self, assert_valid, sign_request, sign_sha256_ok, step, Cluster};

const KEY: &str = "secrets-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs__should_hold_no_secret_after_keygen_and_sign_at_trace_level() {
    let t0 = Instant::now();
    // Given three nodes with the presignature pool on (1 per key and pair) and
    // a policy that lets the gateway sign raw digests (full protocol)
    let mut cluster = Cluster::start_with(|_, cfg| {
        cfg.presign.target = 1;
        cfg.presign.parallel = 1;
        // Other tests' clusters share the CPU; at idle priority they could
        // keep this pool empty for minutes.
        cfg.presign.idle_priority = false;
        let policy = cfg.policy.as_ref().expect("demo clusters have a policy");
        std::fs::write(policy, tss_node::cluster::demo_policy(&["gateway"])).expect("write policy");
    })
    .await;
    // ... restarted at trace level (the harness applies the environment at
    // a node's next start), before any secret is made
    for i in 0..3 {
        cluster.kill(i);
        cluster.set_env(i, "RUST_LOG", "trace");
        cluster.spawn(i);
    }
    for i in 0..3 {
        cluster.wait_healthy(i).await;
    }
    step(t0, "three nodes at RUST_LOG=trace");

    // When a key is generated (aux info first) and the pools fill
    let key = cluster.keygen(0, KEY).await;
    step(t0, "keygen done; waiting for pools");
    let names = tss_node::cluster::NAMES;
    for i in 0..3 {
        let pairs: Vec<[&str; 2]> = (0..3)
            .filter(|&j| j != i)
            .map(|j| [names[i], names[j]])
            .collect();
        harness::wait_pool(&cluster, i, KEY, &pairs, 1).await;
    }
    step(t0, "pools ready");
    // (the presignatures now in the stores include the one signed with next)
    let mut secrets = Secrets::default();
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        secrets.read_node(&cluster, i, false);
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    for i in 0..3 {
        cluster.wait_healthy(i).await;
    }
    step(t0, "presignatures read; nodes back");

    // ... and the cluster signs once from a presignature and once by the
    // full protocol
    let before = counters(&cluster, 0).await;
    let mut c = cluster.client(0, "gateway").await;
    sign_sha256_ok(&mut c, &key.public_key, KEY, b"secrets: pool path").await;
    let after = counters(&cluster, 0).await;
    assert_eq!(
        after.pool_signs,
        before.pool_signs + 1,
        "the first signature comes from the pool"
    );
    let before = counters(&cluster, 1).await;
    let digest: [u8; 32] = sha2::Sha256::digest(b"secrets: full protocol").into();
    let mut c = cluster.client(1, "gateway").await;
    let r = c
        .sign(pb::SignRequest {
            hash: pb::HashAlgorithm::None as i32,
            ..sign_request(KEY, &digest)
        })
        .await
        .expect("raw digest sign")
        .into_inner();
    assert_valid(&key.public_key, &digest, &r);
    let after = counters(&cluster, 1).await;
    assert_eq!(
        after.full_signs,
        before.full_signs + 1,
        "a raw digest is signed by the full protocol"
    );
    step(t0, "signed from the pool and by the full protocol");
    cluster.assert_no_panics();
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        secrets.read_node(&cluster, i, true);
    }
    secrets.check_consumed_presignatures_read();
    step(t0, &secrets.summary());

    // Then the detector finds every planted secret in every encoding ...
    let logs: Vec<Vec<u8>> = (0..3)
        .map(|i| std::fs::read(cluster.log_path(i)).expect("read log"))
        .collect();
    // To look at the logs after a failure (the cluster's folder is removed).
    if let Ok(dir) = std::env::var("SECRETS_KEEP_LOGS") {
        for i in 0..3 {
            std::fs::copy(cluster.log_path(i), format!("{dir}/node{i}.log")).unwrap();
        }
    }
    for (i, log) in logs.iter().enumerate() {
        // (the level is colored: "\x1b[35mTRACE\x1b[0m")
        let traces = count(log, b"TRACE");
        assert!(
            traces > 100,
            "node {i}: {traces} trace lines; RUST_LOG=trace did not take effect"
        );
    }
    let detector = Detector::new(&secrets.list);
    let mb = logs.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    let t_scan = Instant::now();
    let found: Vec<(usize, Finding)> = logs
        .iter()
        .enumerate()
        .flat_map(|(i, log)| detector.scan(log).into_iter().map(move |f| (i, f)))
        .collect();
    step(
        t0,
        &format!(
            "searched {mb:.1} MB of logs in {:.1} s",
            t_scan.elapsed().as_secs_f64()
        ),
    );
    let report: Vec<String> = found
        .iter()
        .take(20)
        .map(|(i, f)| {
            let s = &secrets.list[f.secret];
            format!(
                "node {i}'s log at byte {}: {} of node {} as {}: {:?}",
                f.at,
                s.what,
                s.owner,
                f.encoding,
                context(&logs[*i], f.at)
            )
        })
        .collect();
    self_check(&detector, &secrets, &logs[0]);
    step(t0, "detector self-check passed");

    // ... and no secret in any log
    assert!(
        found.is_empty(),
        "{} secret(s) found in the logs:\n{}",
        found.len(),
        report.join("\n")
    );
    step(t0, "no secret in any log");
}

/// Pool counters of node `i` (Health).
async fn counters(c: &Cluster, i: usize) -> pb::PoolCounters {
    c.health(i).await.presign.expect("pool counters")
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Up to 80 characters of the log around `at`.
fn context(log: &[u8], at: usize) -> String {
    let start = at.saturating_sub(30);
    let end = (at + 50).min(log.len());
    String::from_utf8_lossy(&log[start..end]).into_owned()
}

// ------------------------------------------------------------------ secrets

/// One secret: its bytes, where it came from, and the window searched.
struct Secret {
    owner: usize,
    what: String,
    bytes: Vec<u8>,
    /// Length of the windows searched (see the module docs).
    window: usize,
    /// How to print it in the self-check (a big integer also in decimal).
    decimal: Option<String>,
}

#[derive(Default)]
struct Secrets {
    list: Vec<Secret>,
    seen: HashSet<Vec<u8>>,
    /// Presignature ids read from the stores (hex).
    presignature_ids: HashSet<String>,
    /// Presignature ids consumed, per the nodes' logs of use (hex).
    consumed: HashSet<String>,
    kinds: HashMap<String, usize>,
}

/// Presignature record: the secret part as cggmp24 serializes it (the
/// record's other fields, public, are skipped). Mirrors
/// `tss_core::ecdsa::presign::StoredPresignature::encode`, which is checked
/// first with the project's own decoder.
#[derive(serde::Deserialize)]
struct PresignatureSecrets {
    v: u8,
    presig: cggmp24::signing::Presignature<Curve>,
}

impl Secrets {
    fn add(&mut self, owner: usize, what: &str, bytes: Vec<u8>, window: usize) {
        assert!(
            bytes.len() >= window,
            "{what} of node {owner} is shorter than its window"
        );
        if self.seen.insert(bytes.clone()) {
            *self.kinds.entry(what.to_owned()).or_default() += 1;
            self.list.push(Secret {
                owner,
                what: what.to_owned(),
                bytes,
                window,
                decimal: None,
            });
        }
    }

    /// A scalar, big- and little-endian.
    fn scalar(&mut self, owner: usize, what: &str, s: &SecretScalar<Curve>) {
        let s: &Scalar<Curve> = s.as_ref();
        let be = s.to_be_bytes().as_bytes().to_vec();
        let mut le = be.clone();
        le.reverse();
        self.add(owner, what, be, 8);
        self.add(owner, &format!("{what} (little-endian)"), le, 8);
    }

    /// A big integer, big- and little-endian (and its decimal form for the
    /// self-check).
    fn integer(&mut self, owner: usize, what: &str, n: &Integer) {
        let before = self.list.len();
        self.add(owner, what, n.to_bytes_msf(), 8);
        if self.list.len() > before {
            self.list.last_mut().expect("just pushed").decimal = Some(n.to_str_radix(10));
        }
        self.add(
            owner,
            &format!("{what} (little-endian)"),
            n.to_bytes_lsf(),
            8,
        );
    }

    /// Paillier primes with phi(N) and lambda.
    fn paillier(&mut self, owner: usize, what: &str, p: &Integer, q: &Integer) {
        self.integer(owner, &format!("{what} p"), p);
        self.integer(owner, &format!("{what} q"), q);
        let p1 = p - &Integer::one();
        let q1 = q - &Integer::one();
        self.integer(owner, &format!("{what} phi(N)"), &(&p1 * &q1));
        self.integer(owner, &format!("{what} lambda"), &p1.lcm_ref(&q1));
    }

    /// Reads node `i`'s secrets (node stopped). `last`: also derive the
    /// storage key and read which presignatures were consumed.
    fn read_node(&mut self, c: &Cluster, i: usize, last: bool) {
        let cfg = NodeConfig::load(&c.dirs.parties[i].join("node.toml")).expect("config");
        let pass = cfg.passphrase().expect("passphrase");
        let text = pass.expose().to_vec();
        self.add(i, "store passphrase (text)", text.clone(), 16);
        if let Ok(raw) = hex::decode(&text) {
            self.add(i, "store passphrase (bytes it is the hex of)", raw, 8);
        }
        if last {
            let key = storage_key(&cfg.store_dir, &text);
            self.add(i, "storage key", key.to_vec(), 8);
        }
        let store = Store::open(&cfg.store_dir, &pass).expect("open store");
        let get = |kind, key: &[u8]| {
            store
                .get(kind, key)
                .expect("read store")
                .unwrap_or_else(|| {
                    panic!(
                        "node {i}: no {kind} record {:?}",
                        String::from_utf8_lossy(key)
                    )
                })
        };

        let id = get(RecordKind::NodeSecret, tss_node::testing::IDENTITY_KEY);
        self.add(i, "identity secret key", id.expose().to_vec(), 8);
        let tls = get(RecordKind::NodeSecret, tss_node::testing::TLS_KEY);
        self.add(i, "TLS private key", p256_scalar(tls.expose()), 8);

        for k in store.keys(RecordKind::AuxInfo).expect("aux keys") {
            let a = keygen::record::AuxRecord::decode(get(RecordKind::AuxInfo, &k).expose())
                .expect("decode aux info");
            self.paillier(i, "aux info's Paillier", &a.aux.p, &a.aux.q);
        }
        let share = ecdsa::decode_share(get(RecordKind::KeyShare, KEY.as_bytes()).expose())
            .expect("decode share");
        let x: &SecretScalar<Curve> = share.core.x.as_ref();
        self.scalar(i, "key share x_i", x);
        self.paillier(i, "key share's Paillier", &share.aux.p, &share.aux.q);

        for k in store.keys(RecordKind::Primes).expect("prime keys") {
            let p = tss_core::primes::decode(get(RecordKind::Primes, &k).expose())
                .expect("decode primes");
            for (n, p) in p.primes_ref().iter().enumerate() {
                self.integer(i, &format!("stored prime #{n}"), p);
            }
        }
        for k in store
            .keys(RecordKind::Presignature)
            .expect("presignature keys")
        {
            let b = get(RecordKind::Presignature, &k);
            ecdsa::presign::StoredPresignature::decode(b.expose()).expect("decode presignature");
            let s: PresignatureSecrets =
                ciborium::from_reader(b.expose()).expect("presignature secrets");
            assert_eq!(s.v, ecdsa::presign::PRESIGNATURE_FORMAT_VERSION);
            self.scalar(i, "presignature k~_i", &s.presig.tilde_k);
            self.scalar(i, "presignature chi~_i", &s.presig.tilde_chi);
            // key_id 0x00 s0 s1 id (tss_node::testing::presignature)
            self.presignature_ids
                .insert(hex::encode(&k[k.len() - 32..]));
        }
        // Prime sets the demo cluster preloaded (party i got set i).
        let fixtures = tss_core::primes::fixtures_from_text(tss_node::cluster::FIXTURE_PRIMES)
            .expect("fixture primes");
        for (n, p) in fixtures[i].primes_ref().iter().enumerate() {
            self.integer(i, &format!("preloaded prime #{n}"), p);
        }
        if last {
            for u in tss_node::testing::used_records(&store).expect("used presignatures") {
                self.consumed.insert(u.id);
            }
        }
    }

    /// Every presignature consumed was read before it was (else its secrets
    /// were not searched).
    fn check_consumed_presignatures_read(&self) {
        assert!(!self.consumed.is_empty(), "no presignature was consumed");
        for id in &self.consumed {
            assert!(
                self.presignature_ids.contains(id),
                "presignature {id} was made and consumed between the two reads: its secrets were not searched"
            );
        }
    }

    fn summary(&self) -> String {
        let mut kinds: Vec<_> = self
            .kinds
            .iter()
            .filter(|(k, _)| !k.ends_with("(little-endian)"))
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        kinds.sort();
        format!(
            "{} distinct secrets read (first source named): {}",
            self.list.len(),
            kinds.join(", ")
        )
    }
}

/// The storage key of the store in `dir`, derived as documented in
/// `tss_core::store` (KDF record `meta/kdf`, Argon2id), and proved by opening
/// the sealed check record `meta/check` with it.
fn storage_key(dir: &Path, pass: &[u8]) -> [u8; 32] {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    let db = sled::open(dir).expect("open store with sled");
    let meta = db.open_tree("meta").expect("meta tree");
    let kdf = meta.get("kdf").expect("read kdf").expect("kdf record");
    let check = meta
        .get("check")
        .expect("read check")
        .expect("check record");
    drop(meta);
    drop(db);
    // version 1 || m_kib || t || p (u32 BE) || salt (16)
    assert_eq!((kdf.len(), kdf[0]), (29, 1), "KDF record v1");
    let word = |at: usize| u32::from_be_bytes(kdf[at..at + 4].try_into().expect("4 bytes"));
    let params = argon2::Params::new(word(1), word(5), word(9), Some(32)).expect("params");
    let mut key = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(pass, &kdf[13..29], &mut key)
        .expect("argon2");
    // version 1 || nonce (24) || ciphertext || tag; associated data
    // "tss-store/v1" || tag || 0x00 || len(key) u32 BE || key || version
    let mut aad = b"tss-store/v1meta\0".to_vec();
    aad.extend_from_slice(&5u32.to_be_bytes());
    aad.extend_from_slice(b"check\x01");
    let plain = chacha20poly1305::XChaCha20Poly1305::new(&key.into())
        .decrypt(
            chacha20poly1305::XNonce::from_slice(&check[1..25]),
            Payload {
                msg: &check[25..],
                aad: &aad,
            },
        )
        .expect("the derived storage key opens the check record");
    assert_eq!(plain, b"tss-store check v1");
    key
}

/// The private scalar of a P-256 key in PKCS#8 PEM (as rcgen writes it): the
/// 32-byte OCTET STRING after `INTEGER 1` of the inner ECPrivateKey.
fn p256_scalar(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).expect("PEM is text");
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64_decode(body.as_bytes(), 0);
    let at = der
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
        .expect("ECPrivateKey in the PKCS#8 TLS key");
    der[at + 5..at + 37].to_vec()
}

// ----------------------------------------------------------------- detector

/// A secret found in a log.
#[derive(Debug)]
struct Finding {
    /// Index into the secret list.
    secret: usize,
    /// In which encoding.
    encoding: &'static str,
    /// Where in the log (start of the decoded run or line).
    at: usize,
}

/// Searches logs for windows of secrets in decoded byte streams.
struct Detector {
    /// Bitset over the first three bytes of every window: a cheap filter
    /// before the map lookups.
    prefix: Vec<u64>,
    w8: HashMap<[u8; 8], usize>,
    w16: HashMap<[u8; 16], usize>,
}

fn prefix_index(w: &[u8]) -> usize {
    (usize::from(w[0]) << 16) | (usize::from(w[1]) << 8) | usize::from(w[2])
}

impl Detector {
    fn new(secrets: &[Secret]) -> Detector {
        let mut d = Detector {
            prefix: vec![0; (1 << 24) / 64],
            w8: HashMap::new(),
            w16: HashMap::new(),
        };
        for (n, s) in secrets.iter().enumerate() {
            for w in s.bytes.windows(s.window) {
                let p = prefix_index(w);
                d.prefix[p / 64] |= 1 << (p % 64);
                match s.window {
                    8 => d.w8.entry(w.try_into().expect("8")).or_insert(n),
                    16 => d.w16.entry(w.try_into().expect("16")).or_insert(n),
                    other => panic!("window of {other} bytes"),
                };
            }
        }
        d
    }

    /// Secrets with a window in `data`, each once.
    fn hits(&self, data: &[u8], out: &mut Vec<usize>) {
        if data.len() < 8 {
            return;
        }
        for at in 0..=data.len() - 8 {
            let p = prefix_index(&data[at..]);
            if self.prefix[p / 64] & (1 << (p % 64)) == 0 {
                continue;
            }
            let w8: [u8; 8] = data[at..at + 8].try_into().expect("8");
            if let Some(&n) = self.w8.get(&w8) {
                out.push(n);
            }
            if let Some(w16) = data.get(at..at + 16) {
                let w16: [u8; 16] = w16.try_into().expect("16");
                if let Some(&n) = self.w16.get(&w16) {
                    out.push(n);
                }
            }
        }
    }

    /// Every (secret, encoding) found in `log`, first place only.
    fn scan(&self, log: &[u8]) -> Vec<Finding> {
        let mut found: Vec<Finding> = Vec::new();
        let mut seen = HashSet::new();
        let mut hits = Vec::new();
        for_each_stream(log, |encoding, at, data| {
            hits.clear();
            self.hits(data, &mut hits);
            for &secret in &hits {
                if seen.insert((secret, encoding)) {
                    found.push(Finding {
                        secret,
                        encoding,
                        at,
                    });
                }
            }
        });
        found
    }
}

/// Calls `f(encoding, log offset, bytes)` for the log itself and for every
/// decoded run in it (see the module docs).
fn for_each_stream(log: &[u8], mut f: impl FnMut(&'static str, usize, &[u8])) {
    f("raw bytes", 0, log);
    runs(
        log,
        |b| b.is_ascii_hexdigit(),
        16,
        |at, run| {
            for skip in 0..2 {
                f("hex", at, &hex_decode(&run[skip..]));
            }
        },
    );
    runs(log, is_base64, 12, |at, run| {
        for skip in 0..4 {
            f("base64", at, &base64_decode(run, skip));
        }
    });
    runs(
        log,
        |b| b.is_ascii_digit(),
        20,
        |at, run| {
            f("decimal", at, &decimal_to_bytes(run));
        },
    );
    integer_lists(log, |at, bytes| f("Debug array", at, bytes));
    for (at, line) in lines(log) {
        if line.contains(&b'\\') {
            f("escaped bytes", at, &unescape(line));
        }
    }
}

/// Maximal runs of bytes with `class`, at least `min` long.
fn runs(log: &[u8], class: impl Fn(u8) -> bool, min: usize, mut f: impl FnMut(usize, &[u8])) {
    let mut at = 0;
    while at < log.len() {
        if !class(log[at]) {
            at += 1;
            continue;
        }
        let end = log[at..]
            .iter()
            .position(|&b| !class(b))
            .map_or(log.len(), |n| at + n);
        if end - at >= min {
            f(at, &log[at..end]);
        }
        at = end;
    }
}

fn lines(log: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut at = 0;
    log.split(|&b| b == b'\n').map(move |l| {
        let start = at;
        at += l.len() + 1;
        (start, l)
    })
}

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => unreachable!("hex digit"),
    }
}

fn hex_decode(run: &[u8]) -> Vec<u8> {
    run.chunks_exact(2)
        .map(|p| nibble(p[0]) << 4 | nibble(p[1]))
        .collect()
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

fn base64_value(c: u8) -> u32 {
    match c {
        b'A'..=b'Z' => u32::from(c - b'A'),
        b'a'..=b'z' => u32::from(c - b'a') + 26,
        b'0'..=b'9' => u32::from(c - b'0') + 52,
        b'+' | b'-' => 62,
        _ => 63,
    }
}

/// Decodes base64 (standard or URL-safe, no padding) from `run[skip..]`;
/// a trailing partial group gives its whole bytes.
fn base64_decode(run: &[u8], skip: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(run.len() * 3 / 4);
    for group in run.get(skip..).unwrap_or_default().chunks(4) {
        let mut v = 0u32;
        for (n, &c) in group.iter().enumerate() {
            v |= base64_value(c) << (18 - 6 * n);
        }
        let bytes = v.to_be_bytes();
        let whole = (group.len() * 6) / 8;
        out.extend_from_slice(&bytes[1..1 + whole]);
    }
    out
}

fn base64_encode(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut v = 0u32;
        for (n, &b) in chunk.iter().enumerate() {
            v |= u32::from(b) << (16 - 8 * n);
        }
        for n in 0..=chunk.len() {
            out.push(char::from(ABC[(v >> (18 - 6 * n)) as usize & 63]));
        }
    }
    let pad = (4 - out.len() % 4) % 4;
    out.push_str(&"=="[..pad]);
    out
}

/// Big-endian bytes of a decimal number (no leading zero bytes).
fn decimal_to_bytes(digits: &[u8]) -> Vec<u8> {
    // Little-endian base-256 limbs, times 10 plus digit.
    let mut limbs: Vec<u8> = Vec::new();
    for &d in digits {
        let mut carry = u32::from(d - b'0');
        for l in limbs.iter_mut() {
            let v = u32::from(*l) * 10 + carry;
            *l = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            limbs.push(carry as u8);
            carry >>= 8;
        }
    }
    limbs.reverse();
    limbs
}

/// Runs of at least 8 comma-separated integers below 256 (decimal or
/// `0x` hex, any whitespace after each comma): the `Debug` of byte arrays.
fn integer_lists(log: &[u8], mut f: impl FnMut(usize, &[u8])) {
    let starts_number =
        |at: usize| log[at].is_ascii_digit() && (at == 0 || !log[at - 1].is_ascii_alphanumeric());
    let mut at = 0;
    while at < log.len() {
        if !starts_number(at) {
            at += 1;
            continue;
        }
        let start = at;
        let mut bytes = Vec::new();
        let mut next = at;
        while let Some((b, end)) = small_integer(log, next) {
            bytes.push(b);
            next = end;
            if log.get(next) != Some(&b',') {
                break;
            }
            next += 1;
            while log.get(next).is_some_and(|c| c.is_ascii_whitespace()) {
                next += 1;
            }
        }
        if bytes.len() >= 8 {
            f(start, &bytes);
        }
        at = next.max(start + 1);
    }
}

/// A decimal or `0x` hex integer below 256 at `at`, and where it ends.
fn small_integer(log: &[u8], at: usize) -> Option<(u8, usize)> {
    let (digits, radix) = if log[at..].starts_with(b"0x") {
        (at + 2, 16)
    } else {
        (at, 10)
    };
    let end = log[digits..]
        .iter()
        .position(|c| !c.is_ascii_alphanumeric())
        .map_or(log.len(), |n| digits + n);
    let text = std::str::from_utf8(&log[digits..end]).ok()?;
    let v = u8::from_str_radix(text, radix).ok()?;
    Some((v, end))
}

/// Undoes Rust's escapes of bytes (`\x0c`, `\n`, `\\`, ...).
fn unescape(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut at = 0;
    while at < line.len() {
        if line[at] == b'\\' && at + 1 < line.len() {
            let (b, len) = match line[at + 1] {
                b'x' if line
                    .get(at + 2..at + 4)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                {
                    (nibble(line[at + 2]) << 4 | nibble(line[at + 3]), 4)
                }
                b'n' => (b'\n', 2),
                b'r' => (b'\r', 2),
                b't' => (b'\t', 2),
                b'0' => (0, 2),
                c @ (b'\\' | b'"' | b'\'') => (c, 2),
                _ => (b'\\', 1),
            };
            out.push(b);
            at += len;
        } else {
            out.push(line[at]);
            at += 1;
        }
    }
    out
}

/// Plants secrets into copies of a 64 KiB piece of `log`, each kind of
/// secret in each encoding separately, and requires the detector to report
/// each, so that a detector that finds nothing cannot pass.
fn self_check(d: &Detector, secrets: &Secrets, log: &[u8]) {
    let start = log.len() / 2;
    let piece = &log[start..(start + (64 << 10)).min(log.len())];
    let cut = piece.len() / 2;
    let baseline: HashSet<(usize, &str)> = d
        .scan(piece)
        .iter()
        .map(|f| (f.secret, f.encoding))
        .collect();
    // One secret of each kind, from node 0.
    let mut kinds = HashSet::new();
    let samples: Vec<(usize, &Secret)> = secrets
        .list
        .iter()
        .enumerate()
        .filter(|(_, s)| s.owner == 0 && kinds.insert(s.what.clone()))
        .collect();
    assert!(samples.len() >= 10, "secret kinds: {}", samples.len());
    let mut planted = 0;
    for (n, s) in samples {
        let b = &s.bytes;
        // A part of the secret longer than one window (a partial print).
        let part = &b[..b.len().min(s.window + 5)];
        let mut plants: Vec<(&str, Vec<u8>)> = vec![
            ("raw bytes", b.clone()),
            ("hex", format!("key={}", hex::encode(b)).into_bytes()),
            ("hex", hex::encode_upper(b).into_bytes()),
            ("hex", format!("x={}..", hex::encode(part)).into_bytes()),
            ("base64", base64_encode(b).into_bytes()),
            // Unaligned: the secret starts one byte into a base64 group.
            (
                "base64",
                base64_encode(&[&[0x5a], &b[..]].concat()).into_bytes(),
            ),
            ("Debug array", format!("{b:?}").into_bytes()),
            ("Debug array", format!("{:#?}", &part).into_bytes()),
            ("Debug array", format!("{b:#04x?}").into_bytes()),
        ];
        let escaped = format!("b\"{}\"", b.escape_ascii());
        if escaped.contains('\\') {
            plants.push(("escaped bytes", escaped.into_bytes()));
        }
        if let Some(dec) = &s.decimal {
            plants.push(("decimal", format!("Integer({dec})").into_bytes()));
        }
        for (encoding, text) in plants {
            let mut copy = piece[..cut].to_vec();
            copy.extend_from_slice(b" planted: ");
            copy.extend_from_slice(&text);
            copy.extend_from_slice(b" end\n");
            copy.extend_from_slice(&piece[cut..]);
            let found = d.scan(&copy);
            assert!(
                found.iter().any(|f| f.encoding == encoding
                    && f.secret == n
                    && !baseline.contains(&(n, encoding))),
                "self-check: {} planted as {encoding} was not found (found {found:?})",
                s.what
            );
            planted += 1;
        }
    }
    assert!(planted > 100, "{planted} plants");
}
