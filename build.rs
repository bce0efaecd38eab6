//! Build script: `closelab --version` names the smoltcp it was built with,
//! read from Cargo.lock (the version actually compiled in, not the
//! requirement in Cargo.toml).

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("Cargo.lock");
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    let version = smoltcp_version(&text).unwrap_or("unknown");
    println!("cargo:rustc-env=CLOSELAB_SMOLTCP_VERSION={version}");
}

/// The `version` of the `[[package]]` named smoltcp.
fn smoltcp_version(lock: &str) -> Option<&str> {
    lock.split("[[package]]").find_map(|pkg| {
        let mut lines = pkg.lines().map(str::trim);
        lines.find(|l| *l == "name = \"smoltcp\"")?;
        pkg.lines().map(str::trim).find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"'))
    })
}
