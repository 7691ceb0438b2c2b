//! The report: the figures every run writes, the ones derived from them
//! (ECDSA: the ratio to the limit; FROST: the targets met), the machine it
//! ran on, and the table printed at the end.

use serde_json::{json, Map, Value};
use tss_core::frost::Scheme;

use crate::stats::round3;

/// The figures every run writes (null when not measured), by scheme.
pub fn required(scheme: Option<Scheme>) -> &'static [&'static str] {
    match scheme {
        None => &REQUIRED,
        Some(_) => &FROST_REQUIRED,
    }
}

/// The figures every FROST run writes (null when not measured).
const FROST_REQUIRED: [&str; 16] = [
    "dkg_p50_ms",
    "sign_full_p50_ms",
    "sign_full_p99_ms",
    "sign_pool_p50_ms",
    "sign_pool_p99_ms",
    "sign_rps_c1",
    "sign_rps_c8",
    "sign_rps_c64",
    "sign_pool_rps_c1",
    "sign_pool_rps_c8",
    "sign_pool_rps_c64",
    "sign_sustained_rps",
    "sign_sustained_nopool_rps",
    "limit_grpc_rtt_p50_ms",
    "targets",
    "targets_met",
];

/// FROST targets on 2 cores: figure, bound, whether the figure must be at
/// most (`true`) or at least (`false`) the bound, and the unit.
pub const FROST_TARGETS: [(&str, f64, bool, &str); 3] = [
    ("sign_pool_p50_ms", 2.0, true, "ms"),
    ("sign_full_p50_ms", 5.0, true, "ms"),
    ("sign_sustained_rps", 200.0, false, "/s"),
];

/// The figures every ECDSA run writes (null when not measured).
const REQUIRED: [&str; 15] = [
    "safe_primes_s_per_party_median",
    "aux_info_s",
    "dkg_p50_ms",
    "presign_cpu_s_per_signer",
    "presign_wall_ms",
    "sign_full_p50_ms",
    "sign_pool_p50_ms",
    "sign_pool_p99_ms",
    "sign_pool_rps_c1",
    "sign_pool_rps_c8",
    "sign_pool_rps_c64",
    "sign_sustained_rps",
    "limit_k256_sign_ms",
    "limit_grpc_rtt_p50_ms",
    "ratio_pool_p50_to_limit",
];

/// Figures computed from the measured ones, once the run is over.
pub fn derived(scheme: Option<Scheme>, fields: &mut Map<String, Value>) {
    if scheme.is_none() {
        let ratio = match (
            fields["sign_pool_p50_ms"].as_f64(),
            fields["limit_k256_sign_ms"].as_f64(),
            fields["limit_grpc_rtt_p50_ms"].as_f64(),
        ) {
            (Some(p), Some(k), Some(rtt)) if k + 2.0 * rtt > 0.0 => {
                json!(round3(p / (k + 2.0 * rtt)))
            }
            _ => Value::Null,
        };
        fields.insert("ratio_pool_p50_to_limit".into(), ratio);
        return;
    }
    let mut targets = Map::new();
    let mut all = Some(true);
    for (k, bound, at_most, _) in FROST_TARGETS {
        let met = fields.get(k).and_then(Value::as_f64).map(|v| {
            if at_most {
                v <= bound
            } else {
                v >= bound
            }
        });
        all = match (all, met) {
            (Some(a), Some(m)) => Some(a && m),
            _ => None,
        };
        targets.insert(
            k.into(),
            json!({
                "target": format!("{} {bound}", if at_most { "<=" } else { ">=" }),
                "value": fields.get(k).cloned().unwrap_or(Value::Null),
                "met": met,
            }),
        );
    }
    fields.insert("targets".into(), Value::Object(targets));
    fields.insert("targets_met".into(), json!(all));
}

/// The machine: cores, CPU model, OS and kernel, architecture, memory.
pub fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    let os_release = read("/etc/os-release");
    let pretty = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| std::env::consts::OS.to_owned());
    let kernel = read("/proc/sys/kernel/osrelease");
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| (kib / 1_048_576.0 * 10.0).round() / 10.0);
    json!({
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu_model": cpu_model,
        "os": if kernel.trim().is_empty() { pretty } else { format!("{pretty}, kernel {}", kernel.trim()) },
        "arch": std::env::consts::ARCH,
        "mem_gib": mem_gib,
    })
}

