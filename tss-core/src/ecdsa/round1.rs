//! Our own check of signing round 1's range proofs, before the engine sees
//! them.
//!
//! In round 1 each signer j sends K_j, G_j (Paillier encryptions of k_j and
//! γ_j) with ElGamal commitments (broadcast 1a), and to each co-signer i two
//! proofs made for i's ring-Pedersen parameters (p2p 1b): ψ0 that K_j encrypts
//! a small value committed in (A1, A2), ψ1 the same for G_j and (B1, B2).
//!
//! The pinned engine (cggmp24 0.7.0-alpha.3, signing.rs, "Verify psi0, psi1
//! proofs") ends the ψ0 check with `.err()?` inside its blame closure: a valid
//! ψ0 skips the ψ1 check, and an invalid ψ0 is forgiven when ψ1 verifies. So
//! this module verifies both proofs of every co-signer as soon as it holds
//! that co-signer's 1a and 1b, and ends the session naming the sender if
//! either fails. The engine's own (weaker) check still runs after ours.
//!
//! The proofs are bound to a hashed statement whose tag and fields are private
//! to the engine; [`unambiguous::ProofEnc`] is a copy that must hash the same.
//! Tests prove it does: every honest run goes through this check, so a
//! mismatch would make every signature fail.

use std::collections::{HashMap, HashSet};

use cggmp24::security_level::SecurityLevel;
use cggmp24::signing::msg::{MsgRound1a, MsgRound1b};
use paillier_zk::fast_paillier;
use paillier_zk::paillier_encryption_in_range_with_el_gamal as pi_enc_elg;
use round_based::Incoming;

use super::{Curve, EngineError, KeyShare, Level};
use crate::session::DeliveryError;

/// Signing protocol message.
pub type Msg = cggmp24::signing::msg::Msg<Curve, sha2::Sha256>;

mod unambiguous {
    /// Statement each ψ proof is bound to (cggmp24's private
    /// `signing::unambiguous::ProofEnc`, same tag and field names).
    #[derive(udigest::Digestable)]
    #[udigest(tag = "dfns.cggmp24.signing.proof_enc")]
    pub struct ProofEnc<'a> {
        pub sid: cggmp24::ExecutionId<'a>,
        pub prover: u16,
        /// 0 for ψ0 (K), 1 for ψ1 (G).
        pub num: u8,
    }
}

/// What a signer needs to check its co-signers' round-1 proofs.
pub(super) struct Round1Check {
    eid: [u8; 32],
    /// Paillier keys of the signers, in signing order.
    keys: Vec<fast_paillier::EncryptionKey>,
    /// Our ring-Pedersen parameters: the proofs sent to us are made for them.
    ours: pi_enc_elg::Aux,
    broadcasts: HashMap<u16, MsgRound1a<Curve>>,
    proofs: HashMap<u16, MsgRound1b<Curve>>,
    checked: HashSet<u16>,
}

impl Round1Check {
    /// For signer `i` of `parties_at_keygen` (already checked against the
    /// share by the caller).
    pub(super) fn new(
        eid: &[u8; 32],
        i: u16,
        parties_at_keygen: &[u16],
        share: &KeyShare,
    ) -> Result<Self, EngineError> {
        let aux = &share.aux;
        let at = |j: u16| usize::from(j);
        let keys = parties_at_keygen
            .iter()
            .map(|&k| {
                aux.N
                    .get(at(k))
                    .map(|n| fast_paillier::EncryptionKey::from_n(n.clone()))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| EngineError::InvalidInput("signer index outside the key".into()))?;
        let ours = parties_at_keygen
            .get(at(i))
            .and_then(|&k| aux.pedersen_params.get(at(k)))
            .map(pi_enc_elg::Aux::from)
            .ok_or_else(|| EngineError::InvalidInput("signer index outside the key".into()))?;
        Ok(Self {
            eid: *eid,
            keys,
            ours,
            broadcasts: HashMap::new(),
            proofs: HashMap::new(),
            checked: HashSet::new(),
        })
    }

    /// Looks at one incoming message; refuses it if it completes a sender's
    /// round 1 with a proof that does not verify, or repeats a checked one.
    pub(crate) fn inspect(&mut self, m: &Incoming<Msg>) -> Result<(), DeliveryError> {
        let j = m.sender;
        let blame = |reason: &str| DeliveryError::Misbehaved {
            culprit: j,
            reason: reason.to_owned(),
        };
        match &m.msg {
            Msg::Round1a(a) => {
                if self.checked.contains(&j) || self.broadcasts.contains_key(&j) {
                    return Err(blame("second round-1a message"));
                }
                self.broadcasts.insert(j, a.clone());
            }
            Msg::Round1b(b) => {
                if self.checked.contains(&j) || self.proofs.contains_key(&j) {
                    return Err(blame("second round-1b message"));
                }
                self.proofs.insert(j, b.clone());
            }
            _ => return Ok(()),
        }
        if let (Some(a), Some(b)) = (self.broadcasts.get(&j), self.proofs.get(&j)) {
            let r = self.verify(j, a, b);
            self.broadcasts.remove(&j);
            self.proofs.remove(&j);
            self.checked.insert(j);
            r.map_err(|what| blame(&format!("round-1 range proof {what} does not verify")))?;
        }
        Ok(())
    }

    /// Verifies ψ0 and ψ1 of signer `j`; on failure says which.
    fn verify(
        &self,
        j: u16,
        a: &MsgRound1a<Curve>,
        b: &MsgRound1b<Curve>,
    ) -> Result<(), &'static str> {
        let key = self.keys.get(usize::from(j)).ok_or("(unknown sender)")?;
        let security = pi_enc_elg::SecurityParams {
            l: <Level as SecurityLevel>::ELL,
            epsilon: <Level as SecurityLevel>::EPSILON,
        };
        let sid = cggmp24::ExecutionId::new(&self.eid);
        let cases = [
            (0u8, &a.K, &a.A1, &a.A2, &b.psi0, "psi0 (for K)"),
            (1u8, &a.G, &a.B1, &a.B2, &b.psi1, "psi1 (for G)"),
        ];
        for (num, ciphertext, commit_b, commit_x, proof, what) in cases {
            pi_enc_elg::non_interactive::verify::<Curve, sha2::Sha256>(
                &unambiguous::ProofEnc {
                    sid,
                    prover: j,
                    num,
                },
                &self.ours,
                pi_enc_elg::Data {
                    key,
                    ciphertext,
                    a: &a.Y,
                    b: commit_b,
                    x: commit_x,
                },
                proof,
                &security,
            )
            .map_err(|_| what)?;
        }
        Ok(())
    }
}
