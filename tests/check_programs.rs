//! `check` at the edges and with programs it starts itself: nothing
//! listening, a silent center, a center program that crashes and is
//! restarted, and patient programs judged on the wire (issue 10).

use crate::support;
use crate::support::fakes;

use std::io::Write as _;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::support::{System, bin, output};

/// A port free now (bound, then released for the program to bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn python_script(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `check` of the python center program `text`, which check starts itself
/// on a free port: classic dialect, a race of 4, `system`'s doctors, and
/// `extra` flags.
fn check_python_center(system: &System, text: &str, extra: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let script = python_script(&dir, "center.py", text);
    let port = free_port();
    output(
        bin()
            .args([
                "check",
                "--center",
                &format!("127.0.0.1:{port}"),
                "--center-cmd",
                &format!("exec python3 {script} {port}"),
                "--dialect",
                "classic",
                "--race",
                "4",
                "--doctor",
                &format!("doc1={}", system.doctor("doc1")),
                "--doctor",
                &format!("doc2={}", system.doctor("doc2")),
            ])
            .args(extra),
    )
}

#[test]
fn nothing_listening_is_one_line_and_exit_2() {
    let port = free_port();
    let started = Instant::now();
    let (code, stdout, stderr) =
        output(bin().args(["check", "--center", &format!("127.0.0.1:{port}")]));
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!("nothing accepts connections at 127.0.0.1:{port}: is the center running?\n")
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_silent_center_is_bounded_and_blocks_the_rest() {
    let system = System::start();
    let silent = fakes::silent_center();
    let started = Instant::now();
    let (code, stdout, stderr) = output(bin().args([
        "check",
        "--center",
        &silent.to_string(),
        "--doctor",
        &format!("doc1={}", system.doctor("doc1")),
        "--doctor",
        &format!("doc2={}", system.doctor("doc2")),
    ]));
    let took = started.elapsed();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(
        stdout.contains("no list was read from the center"),
        "{stdout}"
    );
    let first = support::check_line(&stdout, "FAIL", "auth-failure").unwrap_or_default();
    assert!(
        first.contains("the center accepts connections but answered nothing"),
        "{stdout}"
    );
    // Connecting and closing is a case of its own, and it did no harm.
    assert!(
        support::has_check_line(&stdout, "PASS", "connect and close without a word"),
        "{stdout}"
    );
    assert!(
        support::has_check_line(&stdout, "NOT RUN", "auth-success")
            && stdout.contains(
                "not run: the center accepts connections but answered nothing (case 'auth-failure')"
            ),
        "{stdout}"
    );
    assert!(
        support::has_check_line(&stdout, "PASS", "doc1 quotes insurance1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("summary: 10 passed, 1 failed, 8 skipped, 30 not run\nincomplete: 30 cases could not run, the race among them"),
        "{stdout}"
    );
}

#[test]
fn a_center_launched_by_check_crashes_is_named_restarted_and_a_later_defect_found() {
    let system = System::start();
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let gradescope = dir.path().join("results.json");
    let (code, stdout, stderr) = check_python_center(
        &system,
        fakes::CRASHING_CENTER_PY,
        &[
            "--junit",
            &junit.display().to_string(),
            "--gradescope",
            &gradescope.display().to_string(),
        ],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    let line = |verdict: &str, name: &str| {
        support::check_line(&stdout, verdict, name)
            .unwrap_or_else(|| panic!("no {verdict} line for {name:?} in {stdout}"))
            .to_owned()
    };
    // The crash is blamed on the input that caused it, once.
    let crash = line("FAIL", "malformed: empty message (before any good login)");
    assert!(
        crash.contains("the center died with SIGSEGV on ''; its last output: listening on")
            && crash.contains("empty message: crashing; restarted it with fresh state"),
        "{crash}"
    );
    assert_eq!(stdout.matches("died with").count(), 2, "{stdout}");
    // After the restart, the cases go on and find the later defect.
    let later = line("FAIL", "before login: available");
    assert!(
        later.contains("slots listed on a connection that never logged in"),
        "{later}"
    );
    line("PASS", "still serves a normal session");
    assert!(!stdout.contains("NOT RUN"), "{stdout}");

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(
            "<testcase classname=\"malformed\" name=\"malformed/empty: malformed: empty message (before any good login)\" time=\""
        ),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"the center died with SIGSEGV"),
        "{xml}"
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&gradescope).unwrap()).unwrap();
    let tests = results["tests"].as_array().unwrap();
    let empty = tests
        .iter()
        .find(|t| t["name"] == "malformed/empty: malformed: empty message (before any good login)")
        .unwrap();
    assert_eq!(empty["score"], 0.0);
    assert_eq!(empty["max_score"], 1.0);
    assert_eq!(empty["status"], "failed");
}

