//! Networks and their address encodings: bech32/bech32m segwit addresses
//! with the network's prefix, base58check P2PKH/P2SH with its version
//! bytes.

use std::fmt;
use std::str::FromStr;

use bitcoin::bech32::{self, Hrp};
use bitcoin::hashes::Hash;
use bitcoin::{base58, PubkeyHash, Script, ScriptBuf, ScriptHash, WitnessProgram, WitnessVersion};

use super::{compressed_key, p2wpkh_script};
use crate::chain::{invalid, ChainError};

/// The chains whose P2WPKH outputs the node spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Network {
    /// Bitcoin mainnet.
    Bitcoin,
    /// Bitcoin testnet (testnet3/testnet4/signet share the encodings).
    BitcoinTestnet,
    /// Litecoin mainnet.
    Litecoin,
    /// Litecoin testnet.
    LitecoinTestnet,
}

/// Address encodings and money supply of a network.
pub(super) struct Params {
    pub(super) name: &'static str,
    hrp: Hrp,
    p2pkh: u8,
    /// The first is the one addresses are written with; the others are
    /// still accepted.
    p2sh: &'static [u8],
    /// What addresses of this network start with, for error messages.
    prefixes: &'static str,
    /// Largest amount that can exist, in the smallest unit.
    pub(super) max_money: u64,
}

const BITCOIN: Params = Params {
    name: "bitcoin",
    hrp: Hrp::parse_unchecked("bc"),
    p2pkh: 0x00,
    p2sh: &[0x05],
    prefixes: "bc1, 1 or 3",
    max_money: 21_000_000 * 100_000_000,
};
const BITCOIN_TESTNET: Params = Params {
    name: "bitcoin-testnet",
    hrp: Hrp::parse_unchecked("tb"),
    p2pkh: 0x6f,
    p2sh: &[0xc4],
    prefixes: "tb1, m, n or 2",
    max_money: 21_000_000 * 100_000_000,
};
const LITECOIN: Params = Params {
    name: "litecoin",
    hrp: Hrp::parse_unchecked("ltc"),
    p2pkh: 0x30,
    p2sh: &[0x32, 0x05],
    prefixes: "ltc1, L, M or 3",
    max_money: 84_000_000 * 100_000_000,
};
const LITECOIN_TESTNET: Params = Params {
    name: "litecoin-testnet",
    hrp: Hrp::parse_unchecked("tltc"),
    p2pkh: 0x6f,
    p2sh: &[0x3a, 0xc4],
    prefixes: "tltc1, m, n, Q or 2",
    max_money: 84_000_000 * 100_000_000,
};

impl Network {
    /// Every network, in a fixed order.
    pub const ALL: [Network; 4] = [
        Network::Bitcoin,
        Network::BitcoinTestnet,
        Network::Litecoin,
        Network::LitecoinTestnet,
    ];

