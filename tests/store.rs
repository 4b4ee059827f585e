//! The stores against real backends: races for one slot, cancels, unknown
//! slots, persistence across reopening, several handles (as several
//! processes or centers) on one file or database, and bounded failure on a
//! database that cannot be reached.
//!
//! PostgreSQL tests need `MEDSIM_TEST_POSTGRES` (see
//! `tests/support/postgres.rs`); each makes its own database.

use crate::support::postgres as postgres_support;

use std::net::TcpListener;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use medsim::data::{Fixtures, Slot, Source};
use medsim::store::memory::MemoryStore;
use medsim::store::postgres::PostgresStore;
use medsim::store::sqlite::SqliteStore;
use medsim::store::{DEFAULT_LIST_CAP, Reservation};
use medsim::store::{ErrorKind, Store, StoreUrl};

use crate::support::postgres::TestDb;

const RACERS: usize = 200;

fn slots() -> Vec<Slot> {
    Fixtures::load(&Source::built_in()).unwrap().slots
}

/// `RACERS` threads, released together, each asking one of `stores` (in
/// turn) for slot `index`. Returns (booked, taken).
fn race(stores: &[Arc<dyn Store>], index: u64) -> (usize, usize) {
    let barrier = Arc::new(Barrier::new(RACERS));
    let outcomes: Vec<Reservation> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..RACERS)
            .map(|n| {
                let store = Arc::clone(&stores[n % stores.len()]);
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || {
                    barrier.wait();
                    store
                        .reserve(index, &format!("patient{n}"))
                        .unwrap_or_else(|e| panic!("racer {n}: {e}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let booked = outcomes
        .iter()
        .filter(|o| matches!(o, Reservation::Booked { .. }))
        .count();
    let taken = outcomes
        .iter()
        .filter(|o| **o == Reservation::Taken)
        .count();
    (booked, taken)
}

fn assert_one_winner(stores: &[Arc<dyn Store>], index: u64) {
    let (booked, taken) = race(stores, index);
    assert_eq!((booked, taken), (1, RACERS - 1), "{}", stores[0].describe());
    let holders = stores[0].holders().unwrap();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0].0, index);
}

/// What every store must do with the classic six slots, from fresh.
fn basics(store: &dyn Store) {
    let all = "1 Tue 01pm 2 Mon 03pm 3 Thu 02pm 4 Wed 10am 5 Sat 12pm 6 Fri 04pm";
    assert_eq!(store.free_list().unwrap().line, all);
    assert_eq!(
        store.reserve(2, "patient1").unwrap(),
        Reservation::Booked {
            doctor: "doc2".into(),
            port: 42720
        }
    );
    assert_eq!(store.reserve(2, "patient2").unwrap(), Reservation::Taken);
    assert_eq!(
        store.reserve(7, "patient2").unwrap(),
        Reservation::NoSuchSlot
    );
    assert_eq!(
        store.reserve(u64::MAX, "patient2").unwrap(),
        Reservation::NoSuchSlot
    );
    let list = store.free_list().unwrap();
    assert!(!list.line.contains("2 Mon"), "{}", list.line);
    assert_eq!(list.listed, 5);
    assert_eq!(list.classic, format!("{} ", list.line));
    assert_eq!(store.holders().unwrap(), [(2, "patient1".to_owned())]);
    assert!(
        !store.cancel(2, "patient2").unwrap(),
        "only the holder cancels"
    );
    assert!(!store.cancel(9, "patient1").unwrap());
    assert!(store.cancel(2, "patient1").unwrap());
    assert!(!store.cancel(2, "patient1").unwrap());
    assert_eq!(store.free_list().unwrap().line, all);
    assert_eq!(store.holders().unwrap(), []);
    assert!(matches!(
        store.reserve(2, "patient2").unwrap(),
        Reservation::Booked { .. }
    ));
}

/// A store listing every slot of a big table as `SlotBook` does.
fn lists_like_the_slot_book(store: &dyn Store, slots: &[Slot]) {
    let book = medsim::store::memory::SlotBook::new(slots, DEFAULT_LIST_CAP);
    for index in [1, 2, 30, 51] {
        assert_eq!(
            store.reserve(index, "p").unwrap(),
            book.reserve(index, "p"),
            "slot {index}"
        );
    }
    assert_eq!(*store.free_list().unwrap(), *book.free_list());
}

fn many_slots() -> Vec<Slot> {
    (1..=300)
        .map(|index| Slot {
            index,
            day: ["Mon", "Tue", "Wed"][index as usize % 3].into(),
            time: "10am".into(),
            doctor: format!("doc{}", index % 2 + 1),
            port: 41720,
        })
        .collect()
}

// memory

#[test]
fn memory_basics() {
    basics(&MemoryStore::new(&slots(), DEFAULT_LIST_CAP));
    lists_like_the_slot_book(
        &MemoryStore::new(&many_slots(), DEFAULT_LIST_CAP),
        &many_slots(),
    );
}

#[test]
fn memory_race_has_one_winner() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(&slots(), DEFAULT_LIST_CAP));
    assert_one_winner(&[store], 3);
}

