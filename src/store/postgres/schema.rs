//! The PostgreSQL store's schema: the table, the reservation function,
//! making and filling them under an advisory lock, and reading slots and
//! holders back.

use postgres::Client;

use crate::data::Slot;
use crate::store::{ErrorKind, StoreError, db_index, first_difference, mismatch};

/// The key of the advisory lock that serialises schema set-up.
const SETUP_LOCK: i64 = 0x6d65_6473_696d; // "medsim"

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS slots (
    idx BIGINT PRIMARY KEY,
    day TEXT NOT NULL,
    time TEXT NOT NULL,
    doctor TEXT NOT NULL,
    port INTEGER NOT NULL,
    holder TEXT NULL,
    booked_at TIMESTAMPTZ NULL
);
ALTER TABLE slots ADD COLUMN IF NOT EXISTS attempt BIGINT NULL;
CREATE INDEX IF NOT EXISTS slots_free ON slots (idx) WHERE holder IS NULL;
";

/// One batch of reservations as one statement: in index order (so
/// batches of several centers lock rows in one order), each an atomic
/// check-and-set that also recognises its own earlier write by its
/// attempt token. Outcome 0: booked, 1: taken, 2: no such slot; `k` is the
/// reservation's place in the arrays, from 1. Then, as rows with `k` 0,
/// `free_limit` free slots after the batch, the lowest from `free_from`
/// on and then from the lowest (the center's listing, as [`FREE_WINDOW`]
/// reads it): the center's copy in memory learns what other centers did
/// at every commit, for free.
const RESERVE_FUNCTION: &str = "
CREATE OR REPLACE FUNCTION medsim_reserve(want_idx bigint[], want_holder text[], want_attempt bigint[], free_limit integer, free_from bigint)
RETURNS TABLE (k integer, outcome integer, slot_doctor text, slot_port integer, free_idx bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    i integer;
    listed integer;
BEGIN
    free_idx := NULL;
    FOR i IN SELECT w.o::integer FROM unnest(want_idx) WITH ORDINALITY AS w(x, o) ORDER BY w.x, w.o LOOP
        k := i;
        UPDATE slots SET holder = want_holder[i], booked_at = now(), attempt = want_attempt[i]
            WHERE idx = want_idx[i] AND (holder IS NULL OR attempt = want_attempt[i])
            RETURNING doctor, port INTO slot_doctor, slot_port;
        IF FOUND THEN
            outcome := 0;
        ELSE
            slot_doctor := NULL;
            slot_port := NULL;
            outcome := CASE WHEN EXISTS (SELECT 1 FROM slots WHERE idx = want_idx[i]) THEN 1 ELSE 2 END;
        END IF;
        RETURN NEXT;
    END LOOP;
    RETURN QUERY SELECT 0, 0, NULL::text, NULL::integer, s.idx
        FROM slots s WHERE s.holder IS NULL AND s.idx >= free_from ORDER BY s.idx LIMIT free_limit;
    GET DIAGNOSTICS listed = ROW_COUNT;
    IF listed < free_limit THEN
        RETURN QUERY SELECT 0, 0, NULL::text, NULL::integer, s.idx
            FROM slots s WHERE s.holder IS NULL AND s.idx < free_from ORDER BY s.idx LIMIT free_limit - listed;
    END IF;
END
$fn$;
";

/// The free slots a center lists, as a read of the database takes them:
/// the lowest `$2` from slot `$1` on, and the lowest `$2` below it (up to
/// twice `$2` in all, in no promised order; [`Mirror::sync`] keeps the
/// `$2` a listing from `$1` would show). Each half is a walk of the
/// partial index on free slots.
///
/// [`Mirror::sync`]: crate::store::mirror::Mirror::sync
pub(super) const FREE_WINDOW: &str = "\
    (SELECT idx FROM slots WHERE holder IS NULL AND idx >= $1 ORDER BY idx LIMIT $2) \
    UNION ALL \
    (SELECT idx FROM slots WHERE holder IS NULL AND idx < $1 ORDER BY idx LIMIT $2)";

/// How many slots one `INSERT` carries when filling the table.
const FILL_BATCH: usize = 10_000;

pub(super) fn set_up(client: &mut Client, slots: &[Slot], label: &str) -> Result<(), StoreError> {
    let fail = |what: &str, e: postgres::Error| {
        StoreError::caused(label.to_owned(), ErrorKind::Query, what, &e)
    };
    let mut tx = client
        .transaction()
        .map_err(|e| fail("cannot begin the set-up", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK])
        .map_err(|e| fail("cannot lock the set-up", e))?;
    tx.batch_execute(SCHEMA)
        .map_err(|e| fail("cannot make the schema", e))?;
    tx.batch_execute(RESERVE_FUNCTION)
        .map_err(|e| fail("cannot make the reservation function", e))?;
    let mut inserted = 0;
    for batch in slots.chunks(FILL_BATCH) {
        let mut indexes = Vec::with_capacity(batch.len());
        for slot in batch {
            indexes.push(db_index(slot.index).ok_or_else(|| {
                StoreError::new(
                    label.to_owned(),
                    ErrorKind::Query,
                    format!("slot index {} is too large for the database", slot.index),
                )
            })?);
        }
        let days: Vec<&str> = batch.iter().map(|s| s.day.as_str()).collect();
        let times: Vec<&str> = batch.iter().map(|s| s.time.as_str()).collect();
        let doctors: Vec<&str> = batch.iter().map(|s| s.doctor.as_str()).collect();
        let ports: Vec<i32> = batch.iter().map(|s| i32::from(s.port)).collect();
        inserted += tx
            .execute(
                "INSERT INTO slots (idx, day, time, doctor, port) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[]) \
             ON CONFLICT (idx) DO NOTHING",
                &[&indexes, &days, &times, &doctors, &ports],
            )
            .map_err(|e| fail("cannot fill the slots", e))?;
    }
    if inserted > 0 {
        // Without statistics the planner guesses a handful of free rows
        // and sorts them all for the free list (4 ms at 20 000 slots,
        // against 0.2 ms walking the partial index).
        tx.batch_execute("ANALYZE slots")
            .map_err(|e| fail("cannot analyze the slots", e))?;
    }
    let rows = tx
        .query(
            "SELECT idx, day, time, doctor, port FROM slots ORDER BY idx",
            &[],
        )
        .map_err(|e| fail("cannot read the slots", e))?;
    let mut stored = Vec::with_capacity(rows.len());
    for row in &rows {
        stored.push(slot_of(row).map_err(|e| fail("cannot read the slots", e))?);
    }
    if let Some(difference) = first_difference(&stored, slots) {
        return Err(mismatch(label.to_owned(), difference));
    }
    tx.commit().map_err(|e| fail("cannot commit the set-up", e))
}

fn slot_of(row: &postgres::Row) -> Result<Slot, postgres::Error> {
    let index: i64 = row.try_get(0)?;
    let port: i32 = row.try_get(4)?;
    Ok(Slot {
        // Out-of-range values cannot match a data file's slot, so they
        // show up as a difference rather than a panic.
        index: u64::try_from(index).unwrap_or(u64::MAX),
        day: row.try_get(1)?,
        time: row.try_get(2)?,
        doctor: row.try_get(3)?,
        port: u16::try_from(port).unwrap_or(0),
    })
}

/// Every held slot and its holder, in index order.
pub(super) fn read_held(client: &mut Client) -> Result<Vec<(u64, String)>, postgres::Error> {
    let rows = client.query(
        "SELECT idx, holder FROM slots WHERE holder IS NOT NULL ORDER BY idx",
        &[],
    )?;
    let mut held = Vec::with_capacity(rows.len());
    for row in &rows {
        let index: i64 = row.try_get(0)?;
        let holder: String = row.try_get(1)?;
        held.push((u64::try_from(index).unwrap_or(u64::MAX), holder));
    }
    Ok(held)
}

/// The first column of `rows`, slot indexes.
pub(super) fn indexes(rows: &[postgres::Row]) -> Result<Vec<u64>, postgres::Error> {
    rows.iter()
        .map(|row| {
            row.try_get::<_, i64>(0)
                .map(|i| u64::try_from(i).unwrap_or(u64::MAX))
        })
        .collect()
}
