//! Client calls under measurement: Keygen with its progress stream, Sign
//! with independent verification (ECDSA with `k256`; FROST Ed25519 with
//! ed25519-dalek's strict check, Taproot with BIP340 under the x-only output
//! key, both through [`tss_node::client::verify_frost_signature`]), and load
//! at a given concurrency.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use proto::v1 as pb;
use sha2::Digest;
use tss_core::frost::Scheme;
use tss_node::client::Client;

/// Longest a single Sign may take before the bench calls it failed.
const SIGN_TIMEOUT: Duration = Duration::from_secs(120);

/// The key under measurement.
pub struct Key {
    /// Key id.
    pub id: String,
    /// Its public key.
    pub public: PublicKey,
}

/// A key's public key, by scheme.
pub enum PublicKey {
    /// CGGMP24 threshold ECDSA on secp256k1.
    Ecdsa(VerifyingKey),
    /// FROST: the 32-byte Ed25519 key, or the x-only Taproot output key
    /// (BIP86-tweaked), as `KeyInfo.public_key` gives it.
    Frost(Scheme, [u8; 32]),
}

impl Key {
    /// From the node's key info (`scheme` "" or "ecdsa", "ed25519", "taproot").
    pub fn from_info(info: &pb::KeyInfo) -> anyhow::Result<Self> {
        let public = match info.scheme.as_str() {
            "" | "ecdsa" => PublicKey::Ecdsa(
                VerifyingKey::from_sec1_bytes(&info.public_key)
                    .context("the node returned an invalid public key")?,
            ),
            name => {
                let scheme = Scheme::from_name(name)
                    .with_context(|| format!("the node returned unknown scheme {name:?}"))?;
                let pk = info.public_key.as_slice().try_into().with_context(|| {
                    format!(
                        "the node returned a {}-byte {name} public key (expected 32)",
                        info.public_key.len()
                    )
                })?;
                PublicKey::Frost(scheme, pk)
            }
        };
        Ok(Key {
            id: info.key_id.clone(),
            public,
        })
    }

    /// The key's FROST scheme (`None`: ECDSA).
    pub fn scheme(&self) -> Option<Scheme> {
        match self.public {
            PublicKey::Ecdsa(_) => None,
            PublicKey::Frost(s, _) => Some(s),
        }
    }
}

/// A signature that does not verify: always stops the run.
#[derive(Debug)]
pub struct BadSignature(pub String);

impl std::fmt::Display for BadSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "signature check failed: {}", self.0)
    }
}

impl std::error::Error for BadSignature {}

/// Whether `e` is (or wraps) a [`BadSignature`].
pub fn is_bad_signature(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<BadSignature>())
}

/// How the message is given to Sign.
#[derive(Clone, Copy, Debug)]
pub enum Hashing {
    /// A random 32-byte digest with `HASH_ALGORITHM_NONE` (ECDSA: always the
    /// full protocol; FROST: a chain sighash, signed as given, from the
    /// nonce pool when it holds one).
    RawDigest,
    /// A random 64-byte message the node hashes with SHA-256.
    Sha256,
}

impl Hashing {
    /// For progress lines.
    pub fn describe(self) -> &'static str {
        match self {
            Hashing::RawDigest => "random 32-byte digests, HASH_ALGORITHM_NONE",
            Hashing::Sha256 => "SHA-256 of random messages",
        }
    }
}

/// One successful Sign.
#[derive(Clone, Debug)]
pub struct Signed {
    /// Client-side latency.
    pub ms: f64,
    /// `SignResponse.path` ("pool", "full"; empty from an older server).
    pub path: String,
    /// When the answer arrived.
    pub at: Instant,
    /// Index of the node that was asked (and coordinated).
    pub node: usize,
}

impl Signed {
    /// Whether a presignature was used.
    pub fn pool(&self) -> bool {
        self.path == "pool"
    }
}