#[test]
fn store_urls_open_the_store_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let memory = medsim::store::open(&StoreUrl::parse("memory").unwrap(), &slots(), 50).unwrap();
    assert!(memory.describe().contains("memory"));
    let file = dir.path().join("slots.db");
    let url = StoreUrl::parse(&format!("sqlite://{}", file.display())).unwrap();
    let sqlite = medsim::store::open(&url, &slots(), 50).unwrap();
    assert!(
        sqlite.describe().contains("slots.db"),
        "{}",
        sqlite.describe()
    );
    assert!(file.exists());
}

// sqlite

fn sqlite_at(path: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(path, &slots(), DEFAULT_LIST_CAP).unwrap())
}

#[test]
fn sqlite_basics() {
    let dir = tempfile::tempdir().unwrap();
    basics(&*sqlite_at(&dir.path().join("db")));
    let big = SqliteStore::open(&dir.path().join("big"), &many_slots(), DEFAULT_LIST_CAP).unwrap();
    lists_like_the_slot_book(&big, &many_slots());
}

#[test]
fn sqlite_race_has_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    assert_one_winner(&[sqlite_at(&dir.path().join("db"))], 3);
}

#[test]
fn sqlite_reservations_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = sqlite_at(&path);
    store.reserve(4, "patient1").unwrap();
    store.reserve(6, "patient2").unwrap();
    store.cancel(6, "patient2").unwrap();
    drop(store);
    let store = sqlite_at(&path);
    assert_eq!(store.holders().unwrap(), [(4, "patient1".to_owned())]);
    assert_eq!(store.reserve(4, "patient3").unwrap(), Reservation::Taken);
    assert!(!store.free_list().unwrap().line.contains("4 Wed"));
}

/// Lists `store` until slot 2's reservation (under way, its commit stuck)
/// has claimed it: every listing must answer at once, and once claimed
/// the slot is not offered. The claim comes before the reservation is
/// queued; it is waited for with a bound, not for a fixed time.
fn listed_while_slot_2_is_claimed(store: &dyn Store) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let started = Instant::now();
        let list = store.free_list().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a listing waited {:?} behind the stuck commit",
            started.elapsed()
        );
        if list.listed == 5 || Instant::now() > deadline {
            break list;
        }
        std::thread::yield_now();
    };
    assert_eq!(listed.listed, 5, "{}", listed.line);
    assert!(!listed.line.contains("2 Mon"), "{}", listed.line);
}

