//! A connection to the server made on demand, again after it is lost,
//! and never waiting past its time limit for a server that does not
//! answer.

use std::time::Duration;

use postgres::{Client, Config, NoTls};

use super::CONNECT_TIMEOUT;
use super::writer::connection_lost;
use crate::store::{ErrorKind, StoreError};

/// A connection made on demand and again after it is lost.
pub(super) struct Link {
    config: Config,
    pub(super) client: Option<Client>,
    pub(super) label: String,
}

impl Link {
    pub(super) fn new(config: &Config, label: &str) -> Link {
        Link {
            config: config.clone(),
            client: None,
            label: label.to_owned(),
        }
    }

    pub(super) fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let attempt = *self
                .config
                .get_connect_timeout()
                .unwrap_or(&CONNECT_TIMEOUT);
            let client =
                connect_bounded(&self.config, attempt + CONNECT_TIMEOUT).map_err(|what| {
                    StoreError::new(self.label.clone(), ErrorKind::Unreachable, what)
                })?;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| {
            StoreError::new(self.label.clone(), ErrorKind::Unreachable, "no connection")
        })
    }

    /// Runs `op`, once more on a new connection if the first one had been
    /// lost (the server restarted since): every `op` here is a read or
    /// safe to run twice.
    pub(super) fn run<T>(
        &mut self,
        what: &str,
        mut op: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        for tries in 1.. {
            let client = self.client()?;
            match op(client) {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let lost = connection_lost(&e);
                    if lost {
                        self.client = None;
                    }
                    if !lost || tries >= 2 {
                        return Err(StoreError::caused(
                            self.label.clone(),
                            ErrorKind::Query,
                            what,
                            &e,
                        ));
                    }
                }
            }
        }
        unreachable!("the loop returns")
    }
}

/// Connects on a helper thread and gives up after `limit`: the driver
/// bounds the socket connect, but not a server that accepts and then never
/// answers the start-up messages. The helper is left to finish on its own.
pub(super) fn connect_bounded(config: &Config, limit: Duration) -> Result<Client, String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let config = config.clone();
    std::thread::Builder::new()
        .name("postgres-connect".into())
        .spawn(move || {
            // The receiver may have given up; nothing to tell then.
            let _ = tx.send(config.connect(NoTls));
        })
        .map_err(|e| format!("cannot start connecting: {e}"))?;
    match rx.recv_timeout(limit) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!("cannot connect: {}", crate::store::chain(&e))),
        Err(_) => Err(format!(
            "cannot connect: no answer from the server within {} s",
            limit.as_secs()
        )),
    }
}
