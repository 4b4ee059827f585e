//! Fakes of the classic C programs of this exercise, written by us from
//! their measured wire behaviour (PROTOCOL.md, "Classic programs as they
//! are"), never from their code: a center whose words, lists, greeting
//! and grants vary as theirs do, the seed's patient with its exact reads
//! and its parser, and doctors that answer as theirs do.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a fake classic center words and frames its answers.
#[derive(Debug, Clone)]
pub struct CenterStyle {
    /// Sent on connect, before reading anything.
    pub greeting: Option<&'static str>,
    pub success: &'static str,
    pub not_available: &'static str,
    pub list: ListStyle,
    /// `DOCTOR PORT`, or the port alone.
    pub port_alone: bool,
    /// Answers padded with garbage to this many bytes (else text + NUL).
    pub pad: Option<usize>,
}

/// How a fake center separates the slots of a list.
#[derive(Debug, Clone, Copy)]
pub enum ListStyle {
    /// `1 Tue 01pm 2 Mon 03pm ` (the seed center).
    TrailingSpace,
    /// `1 Tue 01pm\n2 Mon 03pm\n`.
    OnePerLine,
    /// `1 Tue 01pm  .2 Mon 03pm  .`
    SpaceDot,
}

impl Default for CenterStyle {
    fn default() -> CenterStyle {
        CenterStyle {
            greeting: None,
            success: "success",
            not_available: "notavailable",
            list: ListStyle::TrailingSpace,
            port_alone: false,
            pad: None,
        }
    }
}

/// A slot of a fake center: index, day, time, doctor, port.
pub type FakeSlot = (u64, &'static str, &'static str, &'static str, u16);

/// A fake classic center (users patient1/password111 and
/// patient2/password222) on a free port; it serves until the test ends.
pub fn classic_center(style: CenterStyle, slots: Vec<FakeSlot>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let table = Arc::new(Mutex::new(
        slots.into_iter().map(|s| (s, false)).collect::<Vec<_>>(),
    ));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (table, style) = (Arc::clone(&table), style.clone());
            std::thread::spawn(move || classic_session(stream, &table, &style));
        }
    });
    addr
}

fn send_answer(stream: &mut TcpStream, style: &CenterStyle, text: &str) -> bool {
    let mut out = text.as_bytes().to_vec();
    out.push(0);
    if let Some(pad) = style.pad {
        while out.len() < pad {
            out.push(0xCD);
        }
    }
    stream.write_all(&out).is_ok()
}

type Table = Mutex<Vec<(FakeSlot, bool)>>;

fn classic_session(mut stream: TcpStream, table: &Table, style: &CenterStyle) {
    if let Some(greeting) = style.greeting
        && !send_answer(&mut stream, style, greeting)
    {
        return;
    }
    loop {
        let mut buf = [0xABu8; 100];
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let end = buf[..n].iter().position(|&b| b == 0).unwrap_or(n);
        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
        let words: Vec<&str> = text.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["authenticate", "patient1", "password111"]
            | ["authenticate", "patient2", "password222"] => style.success.to_owned(),
            ["authenticate", ..] => "failure".to_owned(),
            ["available"] => {
                let free: Vec<String> = table
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, taken)| !taken)
                    .map(|((i, day, time, _, _), _)| format!("{i} {day} {time}"))
                    .collect();
                if free.is_empty() {
                    style.not_available.to_owned()
                } else {
                    match style.list {
                        ListStyle::TrailingSpace => free.iter().map(|s| format!("{s} ")).collect(),
                        ListStyle::OnePerLine => free.iter().map(|s| format!("{s}\n")).collect(),
                        ListStyle::SpaceDot => free.iter().map(|s| format!("{s}  .")).collect(),
                    }
                }
            }
            ["selection", index] => {
                let mut table = table.lock().unwrap();
                let index: u64 = index.parse().unwrap_or(0);
                match table.iter_mut().find(|((i, ..), _)| *i == index) {
                    Some(((_, _, _, doctor, port), taken)) if !*taken => {
                        *taken = true;
                        if style.port_alone {
                            port.to_string()
                        } else {
                            format!("{doctor} {port}")
                        }
                    }
                    _ => style.not_available.to_owned(),
                }
            }
            _ => "error".to_owned(),
        };
        if !send_answer(&mut stream, style, &answer) {
            return;
        }
    }
}

/// A UDP doctor that answers every datagram with `answer` (empty for the
/// classic doctors that send an empty datagram); returns its address.
pub fn doctor_answering(answer: &'static [u8]) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(answer, from);
        }
    });
    addr
}

/// What the seed patient needs of a center, and what it did.
#[derive(Debug, Clone)]
pub struct SeedPatient {
    pub user: &'static str,
    pub password: &'static str,
    pub plan: &'static str,
    /// The index typed at its prompt.
    pub choice: u64,
    /// What it adds to the port the center names (the seed: 720).
    pub port_offset: u16,
}

