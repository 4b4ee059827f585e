//! The house's walls (issue 18), read from the sources: a module that
//! crosses one fails here, naming the file and the line. Each allow-list
//! can only shrink: a file on it that no longer needs it fails too.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, sorted.
fn sources(dir: &Path) -> Vec<PathBuf> {
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
    let servers: Vec<PathBuf> = sources(&src().join("center"))
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
    for file in sources(&src().join("protocol")) {
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
/// Those still longer are listed, each to be split; the list can only
/// shrink.
#[test]
fn no_source_file_is_long_but_for_its_tests() {
    const MOST: usize = 700;
    const NOT_YET: [&str; 2] = ["live/server.rs", "patient.rs"];
    let mut long = Vec::new();
    for file in sources(&src()) {
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
