//! SQLite side of [`super::super::console`]: spend series, the filtered
//! request log and the audit log.

use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Sqlite};

use super::{LEDGER_COLUMNS, backend, from_ms, get, ledger_from_row, ms};
use crate::store::codec::{json_text, status_from, to_u64};
use crate::store::console::{
    AuditEntry, AuditQuery, AuditRow, RequestLogQuery, SeriesPoint, SeriesQuery, StatusFilter,
    page_limit,
};
use crate::store::{LedgerRow, StoreError};
use crate::types::{NanoUsd, TeamId};

pub(super) async fn insert_audit(pool: &SqlitePool, e: &AuditEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (ts, actor, action, target, source, status, change) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(ms(e.ts))
    .bind(&e.actor)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.source)
    .bind(i64::from(e.status))
    .bind(json_text(&e.change, "change")?)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(())
}

pub(super) async fn audit(pool: &SqlitePool, q: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
        "SELECT id, ts, actor, action, target, source, status, change FROM audit_log WHERE 1 = 1",
    );
    if let Some(v) = &q.actor {
        qb.push(" AND actor = ").push_bind(v.clone());
    }
    if let Some(v) = &q.action {
        qb.push(" AND action = ").push_bind(v.clone());
    }
    if let Some(v) = &q.target {
        qb.push(" AND target = ").push_bind(v.clone());
    }
    if let Some(v) = q.from {
        qb.push(" AND ts >= ").push_bind(ms(v));
    }
    if let Some(v) = q.to {
        qb.push(" AND ts < ").push_bind(ms(v));
    }
    if let Some(before) = q.before {
        qb.push(" AND id < ")
            .push_bind(i64::try_from(before).unwrap_or(i64::MAX));
    }
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(page_limit(q.limit));
    let rows = qb.build().fetch_all(pool).await.map_err(backend)?;
    rows.iter()
        .map(|row| {
            let change: String = get(row, "change")?;
            Ok(AuditRow {
                id: to_u64(get(row, "id")?, "id")?,
                entry: AuditEntry {
                    ts: from_ms(get(row, "ts")?, "ts")?,
                    actor: get(row, "actor")?,
                    action: get(row, "action")?,
                    target: get(row, "target")?,
                    source: get(row, "source")?,
                    status: status_from(get(row, "status")?)?,
                    change: serde_json::from_str(&change)
                        .map_err(|e| StoreError::Corrupt(format!("audit `change`: {e}")))?,
                },
            })
        })
        .collect()
}

pub(super) async fn spend_series(
    pool: &SqlitePool,
    q: &SeriesQuery,
) -> Result<Vec<SeriesPoint>, StoreError> {
    let width = q.bucket.seconds() * 1000;
    // Walks `ledger_ts`; grouping by the bucket number keeps the
    // arithmetic to one division per row.
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT (ts / {width}) * {width} AS start, team, COUNT(*) AS requests, \
         COALESCE(SUM(cost), 0) AS cost FROM ledger WHERE ts >= ? AND ts < ? \
         GROUP BY ts / {width}, team ORDER BY start, team"
    )))
    .bind(ms(q.from))
    .bind(ms(q.to))
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    rows.iter()
        .map(|row| {
            Ok(SeriesPoint {
                start: from_ms(get(row, "start")?, "start")?,
                team: TeamId(get(row, "team")?),
                requests: to_u64(get(row, "requests")?, "requests")?,
                cost: NanoUsd(to_u64(get(row, "cost")?, "cost")?),
            })
        })
        .collect()
}

pub(super) async fn request_log(
    pool: &SqlitePool,
    q: &RequestLogQuery,
) -> Result<Vec<LedgerRow>, StoreError> {
    let mut qb: QueryBuilder<Sqlite> =
        QueryBuilder::new(format!("SELECT {LEDGER_COLUMNS} FROM ledger WHERE 1 = 1"));
    if let Some(team) = &q.team {
        qb.push(" AND team = ").push_bind(team.as_str().to_owned());
    }
    if let Some(key) = &q.key {
        qb.push(" AND key_id = ").push_bind(key.as_str().to_owned());
    }
    if let Some(model) = &q.model {
        qb.push(" AND model = ").push_bind(model.clone());
    }
    match q.status {
        None => {}
        Some(StatusFilter::Exact(s)) => {
            qb.push(" AND status = ").push_bind(i64::from(s));
        }
        Some(StatusFilter::Ok) => {
            qb.push(" AND status < 400");
        }
        Some(StatusFilter::Error) => {
            qb.push(" AND status >= 400");
        }
    }
    qb.push(" ORDER BY ts DESC, seq DESC LIMIT ")
        .push_bind(page_limit(q.limit))
        .push(" OFFSET ")
        .push_bind(i64::from(q.offset));
    let rows = qb.build().fetch_all(pool).await.map_err(backend)?;
    rows.iter().map(ledger_from_row).collect()
}
