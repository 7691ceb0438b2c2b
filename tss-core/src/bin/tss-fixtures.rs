//! Regenerates the committed TEST-ONLY fixtures (safe primes).
//!
//! `cargo run --release -p tss-core --bin tss-fixtures -- primes 4 tests/fixtures/primes.test-only.txt`
//!
//! The primes it writes are public once committed: they exist so that tests
//! and the demo do not spend minutes per party on prime generation. A node
//! never uses them unless told to at `init` with a flag that says so.

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (count, out) = match args.as_slice() {
        [cmd, count, out] if cmd == "primes" => match count.parse::<usize>() {
            Ok(c) if c > 0 => (c, out.clone()),
            _ => usage(),
        },
        _ => usage(),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut sets = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        sets.push(tss_core::primes::generate(threads));
        eprintln!("set {}/{count}: {:.1} s", i + 1, t.elapsed().as_secs_f64());
    }
    if let Err(e) = std::fs::write(&out, tss_core::primes::fixtures_to_text(&sets)) {
        eprintln!("cannot write {out}: {e}");
        std::process::exit(1);
    }
    eprintln!("wrote {count} TEST-ONLY prime sets to {out}");
}

fn usage() -> ! {
    eprintln!("usage: tss-fixtures primes COUNT OUT_FILE");
    std::process::exit(2)
}
