//! Presignature pool levels as the nodes report them (`KeyInfo.pool`), and
//! waiting for the pools to fill.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use proto::v1 as pb;
use tss_node::client::Client;

/// Pool levels of one key at every node.
#[derive(Clone, Debug, Default)]
pub struct Levels {
    /// Per node (in cluster order), the levels it reports.
    pub nodes: Vec<Vec<pb::PoolLevel>>,
}

impl Levels {
    /// No node reports any pool for the key.
    pub fn is_empty(&self) -> bool {
        self.nodes.iter().all(|n| n.is_empty())
    }

    /// Every reported level holds `need` presignatures, or its (non-zero)
    /// target if that is smaller; `None` means the target.
    pub fn holds(&self, need: Option<u32>) -> bool {
        !self.is_empty()
            && self
                .nodes
                .iter()
                .flatten()
                .all(|l| l.target > 0 && l.ready >= need.map_or(l.target, |n| n.min(l.target)))
    }

    /// Ready presignatures per signer pair ("a+b"); both members report a
    /// pair, the smaller count is the usable one.
    pub fn pairs(&self) -> BTreeMap<String, (u32, u32)> {
        let mut out = BTreeMap::new();
        for l in self.nodes.iter().flatten() {
            let mut names = l.signers.clone();
            names.sort();
            let e = out.entry(names.join("+")).or_insert((u32::MAX, l.target));
            e.0 = e.0.min(l.ready);
        }
        out
    }

    /// Usable presignatures over all pairs.
    pub fn total(&self) -> u64 {
        self.pairs().values().map(|(r, _)| u64::from(*r)).sum()
    }

    /// `a+b 12/48, a+c 48/48, ...`.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "no pool reported".into();
        }
        self.pairs()
            .iter()
            .map(|(p, (r, t))| format!("{p} {r}/{t}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// As JSON: `{"a+b": {"ready": r, "target": t}, ...}`.
    pub fn to_json(&self) -> serde_json::Value {
        self.pairs()
            .into_iter()
            .map(|(p, (r, t))| (p, serde_json::json!({"ready": r, "target": t})))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// Reads the key's pool levels at every node.
pub async fn levels(clients: &[Client], key_id: &str) -> anyhow::Result<Levels> {
    let mut nodes = Vec::new();
    for c in clients {
        let info = c
            .clone()
            .get_key(pb::GetKeyRequest {
                key_id: key_id.into(),
            })
            .await?
            .into_inner();
        nodes.push(info.pool);
    }
    Ok(Levels { nodes })
}

/// How long a wait for full pools may take.
#[derive(Clone, Copy, Debug)]
pub struct FillLimits {
    /// In all.
    pub cap: Duration,
    /// Without any increase of the usable total.
    pub stall: Duration,
    /// While no node reports a pool at all.
    pub none: Duration,
}

/// Waits until every node reports every pair of `key_id` holding `need`
/// presignatures (capped at the target; `None`: the target). Returns the
/// time taken and the levels before and after.
pub async fn wait_for(
    clients: &[Client],
    key_id: &str,
    need: Option<u32>,
    limits: FillLimits,
    what: &str,
) -> anyhow::Result<(Duration, Levels, Levels)> {
    let t = Instant::now();
    let first = levels(clients, key_id).await?;
    let mut best = first.total();
    let mut last_gain = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let now = levels(clients, key_id).await?;
        if now.holds(need) {
            return Ok((t.elapsed(), first, now));
        }
        if now.total() > best {
            best = now.total();
            last_gain = Instant::now();
        }
        if now.is_empty() && t.elapsed() > limits.none {
            bail!(
                "{what}: no node reports a presignature pool for key {key_id} after {} s \
                 (KeyInfo.pool is empty: is presign.target > 0, and does this tss-node \
                 build presignatures?)",
                limits.none.as_secs()
            );
        }
        if last_gain.elapsed() > limits.stall {
            bail!(
                "{what}: the pools of key {key_id} stopped filling: no new presignature for \
                 {} s ({}); see the node logs",
                limits.stall.as_secs(),
                now.describe()
            );
        }
        if t.elapsed() > limits.cap {
            bail!(
                "{what}: the pools of key {key_id} did not fill within {} s ({})",
                limits.cap.as_secs(),
                now.describe()
            );
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "    {what}: {:.0} s, {} ready ({})",
                t.elapsed().as_secs_f64(),
                now.total(),
                now.describe()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