/// `check --patient-cmd` with the python patient, env adding to its
/// environment; the findings as (id, verdict, evidence).
fn patient_check(env: &[(&str, &str)], timeout: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let script = python_script(&dir, "patient.py", fakes::PATIENT_PY);
    let mut cmd = bin();
    cmd.args([
        "check",
        "--center",
        "127.0.0.1:0",
        "--doctor",
        "doc1=127.0.0.1:0",
        "--doctor",
        "doc2=127.0.0.1:0",
        "--patient-timeout",
        timeout,
        "--patient-cmd",
        &format!("exec python3 {script}"),
    ]);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let (code, stdout, stderr) = output(&mut cmd);
    (code, format!("{stdout}{stderr}"))
}

/// `VERDICT name` of each case line.
fn verdict_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(support::check_fields)
        .map(|f| format!("{} {}", f[0], f.get(2).map_or("", String::as_str)))
        .collect()
}

#[test]
fn a_good_patient_program_passes() {
    let (code, out) = patient_check(&[], "10s");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        verdict_lines(&out),
        vec![
            "PASS patient: sends 'authenticate USER PASS'",
            "PASS patient: then 'available'",
            "PASS patient: sends nothing for an invalid choice",
            "PASS patient: sends 'selection N' for the choice",
            "PASS patient: asks the doctor the center named",
            "PASS patient: exits after its visit",
            "PASS patient: stops after 'failure'",
            "PASS patient: stops after 'notavailable'",
        ],
        "{out}"
    );
}

#[test]
fn a_patient_sending_its_plan_to_the_wrong_port_fails() {
    let (code, out) = patient_check(&[("PORT_OFFSET", "720")], "10s");
    assert_eq!(code, 1, "{out}");
    let line = support::check_line(&out, "FAIL", "patient: asks the doctor the center named")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("no datagram reached doc2 at 127.0.0.1:")
            && line.contains(
                "a patient that adds to the port it is given (the seed adds 720) needs \
                 --patient-port-offset with that number"
            ),
        "{line}"
    );
    assert_eq!(out.matches("FAIL").count(), 1, "{out}");
}

