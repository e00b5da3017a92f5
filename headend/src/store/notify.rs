//! Wake-ups between replicas: PostgreSQL `LISTEN`/`NOTIFY` (issue 35).
//!
//! A replica that changes what another replica's agent session must
//! carry (a command, a cancel, a load) or the revocation list says so on
//! a [`Channel`]; every replica listens and wakes what the note names.
//! A note is a hint, never the data: the listener reads the tables again,
//! so a lost note costs latency (the safety net's period), never a
//! command. SQLite is one process's database: there, [`Db::notify`] does
//! nothing and [`Db::listen`] has nothing to listen to.
//!
//! PostgreSQL delivers a note to every listening session, at the commit
//! of the transaction that sent it, in order per sender; notes sent while
//! a listener was disconnected are lost ([`Heard::Lost`] says so, and the
//! listener then wakes everything).

use crate::Error;
use crate::store::{Backend, Db};

/// The channels the replicas talk on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Sites with something to dispatch (payload: `services::dispatch`).
    Dispatch,
    /// The revocation list changed (no payload).
    Revocations,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Dispatch, Channel::Revocations];

    /// The PostgreSQL channel name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Dispatch => "tankwatch_dispatch",
            Channel::Revocations => "tankwatch_revocations",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The longest payload PostgreSQL takes (8,000 bytes, less a margin).
pub const MAX_PAYLOAD: usize = 7_900;

/// What a listener heard.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    Note {
        channel: Channel,
        payload: String,
    },
    /// The connection was lost and made again: notes sent meanwhile are
    /// gone.
    Lost,
}

/// A connection listening on every [`Channel`] (PostgreSQL only).
pub struct Listener {
    inner: sqlx::postgres::PgListener,
}

impl Db {
    /// Sends a note on `channel` (delivered to every listener, this
    /// replica's too). Nothing on SQLite.
    pub async fn notify(&self, channel: Channel, payload: &str) -> Result<(), Error> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::Db(format!(
                "a note on {} of {} bytes: at most {MAX_PAYLOAD}",
                channel.as_str(),
                payload.len()
            )));
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel.as_str())
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A connection of its own listening on every channel; `None` on
    /// SQLite.
    pub async fn listen(&self) -> Result<Option<Listener>, Error> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut inner = sqlx::postgres::PgListener::connect(&self.url)
            .await
            .map_err(|e| Error::Db(format!("listening for other replicas' notes: {e}")))?;
        inner
            .listen_all(Channel::ALL.iter().map(|c| c.as_str()))
            .await
            .map_err(|e| Error::Db(format!("LISTEN: {e}")))?;
        Ok(Some(Listener { inner }))
    }
}

impl Listener {
    /// The next note, or [`Heard::Lost`] after a reconnect. An error means
    /// the connection could not be made again: drop this listener, wait,
    /// and [`Db::listen`] anew.
    pub async fn next(&mut self) -> Result<Heard, Error> {
        loop {
            match self.inner.try_recv().await {
                Ok(Some(n)) => match Channel::parse(n.channel()) {
                    Some(channel) => {
                        return Ok(Heard::Note {
                            channel,
                            payload: n.payload().to_string(),
                        });
                    }
                    None => continue, // not ours (never listened to)
                },
                Ok(None) => return Ok(Heard::Lost),
                Err(e) => return Err(Error::Db(format!("listening: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_parse_back_and_unknown_names_do_not() {
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert_eq!(Channel::parse("tankwatch_other"), None);
        assert_eq!(Channel::parse(""), None);
    }
}
