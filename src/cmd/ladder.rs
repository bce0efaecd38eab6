//! `closelab ladder FILE.jsonl`: reads a saved `--json` stream (a file or
//! stdin), prints the terminal ladder of each run and writes the Mermaid
//! and SVG pictures asked for. The reading and splitting are
//! [`crate::view::trace`], the drawing is `view`'s; this module only opens
//! files and reports which file and line was wrong.

use crate::config::os_error_text;
use std::io::Write;
use std::path::PathBuf;

use crate::event::{ConnId, Side};
use crate::view::ladder::{LadderOptions, render};
use crate::view::trace::{self, Run};
use crate::view::{mermaid, svg};

/// What `closelab ladder` was asked to do.
#[derive(Clone, Debug)]
pub struct LadderJob {
    /// The JSON lines; `-` is stdin.
    pub input: PathBuf,
    pub conn: Option<ConnId>,
    /// `--story N`: [`trace::pick`].
    pub story: Option<usize>,
    pub unicode: bool,
    pub mermaid: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    pub svg_counts: Option<PathBuf>,
    /// Whose states `--svg-counts` counts.
    pub counts_side: Side,
}

/// Runs the job; errors are one line for `main` (`trace.jsonl:17: missing
/// key "t"`).
pub fn run(job: &LadderJob, out: &mut dyn Write) -> Result<(), String> {
    let stdin = job.input.as_os_str() == "-";
    let name = if stdin { "stdin".to_string() } else { job.input.display().to_string() };
    use crate::sys::files::{self, MAX_JSONL, MAX_JSONL_LINE};
    let bytes = if stdin {
        files::read_capped(std::io::stdin().lock(), MAX_JSONL, &name)
    } else {
        files::read_regular(&job.input, MAX_JSONL, &name)
    }
    .map_err(|e| e.to_string())?;
    files::check_lines(&bytes, MAX_JSONL_LINE, &name).map_err(|e| e.to_string())?;
    let runs = trace::read(&bytes).map_err(|e| format!("{name}:{}: {}", e.line, e.message))?;
    if runs.is_empty() {
        return Err(format!(
            "{name}: no events (expected the JSON lines of `closelab listen/connect/demo/scenario run --json`)"
        ));
    }
    let titles = || runs.iter().enumerate().map(|(i, r)| title(r, i)).collect::<Vec<_>>().join(", ");
    let mut chosen: Vec<(usize, &Run)> = match job.story {
        Some(n) => {
            let i = trace::pick(&runs, n).ok_or_else(|| format!("{name} has no story {n} (it has: {})", titles()))?;
            vec![(i, &runs[i])]
        }
        None => runs.iter().enumerate().collect(),
    };
    if let Some(c) = job.conn {
        let all: Vec<(usize, &Run)> = chosen.clone();
        chosen.retain(|(_, r)| r.conns().contains(&c));
        if chosen.is_empty() {
            let mut have: Vec<ConnId> = all.iter().flat_map(|(_, r)| r.conns()).collect();
            have.sort_unstable();
            have.dedup();
            let have: Vec<String> = have.iter().map(|c| format!("#{c}")).collect();
            return Err(format!("{name} has no connection #{c} (it has: {})", have.join(" ")));
        }
    }
    let files = [&job.mermaid, &job.svg, &job.svg_counts].iter().any(|f| f.is_some());
    if files && chosen.len() > 1 {
        return Err(format!(
            "{name} holds {} runs ({}); --mermaid, --svg and --svg-counts draw one: add --story N",
            chosen.len(),
            chosen.iter().map(|(i, r)| title(r, *i)).collect::<Vec<_>>().join(", ")
        ));
    }

    // Files first: an error then leaves stdout empty.
    if let Some((_, run)) = chosen.first() {
        let write = |path: &PathBuf, body: String| {
            std::fs::write(path, body).map_err(|e| format!("cannot write {}: {}", path.display(), os_error_text(&e)))
        };
        if let Some(p) = &job.mermaid {
            write(p, mermaid::render(&run.events, job.conn))?;
        }
        if let Some(p) = &job.svg {
            write(p, svg::ladder(&run.events, job.conn))?;
        }
        if let Some(p) = &job.svg_counts {
            write(p, svg::counts(&run.events, job.counts_side))?;
        }
    }
    let opts = LadderOptions { conn: job.conn, unicode: job.unicode, ..LadderOptions::default() };
    let headed = runs.len() > 1 || chosen.iter().any(|(_, r)| r.title.is_some());
    let mut text = String::new();
    for (n, (i, run)) in chosen.iter().enumerate() {
        if n > 0 {
            text.push('\n');
        }
        if headed {
            text.push_str(&crate::view::ladder::one_line(&title(run, *i)));
            text.push('\n');
        }
        text.push_str(&render(&run.events, &opts));
    }
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| format!("writing output: {e}"))?;

    Ok(())
}

/// A run's heading: its title, or `run N`.
fn title(run: &Run, i: usize) -> String {
    run.title.clone().unwrap_or_else(|| format!("run {}", i + 1))
}
