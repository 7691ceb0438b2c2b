//! Compiles `proto/tss.proto` with protox (pure Rust, no `protoc` needed),
//! and writes `descriptor.txt` to OUT_DIR: every message, field, enum value
//! and RPC with its number and type, for the descriptor snapshot test
//! (`src/lib.rs`, against the committed `descriptor.snapshot`).

use std::fmt::Write as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/tss.proto");
    let fds = protox::compile(["proto/tss.proto"], ["proto"])?;
    let mut out = String::new();
    for file in &fds.file {
        writeln!(out, "file {} package {}", file.name(), file.package())?;
        for m in &file.message_type {
            describe_message(&mut out, m, "")?;
        }
        for e in &file.enum_type {
            describe_enum(&mut out, e, "")?;
        }
        for s in &file.service {
            writeln!(out, "service {}", s.name())?;
            for m in &s.method {
                writeln!(
                    out,
                    "  rpc {}({}{}) returns ({}{})",
                    m.name(),
                    if m.client_streaming() { "stream " } else { "" },
                    m.input_type(),
                    if m.server_streaming() { "stream " } else { "" },
                    m.output_type()
                )?;
            }
        }
    }
    let dir = std::env::var("OUT_DIR")?;
    std::fs::write(format!("{dir}/descriptor.txt"), out)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

fn describe_message(
    out: &mut String,
    m: &prost_types::DescriptorProto,
    outer: &str,
) -> std::fmt::Result {
    let name = format!("{outer}{}", m.name());
    writeln!(out, "message {name}")?;
    for f in &m.field {
        let oneof = match f.oneof_index {
            Some(i) => format!(" oneof {}", m.oneof_decl[i as usize].name()),
            None => String::new(),
        };
        writeln!(
            out,
            "  {} = {} {:?} {:?} {}{oneof}",
            f.name(),
            f.number(),
            f.label(),
            f.r#type(),
            f.type_name()
        )?;
    }
    for r in &m.reserved_range {
        writeln!(out, "  reserved {}..{}", r.start(), r.end())?;
    }
    for r in &m.reserved_name {
        writeln!(out, "  reserved \"{r}\"")?;
    }
    for n in &m.nested_type {
        describe_message(out, n, &format!("{name}."))?;
    }
    for e in &m.enum_type {
        describe_enum(out, e, &format!("{name}."))?;
    }
    Ok(())
}

fn describe_enum(
    out: &mut String,
    e: &prost_types::EnumDescriptorProto,
    outer: &str,
) -> std::fmt::Result {
    writeln!(out, "enum {outer}{}", e.name())?;
    for v in &e.value {
        writeln!(out, "  {} = {}", v.name(), v.number())?;
    }
    Ok(())
}