#[test]
fn several_patient_programs_share_one_report_without_overwriting() {
    let dir = tempfile::tempdir().unwrap();
    let script = python_script(&dir, "patient.py", fakes::PATIENT_PY);
    let junit = dir.path().join("junit.xml");
    let (code, stdout, stderr) = output(bin().args([
        "check",
        "--center",
        "127.0.0.1:0",
        "--doctor",
        "doc1=127.0.0.1:0",
        "--doctor",
        "doc2=127.0.0.1:0",
        "--patient-cmd",
        &format!("exec python3 {script}"),
        "--patient-cmd",
        &format!("PORT_OFFSET=720 exec python3 {script}"),
        "--junit",
        &junit.display().to_string(),
    ]));
    assert_eq!(code, 1, "{stdout}{stderr}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    // Both programs' cases, each under its own prefix; only the second's
    // doctor case fails.
    assert!(
        xml.contains("name=\"patient1/patient/doctor: exec python3"),
        "{xml}"
    );
    assert!(
        xml.contains("name=\"patient2/patient/doctor: PORT_OFFSET=720"),
        "{xml}"
    );
    assert_eq!(xml.matches("<failure").count(), 1, "{xml}");
    assert!(
        stdout.starts_with("medsim check: patient programs `exec python3"),
        "{stdout}"
    );
}

#[test]
fn a_patient_that_never_exits_is_killed_and_failed_in_bounded_time() {
    let started = Instant::now();
    let (code, out) = patient_check(&[("NEVER_EXITS", "1")], "1s");
    assert_eq!(code, 1, "{out}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        verdict_lines(&out)
            .iter()
            .filter(|l| l.starts_with("FAIL"))
            .cloned()
            .collect::<Vec<_>>(),
        vec![
            "FAIL patient: exits after its visit",
            "FAIL patient: stops after 'failure'",
            "FAIL patient: stops after 'notavailable'",
        ],
        "{out}"
    );
    assert!(
        out.contains("it was still running 1s after it started (killed)"),
        "{out}"
    );
}

#[test]
fn in_a_private_network_namespace_programs_keep_their_default_ports() {
    // The classic programs hard-code 21720/41720/42720: check --netns runs
    // them, and itself, where those ports are free whatever runs outside.
    let is_root = output(std::process::Command::new("id").arg("-u")).1.trim() == "0";
    if !is_root {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("check --netns needs root, and CI runs as root");
        }
        let _ = writeln!(
            std::io::stderr(),
            "skipped: check --netns needs root (a private network namespace)"
        );
        return;
    }
    let medsim = env!("CARGO_BIN_EXE_medsim");
    let (code, stdout, stderr) = output(bin().args([
        "check",
        "--netns",
        "--race",
        "5",
        "--cases",
        "auth,race,doctor",
        "--center-cmd",
        &format!("{medsim} center --quiet"),
        "--doctor-cmd",
        &format!("{medsim} doctor --quiet"),
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("medsim check: center 127.0.0.1:21720 "),
        "{stdout}"
    );
    assert!(
        support::has_check_line(
            &stdout,
            "PASS",
            "race of 5 clients for one slot (reserves 1 slot)"
        ),
        "{stdout}"
    );
    assert!(
        support::has_check_line(&stdout, "PASS", "doc1 quotes insurance1"),
        "{stdout}"
    );
}

/// Polls `done` until it holds or `within` passes; whether it held.
fn eventually(within: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

#[test]
fn sigterm_to_check_stops_the_programs_it_started() {
    use medsim::check::sockets::{Transport, served};
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // A center that accepts one connection and then says nothing for a
    // minute, still bound: check waits on it when the signal comes.
    let center = format!(
        "exec python3 -c 'import socket, time\n\
         s = socket.socket(); s.bind((\"127.0.0.1\", {port})); s.listen()\n\
         c = s.accept(); time.sleep(60)'"
    );
    let mut check = bin()
        .args([
            "check",
            "--center",
            &addr.to_string(),
            "--center-cmd",
            &center,
            "--timeout",
            "30s",
            "--doctor",
            "doc1=127.0.0.1:9",
            "--doctor",
            "doc2=127.0.0.1:9",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || served(Transport::Tcp, addr)),
        "check started the center"
    );
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(check.id() as i32, libc::SIGTERM);
    }
    let status = check.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(
        eventually(Duration::from_secs(5), || !served(Transport::Tcp, addr)),
        "the center check started outlived it, still bound to {addr}"
    );
}

#[test]
fn a_program_that_cannot_start_is_reported_never_replaced_by_what_answers_on_its_port() {
    let system = System::start();
    // Something else already serves the port the program would take.
    let (code, stdout, stderr) = output(bin().args([
        "check",
        "--center",
        &system.center.to_string(),
        "--center-cmd",
        "exec sleep 30",
        "--doctor",
        &format!("doc1={}", system.doctor("doc1")),
        "--doctor",
        &format!("doc2={}", system.doctor("doc2")),
    ]));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "not run: something already serves {} before check started the center",
            system.center
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("PASS  auth/"), "{stdout}");
    assert!(
        support::has_check_line(&stdout, "PASS", "doc1 quotes insurance1"),
        "{stdout}"
    );
}

#[test]
fn a_center_that_dies_of_a_silent_close_is_blamed_once_and_rebinds_without_reuseaddr() {
    let system = System::start();
    let (code, stdout, stderr) = check_python_center(&system, fakes::SEED_LIKE_CENTER_PY, &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let line = support::check_line(&stdout, "FAIL", "connect and close without a word")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains(
            "the center died with SIGSEGV on a connection closed without a word; \
             its last output: listening on"
        ) && line.contains("restarted it with fresh state"),
        "{line}"
    );
    // The only FAIL: no probe of check's killed it again, the restart
    // bound the port though the program sets no SO_REUSEADDR, and every
    // other case ran against it.
    assert_eq!(stdout.matches("FAIL").count(), 1, "{stdout}");
    assert!(!stdout.contains("NOT RUN"), "{stdout}");
    assert!(!stdout.contains("Address already in use"), "{stdout}");
    assert!(
        support::has_check_line(&stdout, "PASS", "booking (reserves 1 slot)"),
        "{stdout}"
    );
    assert!(
        support::has_check_line(&stdout, "WARN", "wording: nothing after an answer's end"),
        "{stdout}"
    );
}

/// Issue 15: a center that dies whenever a client closes (as two real
/// ones do) is blamed once, on the close, never on a message it had not
/// read or on the next case's first words; check's own list before the
/// booking and the race does not sink them; a race it cannot live through
/// is said not to have run.
#[test]
fn a_center_that_dies_of_every_close_is_blamed_on_the_close_once() {
    let system = System::start();
    let (code, stdout, stderr) =
        check_python_center(&system, fakes::CLOSE_DYING_CENTER_PY, &["--timeout", "1s"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let line = |verdict: &str, name: &str| {
        support::check_line(&stdout, verdict, name)
            .unwrap_or_else(|| panic!("no {verdict} line for {name:?} in {stdout}"))
            .to_owned()
    };
    // Two inputs kill it, each blamed once, where it first happened.
    assert!(
        line("FAIL", "connect and close without a word")
            .contains("the center died with SIGSEGV on a connection closed without a word;"),
        "{stdout}"
    );
    assert!(
        line("FAIL", "auth-failure").contains(
            "the center died with SIGSEGV on the close of a connection after its messages;"
        ),
        "{stdout}"
    );
    // Never on a message: not the next case's first words, not a message
    // waiting behind the session whose close killed it.
    assert!(!stdout.contains("died with SIGSEGV on '"), "{stdout}");
    assert_eq!(
        stdout.matches("FAIL  ").count(),
        4,
        "the two deaths, and silence to a wrong login twice: {stdout}"
    );
    line("FAIL", "auth-failure: unknown user");
    line("FAIL", "bad credentials right after another login");
    // check's own list before the booking does not sink it, and the race
    // is not failed for a death it did not cause.
    line("PASS", "booking (reserves 1 slot)");
    assert!(
        support::check_line(&stdout, "FAIL", "race of 4 clients").is_none(),
        "{stdout}"
    );
}

/// Issue 15: two doctors started by one command, each dying of the same
/// datagram, are two defects: each doctor's death is blamed on the
/// datagram sent to it, never passed as "blamed before".
#[test]
fn each_doctor_started_by_one_command_is_blamed_for_its_own_death() {
    let system = System::start();
    let dir = tempfile::tempdir().unwrap();
    let script = python_script(&dir, "doctor.py", fakes::DYING_DOCTOR_PY);
    let (doc1, doc2) = (free_udp_port(), free_udp_port());
    let (code, stdout, stderr) = output(bin().args([
        "check",
        "--center",
        &system.center.to_string(),
        "--cases",
        "doctor",
        "--timeout",
        "1s",
        "--doctor-cmd",
        &format!("python3 {script} {doc1} 30 & exec python3 {script} {doc2} 40"),
        "--doctor",
        &format!("doc1={doc1}"),
        "--doctor",
        &format!("doc2={doc2}"),
    ]));
    assert_eq!(code, 1, "{stdout}{stderr}");
    for doctor in ["doc1", "doc2"] {
        let line = support::check_line(
            &stdout,
            "FAIL",
            &format!("{doctor} refuses an unknown plan"),
        )
        .unwrap_or_else(|| panic!("{stdout}"));
        assert!(
            line.contains(&format!(
                "on the datagram 'medsim-check-no-such-plan' to {doctor}"
            )),
            "{line}"
        );
    }
    assert!(!stdout.contains("(blamed before)"), "{stdout}");
}

/// A UDP port free now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Issue 15, from the review: a no-login case walks the framing sessions
/// go in (lines, here) and then the configured one (C strings). When the
/// second walk only fails to connect (the center, which check did not
/// start, died of the first), that is no finding that the center serves C
/// strings without a login: the case says the walk could not be checked,
/// and the death is blamed on its input.
#[test]
fn a_second_walk_that_cannot_connect_is_not_called_a_login_bypass() {
    let system = System::start();
    let dir = tempfile::tempdir().unwrap();
    let script = python_script(
        &dir,
        "center.py",
        fakes::LINE_LOGIN_CENTER_DYING_OF_AVAILABLE_PY,
    );
    let port = free_port();
    let mut center = std::process::Command::new("python3")
        .args([&script, &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kept open to the end: the program prints as it dies.
    let mut said = std::io::BufReader::new(center.stdout.take().unwrap());
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut said, &mut ready).unwrap();
    assert_eq!(ready, format!("listening on {port}\n"));
    let (_, stdout, stderr) = output(bin().args([
        "check",
        "--center",
        &format!("127.0.0.1:{port}"),
        "--dialect",
        "classic",
        "--timeout",
        "3s",
        "--cases",
        "auth/success,login/available",
        "--doctor",
        &format!("doc1={}", system.doctor("doc1")),
        "--doctor",
        &format!("doc2={}", system.doctor("doc2")),
    ]));
    let _ = center.kill();
    let _ = center.wait();
    drop(said);
    let line = support::check_line(&stdout, "FAIL", "before login: available")
        .unwrap_or_else(|| panic!("no FAIL line for login/available in {stdout}\n---\n{stderr}"));
    assert!(
        line.contains("the center is gone (nothing listens at ")
            && line.contains(" any more) on 'available';"),
        "{stdout}"
    );
    assert!(
        line.contains(
            "in classic, the configured framing, it could not be checked: cannot connect"
        ),
        "{stdout}"
    );
    assert!(!line.contains("also serves"), "{stdout}");
}
