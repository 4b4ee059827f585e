//! A committer's side of the PostgreSQL store: its connection, the batch
//! sent as one `medsim_reserve` call, outcomes read back (and learned by
//! the mirror), cancels and settles by attempt token.

use std::sync::Arc;

use postgres::Statement;

use super::link::Link;
use super::schema;
use crate::store::commit::{Backend, Failure, Settle, Ticket};
use crate::store::mirror::Mirror;
use crate::store::{ErrorKind, Reservation, StoreError, db_index};

/// A committer's side: its connection and prepared statement.
pub(super) struct Writer {
    pub(super) link: Link,
    pub(super) reserve: Option<Statement>,
    pub(super) mirror: Arc<Mirror>,
    pub(super) free_limit: i32,
}

impl Writer {
    fn error(&self, what: &str, e: &postgres::Error) -> StoreError {
        StoreError::caused(self.link.label.clone(), ErrorKind::Query, what, e)
    }

    fn lost(&mut self) {
        self.link.client = None;
        self.reserve = None;
    }
}

impl Backend for Writer {
    fn commit(&mut self, tickets: &[&Ticket]) -> Result<Vec<Reservation>, Failure> {
        let mut indexes = Vec::with_capacity(tickets.len());
        let mut holders = Vec::with_capacity(tickets.len());
        let mut attempts = Vec::with_capacity(tickets.len());
        // An index too large for the database names no slot.
        let mut outcomes = vec![Reservation::NoSuchSlot; tickets.len()];
        let mut places = Vec::with_capacity(tickets.len());
        for (place, ticket) in tickets.iter().enumerate() {
            if let Some(at) = db_index(ticket.index) {
                indexes.push(at);
                holders.push(&*ticket.holder);
                attempts.push(ticket.attempt);
                places.push(place);
            }
        }
        if indexes.is_empty() {
            return Ok(outcomes);
        }
        // Not reached: nothing was sent.
        let client = self.link.client().map_err(Failure::NotRecorded)?;
        if self.reserve.is_none() {
            let stmt = client.prepare(
                "SELECT k, outcome, slot_doctor, slot_port, free_idx \
                 FROM medsim_reserve($1, $2, $3, $4, $5)",
            );
            match stmt {
                Ok(stmt) => self.reserve = Some(stmt),
                Err(e) => {
                    let error = self.error("cannot prepare the reservation", &e);
                    if connection_lost(&e) {
                        self.lost();
                    }
                    return Err(Failure::NotRecorded(error));
                }
            }
        }
        let (Some(stmt), Some(client)) = (&self.reserve, self.link.client.as_mut()) else {
            return Err(Failure::NotRecorded(StoreError::new(
                self.link.label.clone(),
                ErrorKind::Unreachable,
                "no connection",
            )));
        };
        let since = self.mirror.generation();
        // The commit reads the free slots back from the first this center
        // lists, not from where its part starts: the stretch between is
        // booked (mostly by this center), and walking its dead index
        // entries on every commit cost more the more it booked. A slot
        // freed there by another center is learned by the refresher, which
        // reads the whole part.
        let from = self.mirror.book.listing_start();
        let from_at = db_index(from).unwrap_or(i64::MAX);
        let rows = match client.query(
            stmt,
            &[&indexes, &holders, &attempts, &self.free_limit, &from_at],
        ) {
            Ok(rows) => rows,
            Err(e) => {
                let error = self.error("cannot commit the reservations", &e);
                // The server answered with the statement's own error: it
                // was rolled back. Anything else leaves the outcome open.
                return Err(if e.code().is_some() && !connection_lost(&e) {
                    Failure::NotRecorded(error)
                } else {
                    self.lost();
                    Failure::Unknown(error)
                });
            }
        };
        let mut free = Vec::new();
        for row in &rows {
            if let Ok(0) = row.try_get::<_, i32>(0) {
                if let Ok(Some(index)) = row.try_get::<_, Option<i64>>(4) {
                    free.push(u64::try_from(index).unwrap_or(u64::MAX));
                }
                continue;
            }
            let decoded = (|| -> Result<(usize, Reservation), postgres::Error> {
                let k: i32 = row.try_get(0)?;
                let outcome: i32 = row.try_get(1)?;
                let place = usize::try_from(k - 1).unwrap_or(usize::MAX);
                let reservation = match outcome {
                    0 => {
                        let doctor: String = row.try_get(2)?;
                        let port: i32 = row.try_get(3)?;
                        match u16::try_from(port) {
                            Ok(port) => Reservation::Booked {
                                doctor: doctor.into(),
                                port,
                            },
                            // A slot whose port is not a port cannot be
                            // booked: it is left to be taken by no one.
                            Err(_) => Reservation::NoSuchSlot,
                        }
                    }
                    1 => Reservation::Taken,
                    _ => Reservation::NoSuchSlot,
                };
                Ok((place, reservation))
            })();
            match decoded {
                Ok((place, reservation)) => {
                    if let Some(&at) = places.get(place) {
                        outcomes[at] = reservation;
                    }
                }
                Err(e) => {
                    return Err(Failure::Unknown(
                        self.error("cannot read the reservations' outcomes", &e),
                    ));
                }
            }
        }
        self.mirror
            .sync(&free, from, i64::from(self.free_limit), since);
        Ok(outcomes)
    }

    fn committed(&mut self, tickets: &[&Ticket], outcomes: &[Reservation]) {
        self.mirror.learn_outcomes(tickets, outcomes);
    }

    fn cancel(&mut self, index: u64, holder: &str) -> Result<bool, StoreError> {
        let Some(at) = db_index(index) else {
            return Ok(false);
        };
        let changed = self
            .link
            .run(&format!("cannot cancel slot {index}"), |client| {
                client.execute(
                    "UPDATE slots SET holder = NULL, booked_at = NULL, attempt = NULL \
                 WHERE idx = $1 AND holder = $2",
                    &[&at, &holder],
                )
            })?;
        if changed > 0 {
            self.mirror.learn(index, None);
        }
        Ok(changed > 0)
    }

    fn settle(&mut self, settles: &[Settle]) -> Result<Vec<u64>, StoreError> {
        let attempts: Vec<i64> = settles.iter().map(|s| s.attempt).collect();
        let freed: Vec<u64> = self
            .link
            .run("cannot cancel unconfirmed bookings", |client| {
                let rows = client.query(
                    "UPDATE slots SET holder = NULL, booked_at = NULL, attempt = NULL \
                 WHERE attempt = ANY($1) RETURNING idx",
                    &[&attempts],
                )?;
                schema::indexes(&rows)
            })?;
        for &index in &freed {
            self.mirror.learn(index, None);
        }
        Ok(freed)
    }

    fn log(&self, line: &str) {
        eprintln!("{}: {line}", self.link.label);
    }
}

/// Whether `e` is the connection's end rather than the statement's
/// failure: closed, reset, or the server's FATAL for a backend terminated
/// or shut down.
pub(super) fn connection_lost(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    let io = std::error::Error::source(e).is_some_and(|cause| cause.is::<std::io::Error>());
    e.is_closed()
        || io
        || e.code().is_some_and(|code| {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        })
}
