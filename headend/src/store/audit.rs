//! The audit trail in SQL: append (chained), read with filters, verify.
//! There is no update or delete here, and none in the API.

use sqlx::AnyConnection;

use crate::Error;
use crate::domain::audit::{AuditEntry, Broken, Stored, Verifier};
use crate::domain::{AuditOutcome, Role, UnixMs};
use crate::store::Db;

/// An entry to append (its seq comes from the chain's head).
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub at_ms: UnixMs,
    pub actor: String,
    /// The role held, or None (unauthenticated, a site's user, the headend).
    pub role: Option<Role>,
    pub action: String,
    pub target: String,
    pub outcome: AuditOutcome,
    pub status: u16,
    pub summary: String,
    pub client: String,
    pub request_id: String,
    /// The site it is about, if any.
    pub site: Option<String>,
}

/// Appends `e` in `c`'s transaction: takes the head (locked on
/// PostgreSQL; SQLite has one writer), chains, writes the entry and the
/// new head. Returns the entry's seq.
pub async fn append(c: &mut AnyConnection, e: &NewEntry) -> Result<i64, Error> {
    let lock = if c.backend_name() == "PostgreSQL" {
        " FOR UPDATE"
    } else {
        ""
    };
    let sql = format!("SELECT seq, hash FROM audit_head WHERE id = 1{lock}");
    let (head_seq, head_hash): (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *c)
        .await?;
    let entry = AuditEntry {
        seq: head_seq + 1,
        at_ms: e.at_ms,
        actor: e.actor.clone(),
        role: e.role.map_or("none", Role::as_str).to_string(),
        action: e.action.clone(),
        target: e.target.clone(),
        outcome: e.outcome,
        status: i64::from(e.status),
        summary: e.summary.clone(),
        client: e.client.clone(),
        request_id: e.request_id.clone(),
        site: e.site.clone(),
    };
    let hash = entry.hash(&head_hash);
    sqlx::query(
        "INSERT INTO audit_log (seq, at_ms, actor, role, action, target, outcome, status, summary, client, request_id, prev_hash, hash, site_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(entry.seq)
    .bind(entry.at_ms)
    .bind(&entry.actor)
    .bind(&entry.role)
    .bind(&entry.action)
    .bind(&entry.target)
    .bind(entry.outcome)
    .bind(entry.status)
    .bind(&entry.summary)
    .bind(&entry.client)
    .bind(&entry.request_id)
    .bind(&head_hash)
    .bind(&hash)
    .bind(&entry.site)
    .execute(&mut *c)
    .await?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(entry.seq)
        .bind(&hash)
        .execute(&mut *c)
        .await?;
    Ok(entry.seq)
}

/// Filters of a read; every one optional.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    /// Entries by this operator (whatever address they came from).
    pub user: Option<String>,
    /// Only entries about these sites (a scoped reader); `None`: all.
    pub sites: Option<Vec<String>>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub outcome: Option<AuditOutcome>,
    pub from_ms: Option<UnixMs>,
    pub to_ms: Option<UnixMs>,
    /// Entries before this seq (the page cursor); newest first.
    pub before_seq: Option<i64>,
    pub limit: i64,
}

#[derive(sqlx::FromRow)]
struct Row {
    #[sqlx(flatten)]
    entry: AuditEntry,
    prev_hash: String,
    hash: String,
}

const COLUMNS: &str = "seq, at_ms, actor, role, action, target, outcome, status, summary, client, request_id, prev_hash, hash, site_id";

/// The audit trail: `db.audit()`.
#[derive(Clone, Copy)]
pub struct Audit<'a>(&'a Db);

impl Db {
    pub fn audit(&self) -> Audit<'_> {
        Audit(self)
    }
}

impl Audit<'_> {
    /// Appends one entry in a transaction of its own.
    pub async fn append(&self, e: &NewEntry) -> Result<i64, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let seq = append(&mut tx, e).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Newest first, filtered.
    pub async fn list(&self, q: &AuditQuery) -> Result<Vec<Stored>, Error> {
        let mut sql = format!(
            "SELECT {COLUMNS} FROM audit_log
             WHERE ($1 = '' OR actor = $1) AND ($2 = '' OR action = $2) AND ($3 = '' OR target = $3)
               AND ($4 = '' OR outcome = $4) AND at_ms >= $5 AND at_ms <= $6 AND seq < $7
               AND ($9 = '' OR actor LIKE $9 ESCAPE '\\')"
        );
        sql.push_str(&super::site_in("site_id", q.sites.as_deref(), 10));
        sql.push_str(" ORDER BY seq DESC LIMIT $8");
        // `operator NAME from IP` (a user name has no spaces), escaped for LIKE
        let like = q.user.as_deref().map_or(String::new(), |u| {
            let e = u
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("operator {e} from %")
        });
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(q.actor.as_deref().unwrap_or(""))
            .bind(q.action.as_deref().unwrap_or(""))
            .bind(q.target.as_deref().unwrap_or(""))
            .bind(q.outcome.map_or("", AuditOutcome::as_str))
            .bind(q.from_ms.map_or(i64::MIN, UnixMs::ms))
            .bind(q.to_ms.map_or(i64::MAX, UnixMs::ms))
            .bind(q.before_seq.unwrap_or(i64::MAX))
            .bind(q.limit)
            .bind(like);
        for site in q.sites.as_deref().unwrap_or_default() {
            query = query.bind(site.clone());
        }
        let rows: Vec<Row> = query.fetch_all(self.0.pool()).await?;
        Ok(rows.into_iter().map(stored).collect())
    }

    /// Walks the whole chain oldest first, `page` entries at a time.
    /// Ok(entries checked) or the first bad entry. A row whose stored
    /// values do not even decode (an outcome changed to a word this
    /// headend does not know) is bad too.
    pub async fn verify(&self, page: i64) -> Result<Result<u64, Broken>, Error> {
        let mut v = Verifier::default();
        loop {
            let sql =
                format!("SELECT {COLUMNS} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2");
            let rows: Result<Vec<Row>, sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(v.next_seq())
                .bind(page)
                .fetch_all(self.0.pool())
                .await;
            let rows = match rows {
                Ok(r) => r,
                Err(sqlx::Error::ColumnDecode { source, .. }) => {
                    return Ok(Err(Broken {
                        seq: self.first_undecodable(v.next_seq()).await?,
                        why: format!("a stored value is not one an entry can hold ({source})"),
                    }));
                }
                Err(e) => return Err(e.into()),
            };
            let n = rows.len() as i64;
            let page_rows: Vec<Stored> = rows.into_iter().map(stored).collect();
            if let Err(b) = v.feed(&page_rows) {
                return Ok(Err(b));
            }
            if n < page {
                break;
            }
        }
        let (seq, hash): (i64, String) =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_one(self.0.pool())
                .await?;
        Ok(v.finish(seq, &hash).map(|()| v.checked))
    }

    async fn first_undecodable(&self, from: i64) -> Result<i64, Error> {
        let seqs: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, outcome FROM audit_log WHERE seq >= $1 ORDER BY seq")
                .bind(from)
                .fetch_all(self.0.pool())
                .await?;
        Ok(seqs
            .into_iter()
            .find(|(_, o)| o.parse::<AuditOutcome>().is_err())
            .map_or(from, |(s, _)| s))
    }
}

fn stored(r: Row) -> Stored {
    Stored {
        entry: r.entry,
        prev_hash: r.prev_hash,
        hash: r.hash,
    }
}
