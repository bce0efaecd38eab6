//! `closelab completions SHELL` and `closelab man [--out DIR]`: generated
//! from the same clap definitions the parser uses, so they never drift.

use std::io::Write;
use std::path::Path;

/// `closelab --version`: the crate's version and the smoltcp compiled in
/// (read from Cargo.lock by build.rs).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (smoltcp ", env!("CLOSELAB_SMOLTCP_VERSION"), ")");

/// The completion script for `shell` on `out`.
pub fn completions(shell: clap_complete::Shell, mut cmd: clap::Command, out: &mut dyn Write) -> Result<(), String> {
    let name = cmd.get_name().to_string();
    // Into memory first: clap_complete panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    out.write_all(&script).and_then(|()| out.flush()).map_err(|e| format!("cannot write the completion script: {e}"))
}

/// The man page of `cmd` (roff) on `out`, or with `dir` one page per
/// command and subcommand (closelab.1, closelab-listen.1, closelab-lab-up.1,
/// …) written there, each path printed on `out`.
pub fn man(cmd: clap::Command, dir: Option<&Path>, out: &mut dyn Write) -> Result<(), String> {
    let Some(dir) = dir else {
        let mut roff = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut roff).map_err(|e| format!("cannot render the man page: {e}"))?;
        return out.write_all(&roff).and_then(|()| out.flush()).map_err(|e| format!("cannot write the man page: {e}"));
    };
    if !dir.is_dir() {
        return Err(format!("--out {}: not a directory", dir.display()));
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    collect(&cmd, &mut pages);
    for page in pages {
        let man = clap_mangen::Man::new(page);
        let path = dir.join(man.get_filename());
        let mut roff = Vec::new();
        man.render(&mut roff).map_err(|e| format!("cannot render {}: {e}", path.display()))?;
        std::fs::write(&path, roff).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        writeln!(out, "{}", path.display()).map_err(|e| format!("cannot write to stdout: {e}"))?;
    }
    Ok(())
}

/// `cmd` and its subcommands, depth first, parents before children.
fn collect(cmd: &clap::Command, pages: &mut Vec<clap::Command>) {
    pages.push(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, pages);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_names_the_smoltcp_in_cargo_lock() {
        let lock = include_str!("../../Cargo.lock");
        let pkg = lock.split("[[package]]").find(|p| p.contains("name = \"smoltcp\"\n")).unwrap();
        let v = pkg.lines().find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"')).unwrap();
        assert_eq!(super::VERSION, format!("{} (smoltcp {v})", env!("CARGO_PKG_VERSION")));
    }
}
