//! Databases for tests: a fresh PostgreSQL database on the local server
//! (the one CI starts; `PG_ADMIN_URL` overrides it), dropped afterwards.

use sqlx::Connection;

fn admin_url() -> String {
    std::env::var("PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Creates an empty database; returns (its URL, its name).
pub async fn fresh_postgres() -> (String, String) {
    let admin = admin_url();
    let name = format!("tw_svc_{}_{}", std::process::id(), fastrand::u32(..));
    let mut c = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (scripts/services.sh starts it)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await
        .expect("CREATE DATABASE");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    (format!("{base}/{name}"), name)
}

/// Drops a database [`fresh_postgres`] made.
pub async fn drop_postgres(name: &str) {
    if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
    }
}

/// Writes `value` as is into `table.column` of the row whose `key_col`
/// is `key`: how a test corrupts a stored value under the stores (SQL
/// stays under `store/`).
pub async fn corrupt(
    db: &super::Db,
    table: &str,
    column: &str,
    key_col: &str,
    key: &str,
    value: &str,
) {
    let sql = format!("UPDATE {table} SET {column} = $1 WHERE {key_col} = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .bind(key)
        .execute(db.pool())
        .await
        .expect("the corrupting update");
}