/// `/proc/loadavg`'s 1, 5 and 15 minute figures (other work on the machine
/// shows here).
pub fn loadavg() -> Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() == 3 {
        json!(v)
    } else {
        Value::Null
    }
}

/// A figure as the table shows it.
fn cell(report: &Value, k: &str) -> String {
    match report.get(k) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// Prints the table of `report` to stdout.
pub fn print_table(scheme: Option<Scheme>, report: &Value) {
    match scheme {
        None => print_ecdsa_table(report),
        Some(_) => print_frost_table(report),
    }
}

fn print_frost_table(report: &Value) {
    let rows: [(&str, &str); 20] = [
        ("scheme", ""),
        ("build", ""),
        ("dkg_p50_ms", "ms"),
        ("pool_fill_s", "s"),
        ("sign_full_p50_ms", "ms"),
        ("sign_full_p99_ms", "ms"),
        ("sign_pool_p50_ms", "ms"),
        ("sign_pool_p90_ms", "ms"),
        ("sign_pool_p99_ms", "ms"),
        ("sign_rps_c1", "/s"),
        ("sign_rps_c8", "/s"),
        ("sign_rps_c64", "/s"),
        ("sign_pool_rps_c1", "/s"),
        ("sign_pool_rps_c8", "/s"),
        ("sign_pool_rps_c64", "/s"),
        ("sign_sustained_rps", "/s"),
        ("sign_sustained_nopool_rps", "/s"),
        ("limit_grpc_rtt_p50_ms", "ms"),
        ("health_rtt_p50_ms", "ms"),
        ("total_s", "s"),
    ];
    println!(
        "{:<34} {:>12}  {:<5} {:<16} met",
        "figure", "value", "unit", "target (2 cores)"
    );
    for (k, unit) in rows {
        let (target, met) = match FROST_TARGETS.iter().find(|t| t.0 == k) {
            Some((_, bound, at_most, _)) => (
                format!("{} {bound}", if *at_most { "<=" } else { ">=" }),
                match report["targets"][k]["met"].as_bool() {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                },
            ),
            None => (String::new(), ""),
        };
        println!(
            "{k:<34} {:>12}  {unit:<5} {target:<16} {met}",
            cell(report, k)
        );
    }
    println!("{:<34} {:>12}", "complete", cell(report, "complete"));
    print_paths(report);
}

fn print_ecdsa_table(report: &Value) {
    let rows: [(&str, &str); 22] = [
        ("build", ""),
        ("safe_primes_s_per_party_median", "s"),
        ("aux_info_s", "s"),
        ("dkg_p50_ms", "ms"),
        ("presign_cpu_s_per_signer", "s"),
        ("presign_wall_ms", "ms"),
        ("pool_fill_s", "s"),
        ("presign_fill_per_s", "/s"),
        ("sign_full_p50_ms", "ms"),
        ("sign_pool_p50_ms", "ms"),
        ("sign_pool_p90_ms", "ms"),
        ("sign_pool_p99_ms", "ms"),
        ("sign_pool_rps_c1", "/s"),
        ("sign_pool_rps_c8", "/s"),
        ("sign_pool_rps_c64", "/s"),
        ("sign_sustained_rps", "/s"),
        ("limit_k256_sign_ms", "ms"),
        ("limit_grpc_rtt_p50_ms", "ms"),
        ("health_rtt_p50_ms", "ms"),
        ("ratio_pool_p50_to_limit", ""),
        ("total_s", "s"),
        ("complete", ""),
    ];
    println!("{:<34} {:>12}  unit", "figure", "value");
    for (k, unit) in rows {
        println!("{k:<34} {:>12}  {unit}", cell(report, k));
    }
    print_paths(report);
}

/// Which path answered each batch's calls.
fn print_paths(report: &Value) {
    for (label, k) in [
        ("c1", "sign_pool_c1"),
        ("c8", "sign_pool_c8"),
        ("c64", "sign_pool_c64"),
        ("sustained", "sign_sustained"),
        ("nopool", "sign_sustained_nopool"),
        ("full", "sign_full"),
    ] {
        if let Some(d) = report.get(k).filter(|d| d.is_object()) {
            println!(
                "paths {label:<9}: {} pool, {} full, {} refused, {} failed",
                d["pool_path"], d["full_path"], d["rejected_resource_exhausted"], d["failed"]
            );
        }
    }
}