/// Signs one random message through `c` (connected to node `node`) and
/// verifies the answer.
pub async fn sign_once(
    c: &mut Client,
    node: usize,
    key: &Key,
    hashing: Hashing,
) -> anyhow::Result<Signed> {
    let (message, hash, digest): (Vec<u8>, _, [u8; 32]) = match hashing {
        Hashing::RawDigest => {
            let d: [u8; 32] = rand::random();
            (d.to_vec(), pb::HashAlgorithm::None, d)
        }
        Hashing::Sha256 => {
            let mut m = vec![0u8; 64];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut m);
            let d = sha2::Sha256::digest(&m).into();
            (m, pb::HashAlgorithm::Sha256, d)
        }
    };
    let req_message = message.clone();
    let req = pb::SignRequest {
        key_id: key.id.clone(),
        message,
        hash: hash as i32,
        request_id: rand::random::<[u8; 16]>().to_vec(),
        ..Default::default()
    };
    let t = Instant::now();
    let r = tokio::time::timeout(SIGN_TIMEOUT, c.sign(req))
        .await
        .map_err(|_| anyhow::anyhow!("Sign took over {} s", SIGN_TIMEOUT.as_secs()))??
        .into_inner();
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let at = Instant::now();
    match &key.public {
        PublicKey::Ecdsa(vk) => verify(vk, &digest, &r)?,
        PublicKey::Frost(scheme, pk) => verify_frost(*scheme, pk, &req_message, &r)?,
    }
    Ok(Signed {
        ms,
        path: r.path,
        at,
        node,
    })
}

/// Checks a Sign answer independently: the digest is ours, the public key
/// is the key's, DER and `r || s || v` agree, S is low, the signature
/// verifies and `v` recovers the public key.
pub fn verify(
    vk: &VerifyingKey,
    digest: &[u8; 32],
    r: &pb::SignResponse,
) -> Result<(), BadSignature> {
    let bad = |m: String| Err(BadSignature(m));
    if r.digest != digest {
        return bad(format!(
            "the node signed digest {}, expected {}",
            hex::encode(&r.digest),
            hex::encode(digest)
        ));
    }
    if !r.public_key.is_empty() && VerifyingKey::from_sec1_bytes(&r.public_key).ok() != Some(*vk) {
        return bad(format!(
            "response public key {} is not the key's",
            hex::encode(&r.public_key)
        ));
    }
    let sig = Signature::from_der(&r.der)
        .map_err(|e| BadSignature(format!("DER {}: {e}", hex::encode(&r.der))))?;
    let rs = [r.r.as_slice(), r.s.as_slice()].concat();
    if Signature::from_slice(&rs).ok() != Some(sig) {
        return bad("r || s differs from the DER signature".into());
    }
    if !r.signature_rsv.is_empty() && r.signature_rsv != [rs.as_slice(), &[r.v as u8][..]].concat()
    {
        return bad("signature_rsv differs from r || s || v".into());
    }
    if sig.normalize_s().is_some() {
        return bad("S is not low".into());
    }
    if let Err(e) = vk.verify_prehash(digest, &sig) {
        return bad(format!("k256 rejects the signature: {e}"));
    }
    let recovered = u8::try_from(r.v)
        .ok()
        .and_then(RecoveryId::from_byte)
        .and_then(|rid| VerifyingKey::recover_from_prehash(digest, &sig, rid).ok());
    if recovered != Some(*vk) {
        return bad(format!("recovery id {} does not recover the key", r.v));
    }
    Ok(())
}