/// Issue 17.2: a listing never waits for a commit in progress, and a slot
/// whose reservation waits for its commit is not offered meanwhile. The
/// commit is held up by another process's write lock on the file.
#[test]
fn sqlite_lists_during_a_stuck_commit_without_the_claimed_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = sqlite_at(&path);
    assert_eq!(store.free_list().unwrap().listed, 6);
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let booking = std::thread::spawn({
        let store = Arc::clone(&store);
        move || store.reserve(2, "patient1")
    });
    listed_while_slot_2_is_claimed(&*store);
    assert!(!booking.is_finished(), "the commit went through the lock");
    other.execute_batch("COMMIT").unwrap();
    assert!(matches!(
        booking.join().unwrap(),
        Ok(Reservation::Booked { .. })
    ));
    let after = store.free_list().unwrap();
    assert_eq!(after.listed, 5);
    assert!(!after.line.contains("2 Mon"), "{}", after.line);
}

#[test]
fn sqlite_two_handles_on_one_file_race_and_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let a = sqlite_at(&path);
    let b = sqlite_at(&path);
    // Both cache their list first, so seeing the other's booking below is
    // the cross-process invalidation at work.
    assert_eq!(a.free_list().unwrap().listed, 6);
    assert_eq!(b.free_list().unwrap().listed, 6);
    assert_one_winner(&[Arc::clone(&a), Arc::clone(&b)], 5);
    for store in [&a, &b] {
        let list = store.free_list().unwrap();
        assert_eq!(list.listed, 5, "{}", list.line);
        assert!(!list.line.contains("5 Sat"));
    }
    assert!(matches!(
        a.reserve(1, "patient1").unwrap(),
        Reservation::Booked { .. }
    ));
    assert!(!b.free_list().unwrap().line.contains("1 Tue"));
    assert_eq!(b.reserve(1, "patient2").unwrap(), Reservation::Taken);
    assert!(b.cancel(1, "patient1").unwrap());
    assert!(a.free_list().unwrap().line.starts_with("1 Tue"));
}

// postgres

#[test]
fn postgres_basics() {
    let Some(server) = postgres_support::server_url("postgres_basics") else {
        return;
    };
    let db = TestDb::create(&server, "basics");
    basics(&PostgresStore::open(&db.url, &slots(), DEFAULT_LIST_CAP).unwrap());
    let big = TestDb::create(&server, "big");
    let store = PostgresStore::open(&big.url, &many_slots(), DEFAULT_LIST_CAP).unwrap();
    lists_like_the_slot_book(&store, &many_slots());
    // A second center with other data files is refused by name.
    let mut other = many_slots();
    other[9].time = "11am".into();
    let err = PostgresStore::open(&big.url, &other, DEFAULT_LIST_CAP).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Mismatch);
    assert!(err.to_string().contains("slot 10 differs"), "{err}");
}

/// Issue 17.2 on PostgreSQL: a listing answers from memory while a commit
/// waits (here on a row lock another session holds), without the slot
/// that commit claims.
#[test]
fn postgres_lists_during_a_stuck_commit_without_the_claimed_slot() {
    let Some(server) = postgres_support::server_url(
        "postgres_lists_during_a_stuck_commit_without_the_claimed_slot",
    ) else {
        return;
    };
    let db = TestDb::create(&server, "stuck");
    let store: Arc<dyn Store> =
        Arc::new(PostgresStore::open(&db.url, &slots(), DEFAULT_LIST_CAP).unwrap());
    assert_eq!(store.free_list().unwrap().listed, 6);
    let mut other = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let mut lock = other.transaction().unwrap();
    lock.execute("SELECT 1 FROM slots WHERE idx = 2 FOR UPDATE", &[])
        .unwrap();
    let booking = std::thread::spawn({
        let store = Arc::clone(&store);
        move || store.reserve(2, "patient1")
    });
    listed_while_slot_2_is_claimed(&*store);
    assert!(
        !booking.is_finished(),
        "the commit went through the row lock"
    );
    lock.rollback().unwrap();
    assert!(matches!(
        booking.join().unwrap(),
        Ok(Reservation::Booked { .. })
    ));
    assert!(!store.free_list().unwrap().line.contains("2 Mon"));
}

