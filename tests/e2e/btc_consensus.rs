//! Full Bitcoin script verification of what the cluster returns, outside
//! the node: libbitcoinconsensus 26 (Bitcoin Core's script interpreter)
//! with every spent output, so Taproot key-path spends (BIP341 commits to
//! all of them) are checked as strictly as P2WPKH ones.

/// Verifies every input of `tx` against the output it spends, found among
/// the funding transactions `prev`; the error names the input.
pub fn verify(tx: &bitcoin::Transaction, prev: &[&bitcoin::Transaction]) -> Result<(), String> {
    let spent = spent_outputs(tx, prev)?;
    // The library reads the spent outputs through these pointers during
    // each call; `spent` outlives them.
    let utxos: Vec<bitcoinconsensus::Utxo> = spent
        .iter()
        .map(|o| bitcoinconsensus::Utxo {
            script_pubkey: o.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: o.script_pubkey.len() as u32,
            value: o.value.to_sat() as i64,
        })
        .collect();
    let bytes = bitcoin::consensus::serialize(tx);
    for (i, o) in spent.iter().enumerate() {
        bitcoinconsensus::verify(
            o.script_pubkey.as_bytes(),
            o.value.to_sat(),
            &bytes,
            Some(&utxos),
            i,
        )
        .map_err(|e| format!("input {i}: {e:?}"))?;
    }
    Ok(())
}

/// The output each input of `tx` spends, in input order, found among the
/// funding transactions `prev`.
pub fn spent_outputs(
    tx: &bitcoin::Transaction,
    prev: &[&bitcoin::Transaction],
) -> Result<Vec<bitcoin::TxOut>, String> {
    tx.input
        .iter()
        .map(|i| {
            prev.iter()
                .find(|p| p.compute_txid() == i.previous_output.txid)
                .and_then(|p| p.output.get(i.previous_output.vout as usize))
                .cloned()
                .ok_or_else(|| format!("no funding output for {}", i.previous_output))
        })
        .collect()
}