/// Checks a FROST key's Sign answer independently: the scheme and public
/// key are the key's, the digest is what the node should have derived
/// (Taproot: the 32 bytes sent; Ed25519 with `HASH_ALGORITHM_NONE`: their
/// SHA-256, as the request's name), `r || s` is the 64-byte signature, and
/// the signature verifies over the message sent: ed25519-dalek
/// `verify_strict`, or BIP340 (libsecp256k1 through rust-bitcoin) under the
/// x-only output key.
pub fn verify_frost(
    scheme: Scheme,
    pk: &[u8; 32],
    message: &[u8],
    r: &pb::SignResponse,
) -> Result<(), BadSignature> {
    let bad = |m: String| Err(BadSignature(m));
    if r.scheme != scheme.name() {
        return bad(format!(
            "the node answered for scheme {:?}, the key is {scheme}",
            r.scheme
        ));
    }
    let digest: [u8; 32] = match scheme {
        Scheme::Ed25519 => sha2::Sha256::digest(message).into(),
        Scheme::Taproot => message
            .try_into()
            .map_err(|_| BadSignature(format!("a {}-byte Taproot message", message.len())))?,
    };
    if r.digest != digest {
        return bad(format!(
            "the node signed digest {}, expected {}",
            hex::encode(&r.digest),
            hex::encode(digest)
        ));
    }
    if !r.public_key.is_empty() && r.public_key != pk {
        return bad(format!(
            "response public key {} is not the key's",
            hex::encode(&r.public_key)
        ));
    }
    if r.signature.len() != 64 || r.signature[..32] != r.r[..] || r.signature[32..] != r.s[..] {
        return bad(format!(
            "signature {} is not 64 bytes r || s",
            hex::encode(&r.signature)
        ));
    }
    tss_node::client::verify_frost_signature(scheme, pk, message, &r.signature).map_err(|e| {
        BadSignature(format!(
            "{e:#} (signature {}, message {})",
            hex::encode(&r.signature),
            hex::encode(message)
        ))
    })
}

/// A finished Keygen: client-side duration, progress as it arrived, the key.
pub struct KeygenRun {
    /// Request sent to stream end.
    pub total: Duration,
    /// Progress events in order.
    pub progress: Vec<pb::KeygenProgress>,
    /// The new key.
    pub key: pb::KeyInfo,
}

impl KeygenRun {
    /// Aux-info time from the coordinator's progress stamps: the first
    /// `aux_info` event to the `aux_info` event reporting `done`.
    pub fn aux_info(&self) -> Option<Duration> {
        let aux = || self.progress.iter().filter(|p| p.stage == "aux_info");
        let start = aux().next()?.elapsed_ms;
        let done = aux().find(|p| p.detail.starts_with("done"))?.elapsed_ms;
        Some(Duration::from_millis(done.checked_sub(start)?))
    }

    /// The coordinator's DKG time ("... DKG took N ms ..." in the last event).
    pub fn dkg_reported_ms(&self) -> Option<f64> {
        let d = &self
            .progress
            .iter()
            .rev()
            .find(|p| p.stage == "done")?
            .detail;
        let after = d.split("DKG took ").nth(1)?;
        after.split_whitespace().next()?.parse().ok()
    }
}