/// A request as the seed patient sends it: the text and its NUL in a
/// 100-byte buffer, the rest `fill` (garbage for its first message, whose
/// buffer it never cleared; zeros for the others).
fn seed_buffer(text: &str, fill: u8) -> [u8; 100] {
    let mut buf = [fill; 100];
    buf[..text.len()].copy_from_slice(text.as_bytes());
    buf[text.len()] = 0;
    buf
}

/// The C string at the start of `buf`; `None` when no NUL is within it
/// (the seed patient would read past its buffer).
fn c_string(buf: &[u8]) -> Option<String> {
    let end = buf.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// One visit of the seed patient, as its code does it: one `recv()` per
/// answer, compared up to the NUL, the list walked space by space (a word
/// without a space after it is where the real one crashes), the doctor at
/// the port named plus its offset. Returns the cost it would print, or
/// what would go wrong for the real one.
pub fn seed_patient_visit(center: SocketAddr, patient: &SeedPatient) -> Result<String, String> {
    let mut stream = TcpStream::connect(center).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = seed_buffer(
        &format!("authenticate {} {}", patient.user, patient.password),
        0x5A,
    );
    stream.write_all(&auth).map_err(|e| e.to_string())?;
    // Its answer lands on the request, with one recv() of 99 bytes.
    let mut buf = auth;
    let n = stream
        .read(&mut buf[..99])
        .map_err(|e| format!("auth: {e}"))?;
    let answer = c_string(&buf).unwrap_or_default();
    if n == 0 || answer != "success" {
        return Err(format!("authentication result: failure ('{answer}')"));
    }

    stream
        .write_all(&seed_buffer("available", 0))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 100];
    let n = stream.read(&mut buf).map_err(|e| format!("list: {e}"))?;
    let list = c_string(&buf[..n.min(100)])
        .or_else(|| (n < 100).then(|| String::from_utf8_lossy(&buf[..n]).into_owned()))
        .ok_or("the list has no NUL within 100 bytes: it reads past its buffer")?;
    if list == "notavailable" {
        return Err("not available".into());
    }
    let indexes = seed_list_indexes(&list)?;
    if !indexes.contains(&patient.choice) {
        return Err(format!("{} is not listed in '{list}'", patient.choice));
    }

    stream
        .write_all(&seed_buffer(&format!("selection {}", patient.choice), 0))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 100];
    let n = stream
        .read(&mut buf)
        .map_err(|e| format!("selection: {e}"))?;
    let grant = c_string(&buf[..n.min(100)]).unwrap_or_default();
    if grant == "notavailable" {
        return Err("the requested appointment is not available".into());
    }
    let (_doctor, port) = grant.split_once(' ').ok_or(format!(
        "a port alone ('{grant}'): it dereferences NULL there (SIGSEGV)"
    ))?;
    let port: u16 = port.trim().parse().unwrap_or(0) + patient.port_offset;
    drop(stream);

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send_to(&seed_buffer(patient.plan, 0), ("127.0.0.1", port))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 100];
    let n = udp
        .recv(&mut buf)
        .map_err(|_| format!("no cost from port {port}: it would wait for ever"))?;
    c_string(&buf[..n.min(100)])
        .or_else(|| (n < 100).then(|| String::from_utf8_lossy(&buf[..n]).into_owned()))
        .ok_or_else(|| "a cost with no NUL within 100 bytes".to_owned())
}

/// The seed patient's list parser: every word, the last included, followed
/// by exactly one space; every third word an index of one digit; at most
/// six of them (its array holds six).
pub fn seed_list_indexes(list: &str) -> Result<Vec<u64>, String> {
    if !list.ends_with(' ') {
        return Err(format!(
            "no space after the last word of '{list}': the seed patient crashes (SIGSEGV)"
        ));
    }
    let words: Vec<&str> = list[..list.len() - 1].split(' ').collect();
    if words.iter().any(|w| w.is_empty() || w.contains('\n')) {
        return Err(format!("'{list}' is not single words and single spaces"));
    }
    if !words.len().is_multiple_of(3) {
        return Err(format!("'{list}' is not whole triples"));
    }
    let indexes: Vec<u64> = words
        .iter()
        .step_by(3)
        .map(|w| match w.as_bytes() {
            [d] if d.is_ascii_digit() => Ok(u64::from(d - b'0')),
            _ => Err(format!("index '{w}' is not one digit")),
        })
        .collect::<Result<_, _>>()?;
    if indexes.len() > 6 {
        return Err(format!("{} slots overflow its array of six", indexes.len()));
    }
    Ok(indexes)
}