#[test]
fn postgres_three_centers_race_and_one_wins() {
    let Some(server) = postgres_support::server_url("postgres_three_centers_race_and_one_wins")
    else {
        return;
    };
    for round in 0..5 {
        let db = TestDb::create(&server, "race");
        // Three centers starting together fill the table once.
        let centers: Vec<Arc<dyn Store>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3)
                .map(|_| scope.spawn(|| PostgresStore::open(&db.url, &slots(), DEFAULT_LIST_CAP)))
                .collect();
            handles
                .into_iter()
                .map(|h| Arc::new(h.join().unwrap().unwrap()) as Arc<dyn Store>)
                .collect()
        });
        assert_one_winner(&centers, 1 + round);
        for center in &centers {
            assert_eq!(center.free_list().unwrap().listed, 5, "round {round}");
        }
        drop(centers);
    }
}

/// A port with nothing listening on it (just released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn postgres_unreachable_is_a_prompt_error_naming_the_masked_url() {
    let port = closed_port();
    let url = format!("postgres://medsim:hunter2@127.0.0.1:{port}/medsim");
    let started = Instant::now();
    let err = PostgresStore::open(&url, &slots(), DEFAULT_LIST_CAP).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Unreachable);
    let text = err.to_string();
    assert!(
        text.contains(&format!("postgres://medsim:***@127.0.0.1:{port}/medsim")),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("cannot connect"), "{text}");
}

#[test]
fn postgres_a_server_that_never_answers_does_not_hang_the_start() {
    // Accepted by the kernel's backlog, never answered.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("postgres://medsim:pw@127.0.0.1:{port}/medsim?connect_timeout=1");
    let started = Instant::now();
    let err = PostgresStore::open(&url, &slots(), DEFAULT_LIST_CAP).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Unreachable);
    assert!(err.to_string().contains("medsim:***@"), "{err}");
}

#[test]
fn postgres_a_bad_url_is_refused_before_connecting_and_masked() {
    let url = StoreUrl::parse("postgres://medsim:hunter2@127.0.0.1:notaport/medsim").unwrap();
    let err = medsim::store::open(&url, &slots(), DEFAULT_LIST_CAP)
        .err()
        .expect("a bad port is refused");
    assert_eq!(err.kind(), ErrorKind::BadUrl);
    let text = err.to_string();
    assert!(text.contains("medsim:***@127.0.0.1:notaport"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

// sqlite: stores that cannot work are refused at start-up, saying why

/// Makes `path` immutable (`chattr +i`: even root cannot write it) or,
/// when that is not possible, read-only by its mode; undone on drop.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn make(path: &std::path::Path) -> ReadOnly {
        let immutable = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if !immutable {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = if path.is_dir() { 0o555 } else { 0o444 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            // Root ignores modes: then this test cannot make its case.
            assert!(
                unsafe { libc::geteuid() } != 0,
                "cannot make {} read-only: chattr failed and we are root",
                path.display()
            );
        }
        ReadOnly(path.to_owned())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

fn sqlite_refused(path: &std::path::Path) -> String {
    SqliteStore::open(path, &slots(), DEFAULT_LIST_CAP)
        .err()
        .unwrap_or_else(|| panic!("{} was accepted", path.display()))
        .to_string()
}

#[test]
fn sqlite_open_errors_say_which() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere").join("slots.db");
    let err = sqlite_refused(&missing);
    assert!(
        err.contains(&format!(
            "the directory {} does not exist",
            dir.path().join("nowhere").display()
        )),
        "{err}"
    );
    let err = sqlite_refused(dir.path());
    assert!(
        err.contains(&format!(
            "{} is a directory, not a database file",
            dir.path().display()
        )),
        "{err}"
    );
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let _read_only = ReadOnly::make(&locked);
    let err = sqlite_refused(&locked.join("slots.db"));
    assert!(
        err.contains(&format!("the directory {} is read-only", locked.display())),
        "{err}"
    );
    assert!(!err.contains("unable to open database file"), "{err}");
}

#[test]
fn sqlite_a_read_only_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slots.db");
    drop(sqlite_at(&path));
    let _read_only = ReadOnly::make(&path);
    let err = sqlite_refused(&path);
    assert!(
        err.contains(&format!(
            "the file {} is read-only: every booking would fail",
            path.display()
        )),
        "{err}"
    );
    // The center refuses to start, saying so, with no ready line.
    let (code, stdout, stderr) = crate::support::output(crate::support::bin().args([
        "center",
        "--listen",
        "127.0.0.1:0",
        "--store",
        &format!("sqlite:{}", path.display()),
    ]));
    assert_ne!(code, 0);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("is read-only: every booking would fail"),
        "{stderr}"
    );
}

#[test]
fn sqlite_a_corrupt_index_page_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slots.db");
    let store = SqliteStore::open(&path, &many_slots(), DEFAULT_LIST_CAP).unwrap();
    store.reserve(3, "patient1").unwrap();
    drop(store);
    let (page_size, root): (i64, i64) = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        let page_size = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        let root = conn
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'slots_free'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (page_size, root)
    };
    // Garbage over the free-slot index's root page.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(((root - 1) * page_size) as u64))
            .unwrap();
        file.write_all(&vec![0xA5; page_size as usize]).unwrap();
    }
    let err = sqlite_refused(&path);
    assert!(
        err.contains("the file is corrupt (PRAGMA quick_check: "),
        "{err}"
    );
    assert!(
        err.contains("restore it from a backup or use a new file"),
        "{err}"
    );
}