/// Runs Keygen for `key_id` (`scheme`: "" for ECDSA, or a FROST scheme's
/// name); `echo` prints each progress event.
pub async fn keygen(
    c: &mut Client,
    key_id: &str,
    scheme: &str,
    timeout: Duration,
    echo: bool,
) -> anyhow::Result<KeygenRun> {
    let t = Instant::now();
    let run = async {
        let mut stream = c
            .keygen(pb::KeygenRequest {
                key_id: key_id.into(),
                scheme: scheme.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut progress = Vec::new();
        let mut key = None;
        while let Some(ev) = stream.message().await? {
            match ev.event {
                Some(pb::keygen_event::Event::Progress(p)) => {
                    if echo {
                        eprintln!(
                            "    keygen [{} +{:.1} s] {}",
                            p.stage,
                            p.elapsed_ms as f64 / 1000.0,
                            p.detail
                        );
                    }
                    progress.push(p);
                }
                Some(pb::keygen_event::Event::Done(k)) => key = Some(k),
                None => {}
            }
        }
        let key = key.context("the Keygen stream ended without a key")?;
        anyhow::Ok(KeygenRun {
            total: t.elapsed(),
            progress,
            key,
        })
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| anyhow::anyhow!("Keygen {key_id} took over {} s", timeout.as_secs()))?
        .with_context(|| format!("Keygen {key_id}"))
}

/// What a batch of Sign calls produced.
#[derive(Debug, Default)]
pub struct Load {
    /// Successful calls (verified).
    pub signed: Vec<Signed>,
    /// Calls refused with RESOURCE_EXHAUSTED (admission limits).
    pub rejected: usize,
    /// Other failures (up to five distinct messages).
    pub errors: Vec<String>,
    /// Number of other failures.
    pub failed: usize,
    /// Wall time of the batch.
    pub elapsed: Duration,
    /// When the batch began.
    pub started: Option<Instant>,
}

impl Load {
    fn record(&mut self, r: anyhow::Result<Signed>) -> anyhow::Result<()> {
        match r {
            Ok(s) => self.signed.push(s),
            Err(e) if is_bad_signature(&e) => return Err(e),
            Err(e) => match e.downcast_ref::<tonic::Status>() {
                Some(s) if s.code() == tonic::Code::ResourceExhausted => self.rejected += 1,
                _ => {
                    self.failed += 1;
                    self.note_error(format!("{e:#}"));
                }
            },
        }
        Ok(())
    }

    /// Keeps up to five distinct messages.
    fn note_error(&mut self, e: String) {
        if self.errors.len() < 5 && !self.errors.contains(&e) {
            self.errors.push(e);
        }
    }

    fn merge(&mut self, o: Load) {
        self.signed.extend(o.signed);
        self.rejected += o.rejected;
        self.failed += o.failed;
        for e in o.errors {
            self.note_error(e);
        }
    }

    /// Successful calls that used a presignature.
    pub fn pool_count(&self) -> usize {
        self.signed.iter().filter(|s| s.pool()).count()
    }

    /// Pool-path answers per second, from the start of the batch to the
    /// last pool-path answer (calls that fell back to the full protocol
    /// would otherwise set the batch's length); `None` without any.
    pub fn pool_rps(&self) -> Option<f64> {
        let last = self
            .signed
            .iter()
            .filter(|s| s.pool())
            .map(|s| s.at)
            .max()?;
        let secs = last.duration_since(self.started?).as_secs_f64();
        Some(self.pool_count() as f64 / secs.max(1e-9))
    }
}

/// `n` Sign calls, `concurrency` at a time; call `i` goes to node
/// `i % clients.len()`. A signature that does not verify stops the batch.
pub async fn load(
    clients: &[Client],
    key: Arc<Key>,
    hashing: Hashing,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Load> {
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(n) {
        let (clients, key, next) = (clients.to_vec(), key.clone(), next.clone());
        tasks.spawn(async move {
            let mut out = Load::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(out);
                }
                let node = i % clients.len();
                let mut c = clients[node].clone();
                out.record(sign_once(&mut c, node, &key, hashing).await)?;
            }
        });
    }
    let mut all = Load::default();
    while let Some(r) = tasks.join_next().await {
        all.merge(r.context("a load task panicked")??);
    }
    all.elapsed = t.elapsed();
    all.started = Some(t);
    Ok(all)
}

/// Sign calls at `concurrency` until `stop` is set, each answer recorded in
/// `shared` as it arrives (for a controller that watches it). Calls still
/// running `grace` after `stop` are abandoned; returns how many.
pub async fn load_until(
    clients: &[Client],
    key: Arc<Key>,
    hashing: Hashing,
    concurrency: usize,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Load>>,
    grace: Duration,
) -> anyhow::Result<usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (clients, key, next, stop, shared) = (
            clients.to_vec(),
            key.clone(),
            next.clone(),
            stop.clone(),
            shared.clone(),
        );
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let node = i % clients.len();
                let mut c = clients[node].clone();
                let r = sign_once(&mut c, node, &key, hashing).await;
                shared
                    .lock()
                    .map_err(|_| anyhow::anyhow!("a load task panicked"))?
                    .record(r)?;
            }
            anyhow::Ok(())
        });
    }
    let mut deadline = None;
    loop {
        if deadline.is_none() && stop.load(Ordering::Relaxed) {
            deadline = Some(tokio::time::Instant::now() + grace);
        }
        let wait =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_millis(100));
        let joined = match tokio::time::timeout_at(wait, tasks.join_next()).await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(0),
            Err(_) if deadline.is_some() => {
                let abandoned = tasks.len();
                tasks.abort_all();
                return Ok(abandoned);
            }
            Err(_) => continue,
        };
        if let Err(e) = joined.context("a load task panicked").and_then(|r| r) {
            // Tells the caller's controller; the other tasks end with the set.
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
    }
}
