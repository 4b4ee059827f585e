//! How centers sharing one database spread their listings over the table.
//!
//! Each center holds a place: a session advisory lock keyed by its schema,
//! on its refresher's connection, so the place goes when the center (or
//! that connection) does, and is taken again after a reconnect. When more
//! slots are free than a listing shows, the center with the r-th lowest
//! place of n lists from the slot r/n of the way through the table; a
//! center alone lists the lowest free slots, as every store does.
//!
//! Why: centers that all list the lowest free slots offer their patients
//! the same few slots, and each learns what the others booked only at its
//! next commit. With four centers a third of the sessions lost a race a
//! listing had already decided, and each such race also held the winner's
//! batch on a row lock until the other center's commit (docs/PERFORMANCE.md).
//! Any free slot can still be booked at any center: only which ones a
//! capped listing shows differs. A part that fills up lists on into the
//! next (the last wraps to the lowest), so late in a table centers share
//! slots again, as they all did before.
//!
//! A place goes when the server sees its connection close. A center whose
//! host dies keeps it until the server's TCP keepalive gives up on the
//! connection; meanwhile the others count one center too many, and a part
//! goes unlisted at first (its slots are still listed once the part
//! before it fills). Bookings are not affected.

use postgres::Client;

/// Places a center may take in one schema; past them a center lists as
/// if alone.
const MAX_PLACES: i32 = 1024;

/// The first key of every place: the schema's, so centers on different
/// schemas of one database do not count each other.
const SCHEMA_KEY: &str = "hashtext(coalesce(current_schema(), ''))";

/// A center's share of the table: `rank` of `of` centers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Share {
    pub(super) rank: usize,
    pub(super) of: usize,
}

impl Share {
    /// A center alone.
    pub(super) const ALONE: Share = Share { rank: 0, of: 1 };
}

/// This connection's share among the centers on its schema, taking a
/// place first if it holds none.
pub(super) fn share(client: &mut Client) -> Result<Share, postgres::Error> {
    let mut held = places(client)?;
    if !held.iter().any(|&(_, mine)| mine) {
        let take = format!("SELECT pg_try_advisory_lock({SCHEMA_KEY}, $1)");
        for place in 0..MAX_PLACES {
            if held.iter().any(|&(p, _)| p == i64::from(place)) {
                continue;
            }
            let taken: bool = client.query_one(&take, &[&place])?.try_get(0)?;
            if taken {
                break;
            }
        }
        held = places(client)?;
    }
    Ok(match held.iter().position(|&(_, mine)| mine) {
        Some(rank) => Share {
            rank,
            of: held.len(),
        },
        None => Share::ALONE,
    })
}

/// The places held on this schema, lowest first, and whether each is this
/// connection's.
fn places(client: &mut Client) -> Result<Vec<(i64, bool)>, postgres::Error> {
    // A lock of a prepared transaction has no pid: not this connection's.
    let rows = client.query(
        &format!(
            "SELECT objid::int8, coalesce(pid = pg_backend_pid(), false) FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND objsubid = 2 \
             AND classid = ({SCHEMA_KEY})::oid \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY objid"
        ),
        &[],
    )?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}
