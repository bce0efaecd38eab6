//! The crawler's and `lab serve`'s command-line mistakes, no root needed:
//! each exits 2 with one line `closelab: …` naming what was wrong. As root,
//! each command runs in a throwaway network namespace (`unshare --net`), so
//! a validation bug could not start anything in the host's namespace.

use std::process::Command;

use crate::util::{BIN, expect_error};

fn closelab(args: &[&str]) -> Command {
    let mut c = if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("unshare");
        c.args(["--net", "--", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    c.args(args);
    c
}

/// `closelab connect 10.201.0.1:80 --tun cl0 --addr 10.201.0.2/24 EXTRA…`.
fn crawl(extra: &[&str]) -> Command {
    let mut args = vec!["connect", "10.201.0.1:80", "--tun", "cl0", "--addr", "10.201.0.2/24"];
    args.extend(extra);
    closelab(&args)
}

#[test]
fn test_get_paths_validated() {
    assert_eq!(
        expect_error(&mut crawl(&["--app", "get:files/1"]), "invalid path"),
        "closelab: invalid path `files/1`: it must start with /"
    );
    expect_error(&mut crawl(&["--app", "get:"]), "names no path");
    expect_error(&mut crawl(&["--app", "http"]), "to fetch from a server use --app get:/PATH");
    expect_error(&mut crawl(&["--app", "get:/a b"]), "escape it as %XX");
    expect_error(
        &mut closelab(&["listen", "--tun", "cl0", "--addr", "10.201.0.2/24", "--port", "80", "--app", "get:/a"]),
        "it runs with `closelab connect`",
    );
}

#[test]
fn test_crawler_numbers_validated() {
    expect_error(&mut crawl(&["--app", "get:/a", "--pool", "0"]), "invalid --pool 0 (1 to 10000)");
    expect_error(&mut crawl(&["--app", "get:/a", "--rate", "0"]), "invalid --rate 0");
    expect_error(&mut crawl(&["--app", "get:/a", "--rate", "nan"]), "invalid --rate NaN");
    expect_error(&mut crawl(&["--app", "get:/a", "--rate=-3"]), "invalid --rate -3");
    expect_error(&mut crawl(&["--app", "get:/a", "--max-conns", "0"]), "--max-conns must be at least 1");
    expect_error(&mut crawl(&["--app", "get:/a", "--evict-idle", "0s"]), "--evict-idle must be longer than 0s");
    expect_error(&mut crawl(&["--app", "get:/a", "--http-timeout", "5"]), "invalid duration `5`");
    expect_error(&mut crawl(&["--app", "get:/a", "--http", "2"]), "invalid value '2' for '--http");
    expect_error(&mut crawl(&["--app", "get:/a", "--on-error", "ignore"]), "invalid value 'ignore' for '--on-error");
    expect_error(&mut crawl(&["--app", "get:/a", "--count", "3"]), "--send and --count do not apply");
    let mut v6 = closelab(&["connect", "[fd00::1]:80", "--tun", "cl0", "--addr", "10.201.0.2/24", "--app", "get:/a"]);
    expect_error(&mut v6, "no --addr of the same IP family");
}

#[test]
fn test_url_file_errors_name_the_line() {
    let dir = std::env::temp_dir().join(format!("closelab-urls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("urls.txt");
    std::fs::write(&f, "# crawl\n/files/1\nfiles/2\n").unwrap();
    let name = f.display().to_string();
    let line = expect_error(&mut crawl(&["--urls", &name]), "invalid path");
    assert_eq!(line, format!("closelab: {name}:3: invalid path `files/2`: it must start with /"));
    std::fs::write(&f, "# only a comment\n").unwrap();
    expect_error(&mut crawl(&["--urls", &name]), "no URL in the file");
    std::fs::write(&f, "https://x/a\n").unwrap();
    expect_error(&mut crawl(&["--urls", &name]), "https is not supported");
    expect_error(&mut crawl(&["--urls", &format!("{name}.missing")]), "cannot read URL list");
    expect_error(&mut crawl(&["--urls", &name, "--app", "echo"]), "leave out --app echo");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn test_lab_serve_errors() {
    expect_error(
        &mut closelab(&["lab", "serve", "x", "iis"]),
        "unknown web server `iis` (expected apache, nginx or python)",
    );
    expect_error(
        &mut closelab(&["lab", "serve", "x", "nginx", "--keepalive-timeout", "0s"]),
        "--keepalive-timeout must be above 0s",
    );
    expect_error(&mut closelab(&["lab", "serve", "x", "nginx", "--port", "0"]), "invalid port 0");
    expect_error(&mut closelab(&["lab", "serve", "Bad_Name", "nginx"]), "invalid lab name");
    expect_error(&mut closelab(&["lab", "serve", "nolab9", "nginx"]), "nolab9");
}
