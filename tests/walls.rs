//! The house's walls (issue 18), read from the sources: a module that
//! crosses one fails here, naming the file and the line. An allow-list
//! can only shrink: a file on it that no longer needs it fails too.
//!
//! - The command line (ripgrep's crates/core/flags/): clap and the `cli`
//!   module are named only in `src/cli/` and `src/main.rs`; every other
//!   module takes plain options, with no exception left.
//! - The servers name no module of the classroom; the protocol does no
//!   I/O; no source file is long but for its tests.

use std::path::{Path, PathBuf};

/// Where clap may be named, and `crate::cli` used.
const INSIDE_THE_WALL: [&str; 2] = ["src/cli/", "src/main.rs"];

/// One line that names clap or the cli module.
#[derive(Debug)]
struct Breach {
    file: String,
    line: usize,
    text: String,
}

impl std::fmt::Display for Breach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.text.trim())
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// True when `text` has `path` as a whole path (`crate::cli` but not
/// `crate::client`).
fn has_path(text: &str, path: &str) -> bool {
    text.match_indices(path).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + path.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// The lines of `source` that name clap or reach the cli module: by path
/// (`crate::cli`, `super::cli`) or inside a grouped `use crate::{cli, ..}`.
fn breaches(file: &str, source: &str) -> Vec<Breach> {
    let mut found = Vec::new();
    let mut in_group = false;
    for (at, text) in source.lines().enumerate() {
        let opens_group = text.contains("use crate::{") || text.contains("use super::{");
        let grouped_cli = (in_group || opens_group)
            && text.split(|c: char| !is_ident(c)).any(|word| word == "cli");
        if text.contains("clap")
            || has_path(text, "crate::cli")
            || has_path(text, "super::cli")
            || grouped_cli
        {
            found.push(Breach {
                file: file.to_owned(),
                line: at + 1,
                text: text.to_owned(),
            });
        }
        if opens_group {
            in_group = true;
        }
        if in_group && text.contains(';') {
            in_group = false;
        }
    }
    found
}

/// Every `.rs` file under `dir`, named from `root` (`src/...`).
fn sources(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            sources(root, &path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            files.push((name, path));
        }
    }
}

#[test]
fn clap_and_cli_are_named_only_behind_the_wall() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(root, &root.join("src"), &mut files);
    files.sort();
    assert!(
        files.iter().any(|(name, _)| name == "src/main.rs"),
        "the sources were not found under {}",
        root.display()
    );
    let mut outside = Vec::new();
    for (name, path) in &files {
        if INSIDE_THE_WALL
            .iter()
            .any(|inside| name.starts_with(inside))
        {
            continue;
        }
        let source = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        outside.extend(breaches(name, &source));
    }
    let shown: Vec<String> = outside.iter().map(ToString::to_string).collect();
    assert!(
        shown.is_empty(),
        "clap or the cli module named outside src/cli/ and src/main.rs (give the module plain options, and read its flags in src/cli/):\n{}",
        shown.join("\n")
    );
}

#[test]
fn the_wall_sees_clap_and_every_way_to_the_cli_module() {
    let source = "\
use crate::client::{Conversation, DoctorLink};
use crate::cli::Framing;
#[derive(Debug, clap::Args)]
use crate::{
    cli, data,
};
fn f() -> super::cli::DoctorsArgs {}
let clients = crate::client::Retries::default();
// the doctor's flags are `cli::doctor`'s
";
    let lines: Vec<usize> = breaches("src/x.rs", source)
        .iter()
        .map(|breach| breach.line)
        .collect();
    assert_eq!(lines, [2, 3, 5, 7]);
    assert_eq!(
        breaches("src/x.rs", "use crate::cli;\n")[0].to_string(),
        "src/x.rs:1: use crate::cli;"
    );
}

/// Every `.rs` file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `path` relative to src/, with `/` separators.
fn shown(path: &Path) -> String {
    path.strip_prefix(src())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The lines of `path` (1-based) that contain any of `needles`, outside
/// comments.
fn lines_naming(path: &Path, needles: &[&str]) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).expect("a source file is readable");
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.trim_start();
            !code.starts_with("//") && needles.iter().any(|n| line.contains(n))
        })
        .map(|(k, line)| (k + 1, line.trim().to_owned()))
        .collect()
}

/// 18.2: the servers report through their own trait (`center::Watcher`);
/// they name no module of the classroom (the live view, simulate).
#[test]
fn servers_name_no_module_of_the_classroom() {
    let servers: Vec<PathBuf> = files_under(&src().join("center"))
        .into_iter()
        .chain([src().join("doctor.rs")])
        .collect();
    let mut crossings = Vec::new();
    for file in &servers {
        for (line, text) in lines_naming(file, &["crate::live", "live::", "crate::sim", "sim::"]) {
            crossings.push(format!("{}:{line}: {text}", shown(file)));
        }
    }
    assert!(crossings.is_empty(), "{crossings:#?}");
}

/// 18.4: the protocol is pure: no sockets, files, threads or clocks, so
/// its tests drive it with byte slices (httparse's shape).
#[test]
fn the_protocol_does_no_io() {
    let mut crossings = Vec::new();
    for file in files_under(&src().join("protocol")) {
        for (line, text) in lines_naming(
            &file,
            &[
                "std::net",
                "std::fs",
                "std::io",
                "std::thread",
                "Instant",
                "SystemTime",
            ],
        ) {
            crossings.push(format!("{}:{line}: {text}", shown(&file)));
        }
    }
    assert!(crossings.is_empty(), "{crossings:#?}");
}

/// 18.4: no file of src over about 700 lines but for the tests in it.
/// One that must stay longer for a while is listed, to be split; the list
/// can only shrink.
#[test]
fn no_source_file_is_long_but_for_its_tests() {
    const MOST: usize = 700;
    const NOT_YET: [&str; 0] = [];
    let mut long = Vec::new();
    for file in files_under(&src()) {
        let text = std::fs::read_to_string(&file).expect("a source file is readable");
        let code = text
            .lines()
            .take_while(|line| !line.starts_with("#[cfg(test)]"))
            .count();
        if code > MOST {
            long.push((shown(&file), code));
        }
    }
    let names: Vec<&str> = long.iter().map(|(name, _)| name.as_str()).collect();
    for name in &names {
        assert!(
            NOT_YET.contains(name),
            "{name} is over {MOST} lines: split it ({long:?})"
        );
    }
    for name in NOT_YET {
        assert!(
            names.contains(&name),
            "{name} is {MOST} lines or fewer now: take it off the list"
        );
    }
}

/// 18.3: a free list is rendered in one place, `protocol::FreeList`'s
/// `from_rows`; every other module only holds or sends one.
#[test]
fn the_free_list_has_one_renderer() {
    let mut crossings = Vec::new();
    for file in files_under(&src()) {
        if shown(&file) == "protocol/listing.rs" {
            continue;
        }
        // A literal `FreeList { .. }` builds one; `-> FreeList {` returns one.
        for (line, text) in lines_naming(&file, &["FreeList {"]) {
            if !text.contains("-> FreeList {") {
                crossings.push(format!("{}:{line}: {text}", shown(&file)));
            }
        }
    }
    assert!(crossings.is_empty(), "{crossings:#?}");
}

/// 18.5: the slot table in memory lives under the store it implements.
#[test]
fn the_memory_store_lives_under_the_store() {
    let mut defined = Vec::new();
    for file in files_under(&src()) {
        if !lines_naming(&file, &["pub struct SlotBook"]).is_empty() {
            defined.push(shown(&file));
        }
    }
    assert_eq!(defined, ["store/memory.rs"]);
}
