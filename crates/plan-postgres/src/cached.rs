//! Statements run through their connection's cache of prepared statements: the hot
//! statements of a run (journal writes, step tasks) are parsed once per connection, and
//! each run is then one round trip instead of two (prepare, then execute).

use deadpool_postgres::Object;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// Runs `sql` with `params`, prepared once per connection, and returns its rows.
pub(crate) async fn query(
    client: &Object,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await
}

/// Runs `sql` with `params`, prepared once per connection, and returns its one row.
pub(crate) async fn query_one(
    client: &Object,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query_one(&statement, params).await
}