    /// The network's name: "bitcoin", "bitcoin-testnet", "litecoin" or
    /// "litecoin-testnet" (what [`FromStr`] accepts).
    pub fn name(self) -> &'static str {
        self.params().name
    }

    pub(super) fn params(self) -> &'static Params {
        match self {
            Network::Bitcoin => &BITCOIN,
            Network::BitcoinTestnet => &BITCOIN_TESTNET,
            Network::Litecoin => &LITECOIN,
            Network::LitecoinTestnet => &LITECOIN_TESTNET,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Network {
    type Err = ChainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Network::ALL
            .into_iter()
            .find(|n| n.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Network::ALL.iter().map(|n| n.name()).collect();
                invalid(format!(
                    "unknown network {s:?}: expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// bech32 P2WPKH address of a SEC1 public key (compressed or uncompressed input; the compressed form is used). hrp: bc, tb, ltc, tltc.
///
/// # Errors
/// [`ChainError::Invalid`] when `public_key` is not a secp256k1 point.
pub fn p2wpkh_address(public_key: &[u8], net: Network) -> Result<String, ChainError> {
    let key = compressed_key(public_key)?;
    let script = p2wpkh_script(&key);
    address_for_script(script.as_bytes(), net)
        .ok_or_else(|| invalid("cannot encode the P2WPKH address"))
}

/// bech32m P2TR address paying to the 32-byte x-only `output_key` (already
/// tweaked: for this daemon's Taproot keys, the BIP86 output key).
///
/// # Errors
/// [`ChainError::Invalid`] when `output_key` is not an x-only secp256k1 key.
pub fn p2tr_address(output_key: &[u8], net: Network) -> Result<String, ChainError> {
    bitcoin::secp256k1::XOnlyPublicKey::from_slice(output_key)
        .map_err(|_| invalid("not an x-only secp256k1 key"))?;
    let mut script = vec![0x51, 0x20];
    script.extend_from_slice(output_key);
    address_for_script(&script, net).ok_or_else(|| invalid("cannot encode the P2TR address"))
}

/// The scriptPubKey an address string pays to, for that network: segwit v0/v1 bech32/bech32m with the network's hrp, and base58check P2PKH/P2SH with the network's version bytes (Bitcoin 0x00/0x05, Bitcoin testnet 0x6f/0xc4, Litecoin 0x30/0x32 (also accept legacy 0x05), Litecoin testnet 0x6f/0x3a (also 0xc4)). Refuse an address of another network with a message naming the expected prefix.
///
/// Segwit versions other than v0 (P2WPKH, P2WSH) and v1 with a 32-byte
/// program (P2TR) are refused: nothing the node sends should go to outputs
/// no wallet can spend yet.
///
/// # Errors
/// [`ChainError::Invalid`] naming what is wrong with the address.
pub fn script_for_address(addr: &str, net: Network) -> Result<Vec<u8>, ChainError> {
    let p = net.params();
    let other_network = || {
        invalid(format!(
            "not a {} address: {} addresses start with {}",
            p.name, p.name, p.prefixes
        ))
    };
    let lower = addr.to_ascii_lowercase();
    let looks_segwit = Network::ALL
        .iter()
        .any(|n| lower.starts_with(&format!("{}1", n.params().hrp.to_lowercase())));
    if looks_segwit {
        let (hrp, version, program) = bech32::segwit::decode(addr)
            .map_err(|e| invalid(format!("invalid segwit address: {e}")))?;
        if hrp != p.hrp {
            return Err(other_network());
        }
        let version = WitnessVersion::try_from(version)
            .map_err(|e| invalid(format!("invalid segwit address: {e}")))?;
        let supported = match version {
            WitnessVersion::V0 => true,
            WitnessVersion::V1 => program.len() == 32,
            _ => false,
        };
        if !supported {
            return Err(invalid(format!(
                "segwit version {} addresses with {}-byte programs are not supported \
                 (only v0 and v1 taproot)",
                version.to_num(),
                program.len()
            )));
        }
        let program = WitnessProgram::new(version, &program)
            .map_err(|e| invalid(format!("invalid segwit address: {e}")))?;
        return Ok(ScriptBuf::new_witness_program(&program).into_bytes());
    }
    let payload = base58::decode_check(addr).map_err(|e| {
        invalid(format!(
            "not a valid address (neither segwit nor base58check: {e}); {} addresses start with {}",
            p.name, p.prefixes
        ))
    })?;
    let Some((&version, hash)) = payload.split_first() else {
        return Err(invalid("base58check address without a version byte"));
    };
    let Ok(hash) = <[u8; 20]>::try_from(hash) else {
        return Err(invalid(format!(
            "base58check address carries {} bytes, not a 20-byte hash",
            hash.len()
        )));
    };
    let script = if version == p.p2pkh {
        ScriptBuf::new_p2pkh(&PubkeyHash::from_byte_array(hash))
    } else if p.p2sh.contains(&version) {
        ScriptBuf::new_p2sh(&ScriptHash::from_byte_array(hash))
    } else {
        return Err(other_network());
    };
    Ok(script.into_bytes())
}

/// The address string of a scriptPubKey on that network (same encodings), None for non-standard scripts.
pub fn address_for_script(script: &[u8], net: Network) -> Option<String> {
    let p = net.params();
    let s = Script::from_bytes(script);
    let bytes = s.as_bytes();
    if s.is_p2pkh() {
        // OP_DUP OP_HASH160 <20> OP_EQUALVERIFY OP_CHECKSIG
        let mut payload = vec![p.p2pkh];
        payload.extend_from_slice(bytes.get(3..23)?);
        return Some(base58::encode_check(&payload));
    }
    if s.is_p2sh() {
        // OP_HASH160 <20> OP_EQUAL
        let mut payload = vec![*p.p2sh.first()?];
        payload.extend_from_slice(bytes.get(2..22)?);
        return Some(base58::encode_check(&payload));
    }
    let version = if s.is_p2wpkh() || s.is_p2wsh() {
        bech32::segwit::VERSION_0
    } else if s.is_p2tr() {
        bech32::segwit::VERSION_1
    } else {
        return None;
    };
    // OP_n <len> <program>
    bech32::segwit::encode(p.hrp, version, bytes.get(2..)?).ok()
}