/// The slot indexes a store lists, in the order listed.
fn listed_indexes(store: &dyn Store) -> Vec<u64> {
    let line = store.free_list().unwrap().line.clone();
    let words: Vec<&str> = line.split(' ').collect();
    words
        .chunks(3)
        .map(|triple| triple[0].parse().unwrap())
        .collect()
}

/// Waits (up to 10 s, several refreshes) until `store` lists `want`.
fn lists_soon(store: &dyn Store, want: &[u64], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = listed_indexes(store);
        if listed == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: lists {listed:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 17.1, more centers: centers on one database, with more slots free
/// than a listing shows, each list their own part of the table (so their
/// patients do not race for the same few slots), any slot still books at
/// any center, a center on another schema counts alone, and a center left
/// alone lists the lowest again.
#[test]
fn postgres_centers_on_one_database_list_their_own_parts_of_the_table() {
    let Some(server) = postgres_support::server_url(
        "postgres_centers_on_one_database_list_their_own_parts_of_the_table",
    ) else {
        return;
    };
    let db = TestDb::create(&server, "spread");
    let slots = many_slots();
    let first = PostgresStore::open(&db.url, &slots, 10).unwrap();
    assert_eq!(listed_indexes(&first), (1..=10).collect::<Vec<_>>());
    // The second takes the second place at its start: the second half.
    let second = PostgresStore::open(&db.url, &slots, 10).unwrap();
    assert_eq!(listed_indexes(&second), (151..=160).collect::<Vec<_>>());
    // A listing is an offer, not a limit: the first center books the
    // second's first slot, and the second learns it was taken.
    assert!(matches!(
        first.reserve(151, "patient1").unwrap(),
        Reservation::Booked { .. }
    ));
    assert_eq!(second.reserve(151, "patient2").unwrap(), Reservation::Taken);
    assert_eq!(listed_indexes(&second), (152..=161).collect::<Vec<_>>());
    // Centers on another schema of the same database are not counted.
    let mut admin = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    admin.batch_execute("CREATE SCHEMA other").unwrap();
    let elsewhere = PostgresStore::open(
        &format!("{}?options=-csearch_path%3Dother", db.url),
        &slots,
        10,
    )
    .unwrap();
    assert_eq!(listed_indexes(&elsewhere), (1..=10).collect::<Vec<_>>());
    // Alone again, the second lists the lowest free slots.
    drop(first);
    lists_soon(
        &second,
        &(1..=10).collect::<Vec<_>>(),
        "the center left alone",
    );
}
